"""Weights that a JAX training step on the CPU updates in place.

Loading hands each tensor to its variable without a copy: the variable's
buffer is the array that was read, or the file's mapped pages
(`keras_egemma.io.mapped_weights`). XLA cannot write a step's result into
memory it did not allocate, so the first compiled step, whose state is
donated, allocates a second copy of every weight and holds both until the
step ends: on the published model, about 1 GB above every later step's peak.
Copying the weights into XLA's own memory first, one variable at a time,
keeps the first step at the peak of the others.
"""

import keras


def take_ownership(variables):
    """Gives each variable a buffer that XLA owns, on the JAX CPU backend.

    A no-op elsewhere: TensorFlow's and PyTorch's variables are updated in
    place, and accelerator buffers are always the runtime's own.

    Args:
        variables: a list of `keras.Variable`.

    Example:
    ```python
    take_ownership(model.weights)
    model.fit(...)
    ```
    """
    if keras.backend.backend() != "jax":
        return
    import jax

    if jax.default_backend() != "cpu":
        return
    for variable in variables:
        # One at a time: the old buffer goes when the variable lets it go.
        variable.assign(keras.ops.copy(variable.value))
