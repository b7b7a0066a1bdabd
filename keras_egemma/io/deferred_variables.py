"""Building a model whose weights are about to be read from a file, without
first filling every variable with random values.

Keras initialises each variable when it is created: for the published model
that is the whole model's size in random numbers, all overwritten by the
file a moment later, and a second full-size buffer alive while each value is
replaced. Here the model is built with its variables' initialisation
deferred, and each variable gets its memory only when the file's value
arrives (`filling_deferred_variables`): the value read from the file becomes
the variable's buffer.

- Every backend adopts the array read without copying it (JAX and
  TensorFlow when it is 64-byte aligned: `mapped_weights`), so loading
  peaks at the size of the weights.
- JAX under a `keras.distribution` gets zeros first, as creating the buffer
  lays the variable out over the devices, and the values are copied in.
"""

import contextlib

import keras

from keras_egemma import _keras_compat


def _distributed():
    return keras.backend.backend() == "jax" and keras.distribution.distribution() is not None


def adopts_file_buffers():
    """True where a deferred variable takes the array read from the file as
    its buffer without copying it: JAX (unless a distribution is active) and
    PyTorch."""
    return keras.backend.backend() in ("jax", "torch") and not _distributed()


@contextlib.contextmanager
def deferred_variables():
    """Builds models in the block with uninitialised variables; yields a list
    that holds those variables once the block ends.

    The caller must then give every variable a value (`load_weights` inside
    `filling_deferred_variables`). Under a JAX distribution the variables
    get zeros as the block ends, since giving a JAX variable its first value
    is where it is laid out over the devices.

    Example:
    ```python
    with deferred_variables() as pending:
        model = EmbeddingGemma.from_config(config)
    with filling_deferred_variables():
        model.load_weights("model.weights.h5")
    ```
    """
    with _keras_compat.variables_created_uninitialized() as pending:
        yield pending
    if _distributed():
        for variable in pending:
            value = keras.ops.zeros(variable.shape, dtype=variable.dtype)
            _keras_compat.give_variable_value(variable, value)


def filling_deferred_variables():
    """Within the block, assigning to a deferred variable that has no value
    yet makes the value its buffer (on every backend)."""
    return _keras_compat.first_assign_gives_value()


def unassigned(variables):
    """The paths of deferred variables that never received a value."""
    return [v.path for v in variables if not _keras_compat.variable_has_value(v)]
