"""The dtype a model is saved in: its variables' (float32 for a
`mixed_bfloat16` model), or one asked for."""

import contextlib

import keras

from keras_egemma import _keras_compat

SAVED_DTYPES = ("float32", "bfloat16")


def variable_dtype(model):
    """The dtype of the model's float variables: `"float32"` for float32 and
    `mixed_bfloat16` models, `"bfloat16"` for bfloat16 ones."""
    policy = model.backbone.dtype_policy
    # A quantized backbone loaded from a preset holds a policy map.
    return getattr(policy, "default_policy", policy).variable_dtype


def check_saved_dtype(model, dtype):
    """The dtype `save_to_preset(dtype=...)` writes; refuses what it cannot.

    Args:
        model: an `EmbeddingGemma`.
        dtype: `None` (the variables' dtype), `"float32"` or `"bfloat16"`.
    """
    if dtype is None:
        return variable_dtype(model)
    if dtype not in SAVED_DTYPES:
        raise ValueError(
            f"A preset is saved in one of {SAVED_DTYPES}, got dtype={dtype!r}. "
            "(A mixed_bfloat16 model keeps float32 variables and is saved in float32; "
            "load it with `from_preset(..., dtype='mixed_bfloat16')` to train it so.)"
        )
    if dtype != variable_dtype(model) and getattr(model, "quantization", None) is not None:
        raise ValueError(
            f"A quantized model is saved in the dtype it was quantized in "
            f"({variable_dtype(model)}), not {dtype}. Load the float model with "
            f"`from_preset(..., dtype={dtype!r})` and quantize that."
        )
    return dtype


@contextlib.contextmanager
def computing_in_variable_dtype(model):
    """Within the block, every layer with a mixed policy (`mixed_bfloat16`:
    float32 variables, bfloat16 compute) has its variables' dtype as its
    policy, so that saved configs name that dtype (a preset that loads as a
    float32 model) and weights Keras computes on saving (LoRA kernels merged
    with their adapters) come out in float32, not rounded to bfloat16.

    Example:
    ```python
    with computing_in_variable_dtype(model):
        model.backbone.get_config()["dtype"]   # float32 for a mixed model
    ```
    """
    changed = []
    for layer in _keras_compat.sublayers(model):
        # Quantized layers keep their policies (maps included): they save as
        # quantized.
        policy = _keras_compat.layer_dtype_policy(layer)
        if isinstance(policy, keras.dtype_policies.DTypePolicyMap) or policy.quantization_mode:
            continue
        if policy.compute_dtype != policy.variable_dtype:
            changed.append((layer, policy))
            layer.dtype_policy = policy.variable_dtype
    try:
        yield
    finally:
        for layer, policy in changed:
            layer.dtype_policy = policy
