"""How a model is judged: each plan runs the step that trains a model and yields a ``StepRun``.

``plans.choice`` holds the plans in the order DESIGN.md's "How a model is judged" gives and picks
the first that applies; the diagnosis does not care which ran.  (This package's ``__init__``
imports nothing, so that the CLI can parse ``--input`` without loading the engine.)

| module | what it holds |
|---|---|
| ``choice`` | ``PLANS``, ``choose_plan``, ``judged_step`` |
| ``base`` | ``Plan``, ``StepRun``, ``GradientCall``, ``TapeVerdict`` |
| ``loss_plans`` | the plans that run gradcheck's own tape step on a ``LossFunction`` |
| ``train_step`` | the plans that run the model's own training step, intercepted |
| ``loss``, ``compiled``, ``targets`` | the loss functions, the compile settings, synthetic targets |
| ``recorded``, ``opgraph`` | the recorded tape step itself, and the op graph of a step |
| ``inputs``, ``synthetic``, ``search``, ``batches`` | input specs, values, the input search, batches |
| ``state`` | snapshot and restore of what a step may change |
"""

