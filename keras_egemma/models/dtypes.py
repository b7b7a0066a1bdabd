import keras


def check_dtype(dtype):
    """Refuses float16 compute, which the model's activations overflow.

    `dtype` may be `None` (the global policy applies), a dtype name, or a
    `keras.DTypePolicy`.
    """
    if dtype is None:
        policy = keras.config.dtype_policy()
    elif isinstance(dtype, keras.DTypePolicy):
        policy = dtype
    elif isinstance(dtype, dict):
        policy = keras.dtype_policies.deserialize(dtype)
    else:
        policy = keras.DTypePolicy(dtype)
    if "float16" in (policy.compute_dtype, policy.variable_dtype):
        raise ValueError(
            f"EmbeddingGemma does not support float16 (dtype policy "
            f"{policy.name!r}): its activations reach ~8e5, beyond float16's "
            "range of 65504, and the embeddings come out wrong. Use "
            "dtype='float32' (default) or dtype='bfloat16'."
        )
