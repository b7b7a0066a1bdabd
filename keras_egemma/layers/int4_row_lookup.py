"""An int4 embedding lookup that unpacks only the rows it gathers.

Keras' int4 `Embedding` unpacks the whole packed table on every call, then
gathers: an int8 copy of the table and float temporaries of its full size per
batch, several times the int4 model itself. The table is packed along the embedding axis, so a row's values stay
in its row: gathering the packed rows first gives the same values for the
cost of the batch's rows.
"""

import functools

import keras
from keras import ops
from keras.quantizers import unpack_int4

from keras_egemma import _keras_compat


def int4_row_lookup(layer, inputs, training=None):
    """`layer`'s int4 lookup of `inputs` (int ids, any shape) -> `(*inputs.shape,
    output_dim)` in the compute dtype, dequantized as Keras does."""
    state = _keras_compat.int4_embedding_state(layer)
    if layer.lora_enabled or state is None:
        return _keras_compat.keras_int4_embedding_call(layer, inputs, training=training)
    packed, output_dim, block_size = state
    if keras.backend.standardize_dtype(inputs.dtype) not in ("int32", "int64"):
        inputs = ops.cast(inputs, "int32")
    rows = unpack_int4(ops.take(packed, inputs, axis=0), output_dim, axis=-1)
    rows = ops.cast(rows, layer.compute_dtype)
    scale = ops.take(layer.embeddings_scale, inputs, axis=0)
    if block_size is None or block_size == -1:
        return ops.divide(rows, ops.expand_dims(scale, axis=-1))
    # Per block: a scale and zero point per (row, group), groups mapped to
    # columns by `g_idx`, dequantized the way Keras does.
    zero = ops.take(layer.embeddings_zero, inputs, axis=0)
    return _keras_compat.dequantize_with_sz_map(rows, scale, zero, layer.g_idx, group_axis=-1)


def gather_int4_rows_first(layer):
    """Makes a `keras.layers.Embedding` use `int4_row_lookup` once it is
    quantized to int4; returns the layer.

    Set on the instance rather than by subclassing: Keras names a layer's
    weights in a saved file after its class, and presets store this one as
    an `Embedding`. Float and int8 lookups stay Keras' own.

    Example:
    ```python
    layer = gather_int4_rows_first(keras.layers.Embedding(1000, 64))
    layer.build()
    layer.quantize("int4", config=keras.quantizers.Int4QuantizationConfig(block_size=32))
    layer(np.array([[1, 2, 3]]))  # (1, 3, 64), the table never unpacked whole
    ```
    """
    _keras_compat.set_int4_embedding_call(layer, functools.partial(int4_row_lookup, layer))
    return layer
