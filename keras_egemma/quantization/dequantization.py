"""A float copy of a quantized `EmbeddingGemma`, for formats that hold float
weights (sentence-transformers, KerasHub, GGUF).

Each quantized layer's weights are read through the layer's own forward pass
on one-hot inputs, so they are exactly the values it multiplies by, whatever
Keras' scheme (int8 per channel, int4 per channel or per block). int8 layers
also round their inputs per token at run time; the float copy does not, so it
is close to, not equal to, an int8 model. int4 weight-only layers compute the
same thing in both.
"""

import keras
import numpy as np

from keras_egemma import _keras_compat
from keras_egemma.quantization.weight_quantization import quantizable_layers

# Rows of the embedding table read per lookup.
_TABLE_CHUNK = 8192


def _dense_kernel(layer):
    """`(d_in, d_out)`: row i is the layer's output for the i-th unit vector."""
    return keras.ops.convert_to_numpy(layer(np.eye(layer.kernel.shape[0], dtype="float32")))


def _einsum_kernel(layer, kernel_shape):
    """The kernel of an `EinsumDense` (`"<in>,<kernel>-><out>"`), from its
    outputs for one-hot inputs over the axes it sums over."""
    inputs, rest = layer.equation.replace(" ", "").split(",")
    kernel_axes, outputs = rest.split("->")
    sizes = dict(zip(kernel_axes, kernel_shape))
    reduced = [a for a in inputs if a in kernel_axes and a not in outputs]
    produced = [a for a in outputs if a in kernel_axes]
    # The input's last free axis (the sequence) carries one one-hot row per
    # combination of the reduced axes; its other free axes (batch) are 1.
    row = [a for a in inputs if a not in reduced][-1]
    count = int(np.prod([sizes[a] for a in reduced]))
    one_hot = np.eye(count, dtype="float32").reshape([count] + [sizes[a] for a in reduced])
    order = [row] + reduced
    one_hot = np.transpose(one_hot, [order.index(a) for a in inputs if a in order])
    one_hot = one_hot.reshape(
        [count if a == row else sizes[a] if a in reduced else 1 for a in inputs])
    out = keras.ops.convert_to_numpy(layer(one_hot))
    out = np.moveaxis(out, outputs.index(row), 0)
    out = out.reshape([sizes[a] for a in reduced] + [sizes[a] for a in produced])
    return np.transpose(out, [(reduced + produced).index(a) for a in kernel_axes])


def _table(layer):
    rows = [
        keras.ops.convert_to_numpy(layer(np.arange(start, min(start + _TABLE_CHUNK,
                                                              layer.input_dim))[None]))[0]
        for start in range(0, layer.input_dim, _TABLE_CHUNK)
    ]
    return np.concatenate(rows, axis=0)


def _float_weight(layer, float_layer):
    if isinstance(layer, keras.layers.Embedding):
        return _table(layer)
    if isinstance(layer, keras.layers.Dense):
        return _dense_kernel(layer)
    return _einsum_kernel(layer, tuple(float_layer.kernel.shape))


def dequantized_copy(model):
    """A float `EmbeddingGemma` (the original float dtype) computing with the
    weights `model`'s quantized layers use; `model` itself if not quantized.

    Example:
    ```python
    model.quantize("int4")
    dequantized_copy(model).save_to_sentence_transformers("./float-from-int4")
    ```
    """
    if getattr(model, "quantization", None) is None:
        return model
    source = model.backbone
    config = {**source.get_config(), "dtype": source.compute_dtype}
    config.pop("name", None)
    backbone = type(source).from_config(config)
    copy = type(model)(
        backbone=backbone, preprocessor=model.preprocessor, pooling=model.pooling,
        projection_units=model.projection_units,
        attention_pooling_heads=model.attention_pooling_heads,
    )
    quantized = quantizable_layers(model)
    for layer, float_layer in zip(quantized, quantizable_layers(copy), strict=True):
        target = float_layer.embeddings if isinstance(layer, keras.layers.Embedding) \
            else float_layer.kernel
        target.assign(_float_weight(layer, float_layer).astype("float32"))
    # Everything else (norms, a learned pooler) is float already.
    pairs = list(zip(_keras_compat.sublayers(source), _keras_compat.sublayers(backbone),
                     strict=True)) + [(model.pooler, copy.pooler)]
    for layer, float_layer in pairs:
        if layer in quantized or _keras_compat.sublayers(layer)[1:]:
            continue
        for variable, float_variable in zip(layer.weights, float_layer.weights, strict=True):
            float_variable.assign(variable)
    return copy
