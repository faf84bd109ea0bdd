"""Which plan judges a model: the plans in the order DESIGN.md's "How a model is judged" gives.

The first plan that ``applies`` runs.  A step of the user's own loop is run as it is; ``--loss``
wins for a model; then the model's own training step
(``train_step``, then ``compute_loss``); then its compiled loss; else the projection.  A
``compute_loss`` override that refuses every batch gradcheck can build is judged by the
projection, with a warning.
"""

from __future__ import annotations

from gradcheck.plans.base import NoTargetsFit, Plan, StepRun
from gradcheck.plans.loop import LoopPlan
from gradcheck.plans.loss_plans import CompiledLossPlan, CustomLossPlan, LossStepPlan, ProjectionPlan
from gradcheck.plans.train_step import OwnComputeLossPlan, OwnTrainStepPlan

#: Every plan, most specific first; the last always applies.
PLANS: tuple[type[Plan], ...] = (LoopPlan, CustomLossPlan, OwnTrainStepPlan, OwnComputeLossPlan,
                                 CompiledLossPlan, ProjectionPlan)


def choose_plan(model, options) -> Plan:
    """The first plan of ``PLANS`` that applies to ``model`` under ``options``."""
    return next(plan for plan in PLANS if plan.applies(model, options))()


def loss_plan(model, options) -> LossStepPlan:
    """The loss plan that would judge ``model`` had it no training step of its own (its
    ``LossFunction`` is what an independent tape check differentiates)."""
    return next(plan for plan in PLANS
                if issubclass(plan, LossStepPlan) and plan.applies(model, options))()


def judged_step(model, options) -> StepRun:
    """Run the plan that judges ``model``; a loss that no batch fits falls back to the projection."""
    try:
        return choose_plan(model, options).run(model, options)
    except NoTargetsFit as refused:
        return ProjectionPlan(fallback_reason=refused.reason).run(model, options)
