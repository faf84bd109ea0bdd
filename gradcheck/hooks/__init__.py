"""Every patch gradcheck makes to TensorFlow or Keras, each a context manager that restores it.

These are what break on a TensorFlow/Keras upgrade, so they live here and nowhere else
(``tests/test_architecture.py`` enforces it), and ``tests/test_hooks.py`` proves each is undone
on exit, even when the code inside raises.

| hook | patches | used while |
|---|---|---|
| ``loading.sequential_built_once`` | ``Sequential.add``, ``Sequential.from_config`` | loading |
| ``loading.cheap_fresh_weights`` | the TF backend's ``truncated_normal`` | rebuilding with fresh weights |
| ``loading.shapes_compared_not_assigned`` | ``Variable.assign``, ``H5IOStore.__getitem__`` | the stored-shape check |
| ``loading.recording_creation`` | ``Operation.__new__`` | loading a factory |
| ``memory.guarded_variables`` | ``Variable._initialize_with_initializer`` | loading and the step |
| ``memory.guarded_legacy_weights`` | ``tf_keras``'s ``Layer.add_weight`` | loading a Keras 2 model |
| ``ops.OpRecorder`` | an op callback, ``record_operation``, ``convert_to_tensor``, fast path | every recorded step |
| ``layers.LayerCalls`` | ``Layer.__call__`` | every recorded step |
| ``layers.BranchRecorder`` | ``tf.cond``, ``smart_cond``, ``EagerTensor.__bool__`` | every recorded step |
| ``layers.FlippedTruthTest`` | ``EagerTensor.__bool__`` | a probe of a Python ``if`` |
| ``interception.StepInterceptor`` | ``GradientTape.gradient``, optimizers' ``apply*``, ``minimize`` | a training step |
| ``variables.VariableWrites`` | ``BaseResourceVariable``'s write methods (values put back) | the steps |
| ``patching.replaced`` | any one attribute, restored exactly (deleted if it was inherited) | inside the hooks above |
| ``boundaries.VariableReads`` | ``variable_accessed``, ``GradientTape._push_tape``/``_pop_tape`` | every step |
| ``boundaries.ValuesLeaving`` | ``EagerTensor``'s value exits (``numpy``, ``__float__`` …), | every recorded step |
| | ``np.asarray``/``array``/``asanyarray``, ``predict*``, ``py_func_common`` | |
| ``calls.FirstCalls`` | ``Layer.__call__`` | loading a factory |
| ``eager.FunctionsRunEagerly`` | ``tf.config.run_functions_eagerly`` | a training step, a probe inside functions |
"""
