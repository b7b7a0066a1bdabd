import numpy as np

from keras_egemma.io.errors import CheckpointError


def assign_weight(variable, value, source):
    """Copies `value` into `variable`, refusing a shape that does not fit.

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
    variable.assign(np.asarray(value, dtype=np.float32))
