"""Every patch gradcheck makes to TensorFlow or Keras, each a context manager that restores it.

These are what break on a TensorFlow/Keras upgrade, so they live here and nowhere else, and a
test proves each is undone on exit, even when the code inside raises.

| hook | patches | used while |
|---|---|---|
| ``loading.sequential_built_once`` | ``Sequential.add``, ``Sequential.from_config`` | loading |
| ``loading.cheap_fresh_weights`` | the TF backend's ``truncated_normal`` | rebuilding with fresh weights |
| ``loading.shapes_compared_not_assigned`` | ``Variable.assign``, ``H5IOStore.__getitem__`` | the stored-shape check |
| ``loading.recording_creation`` | ``Operation.__new__`` | loading a factory |
| ``memory.guarded_variables`` | ``Variable._initialize_with_initializer`` | loading and the step |
"""
