"""Building a model whose weights are about to be read from a file, without
first filling every variable with random values.

Keras initialises each variable when it is created: for the published model
that is 1.15 GiB of random numbers (two thirds of a 24 s load), all
overwritten by the file a moment later, and a second full-size buffer alive
while each value is replaced. Here the model is built with its variables'
initialisation deferred (Keras' `StatelessScope(initialize_variables=False)`),
and each variable gets its memory only when the file's value arrives:

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
from keras.src.backend.common import global_state

_PENDING = "uninitialized_variables"


def _allocate(variable):
    """Gives a deferred variable a buffer to assign into."""
    if keras.backend.backend() == "torch":
        import torch

        # Untouched pages cost nothing until the file's values are copied in.
        value = torch.empty(variable.shape, dtype=getattr(torch, variable.dtype))
    else:
        value = keras.ops.zeros(variable.shape, dtype=variable.dtype)
    variable._initialize(value)


def adopts_file_buffers():
    """True where a deferred variable takes the array read from the file as
    its buffer: JAX, unless a distribution is active (`_initialize` is where
    a JAX variable gets its layout over the devices)."""
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
    already = list(global_state.get_global_attribute(_PENDING, []) or [])
    pending = []
    with keras.StatelessScope(initialize_variables=False):
        yield pending
    created = global_state.get_global_attribute(_PENDING, []) or []
    known = {id(v) for v in already}
    pending.extend(v for v in created if id(v) not in known)
    # These are no longer Keras' to initialise: a later
    # `initialize_all_variables` would overwrite loaded weights.
    global_state.set_global_attribute(_PENDING, already)
    allocate = not adopts_file_buffers()
    for variable in pending:
        variable._initializer = None
        if allocate:
            _allocate(variable)


def unassigned(variables):
    """The paths of deferred variables that never received a value."""
    return [v.path for v in variables if v._value is None]
