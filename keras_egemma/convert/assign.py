import keras
import numpy as np

from keras_egemma.io.errors import CheckpointError
from keras_egemma.io.mapped_weights import ALIGNMENT
from keras_egemma.io.mapped_weights import adoptable
from keras_egemma.io.mapped_weights import aligned_empty


def assign_weight(variable, value, source):
    """Copies `value` into `variable`, refusing a shape that does not fit.

    The value is handed over as a contiguous, 64-byte aligned float32 array
    (a copy only where `value` is not one already: a transposed view, another
    dtype), so that a deferred variable adopts it as its buffer
    (`deferred_variables`) and no second copy of a large tensor is made.

    Args:
        variable: the model's `keras.Variable`.
        value: numpy array (any float dtype, bfloat16 included).
        source: how the error names the tensor, e.g. `"'norm.weight' in
            model.safetensors"`.
    """
    expected = tuple(variable.shape)
    if tuple(value.shape) != expected:
        raise CheckpointError(
            f"Tensor {source} has shape {tuple(value.shape)}, but the model's "
            f"variable {variable.path} needs {expected}. The checkpoint's weights "
            "do not match its config."
        )
    # JAX (and TensorFlow) copy an array not 64-byte aligned; PyTorch does not.
    aligned = value.ctypes.data % ALIGNMENT == 0 or keras.backend.backend() == "torch"
    if not (value.dtype == np.float32 and value.flags.c_contiguous and aligned):
        contiguous = aligned_empty(value.shape, np.float32)
        contiguous[...] = value
        value = contiguous
    variable.assign(adoptable(value))
