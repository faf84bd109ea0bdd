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
| ``loop``, ``step_arguments`` | one step of the user's own training loop, and its arguments |
| ``intercepted`` | one intercepted, recorded run of someone else's step (both of the above) |
| ``variables``, ``legacy`` | the variables judged, named; where Keras 2 and ``tf.Module``s differ |
| ``loss``, ``compiled``, ``targets`` | the loss functions, the compile settings, synthetic targets |
| ``recorded``, ``opgraph`` | the recorded tape step itself, and the op graph of a step |
| ``inputs``, ``synthetic``, ``search``, ``batches`` | input specs, values, the input search, batches |
| ``state`` | snapshot and restore of what a step may change |
"""

