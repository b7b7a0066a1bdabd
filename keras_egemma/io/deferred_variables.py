"""Building a model whose weights are about to be read from a file, without
first filling every variable with random values.

Keras initialises each variable when it is created: for the published model
that is the whole model's size in random numbers, all overwritten by the
file a moment later, and a second full-size buffer alive while each value is replaced.
Here the model is built with its variables' initialisation deferred, and
each variable gets its memory only when the file's value arrives:

- JAX: the value read from the file becomes the variable's buffer (no copy
  on CPU when the array is 64-byte aligned: `mapped_weights`), so loading
  peaks at the size of the weights.
- TensorFlow and PyTorch assign into an existing buffer: the variables get
  zeros (PyTorch: uninitialised memory, which costs nothing until written)
  and the file's values are copied in, one variable at a time. So does JAX
  under a `keras.distribution`, where creating the buffer lays the variable
  out over the devices.
"""

import contextlib

import keras

from keras_egemma import _keras_compat


def _allocate(variable):
    """Gives a deferred variable a buffer to assign into."""
    if keras.backend.backend() == "torch":
        import torch

        # Untouched pages cost nothing until the file's values are copied in.
        value = torch.empty(variable.shape, dtype=getattr(torch, variable.dtype))
    else:
        value = keras.ops.zeros(variable.shape, dtype=variable.dtype)
    _keras_compat.give_variable_value(variable, value)


def adopts_file_buffers():
    """True where a deferred variable takes the array read from the file as
    its buffer: JAX, unless a distribution is active (giving a JAX variable
    its first value is where it gets its layout over the devices)."""
    return keras.backend.backend() == "jax" and keras.distribution.distribution() is None


@contextlib.contextmanager
def deferred_variables():
    """Builds models in the block with uninitialised variables; yields a list
    that holds those variables once the block ends.

    The caller must then give every variable a value (`load_weights`). On
    JAX the variables stay empty until assigned; on TF and torch (and JAX
    under a distribution) they are allocated as the block ends, since their
    `assign` writes into a buffer.

    Example:
    ```python
    with deferred_variables() as pending:
        model = EmbeddingGemma.from_config(config)
    model.load_weights("model.weights.h5")
    ```
    """
    with _keras_compat.variables_created_uninitialized() as pending:
        yield pending
    if not adopts_file_buffers():
        for variable in pending:
            _allocate(variable)


def unassigned(variables):
    """The paths of deferred variables that never received a value."""
    return [v.path for v in variables if not _keras_compat.variable_has_value(v)]
