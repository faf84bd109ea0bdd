"""Trainers from third-party Keras libraries, built tiny: each with its own train_step on a batch
no input signature declares.  ``LIBRARY_TRAINERS[name]`` builds a fresh, compiled model."""

from __future__ import annotations

import keras


def _bayesflow():
    import bayesflow

    return bayesflow


def _deep_set():
    return _bayesflow().networks.DeepSet(
        summary_dim=4, depth=1, mlp_widths_equivariant=(8,), mlp_widths_invariant_inner=(8,),
        mlp_widths_invariant_outer=(8,), mlp_widths_invariant_last=(8,))


def _approximator(inference_network, summary_network=None):
    bf = _bayesflow()
    approximator = bf.ContinuousApproximator(
        inference_network=inference_network, summary_network=summary_network,
        adapter=bf.Adapter())
    approximator.compile(optimizer=keras.optimizers.Adam(1e-3))
    return approximator


def coupling_flow_with_summary():
    """A coupling flow (zero-initialized output projectors) conditioned on a DeepSet summary."""
    flow = _bayesflow().networks.CouplingFlow(depth=1, subnet_kwargs={"widths": (8, 8)})
    return _approximator(flow, _deep_set())


def coupling_flow():
    return _approximator(_bayesflow().networks.CouplingFlow(depth=2, subnet_kwargs={"widths": (8,)}))


LIBRARY_TRAINERS = {
    "bayesflow_coupling_flow_with_summary": coupling_flow_with_summary,
    "bayesflow_coupling_flow": coupling_flow,
}
