"""Quantization-aware training: fake-quantized weights with a straight-through
estimator, on the exact grids `EmbeddingGemma.quantize` uses.

For each layer of the recipe (`weight_quantization.quantization_plan`), the
layer's forward is replaced, on the instance, by one that computes with
`dequantize(quantize(w))` instead of `w`, mirroring Keras' own quantizers
(`keras.quantizers` and the layers' `quantize`):

- int8: symmetric abs-max, one scale per output channel (per table row for
  the embedding), `q = clip(round(w * 127 / (max|w| + eps)), -127, 127)`.
  Keras' int8 `Dense`/`EinsumDense` also quantize their *inputs* per token
  (abs-max over the reduced axes) for an integer matmul, so the fake
  quantizer does too: the finetuned model then sees in training exactly the
  rounding it meets when deployed.
- int4 per channel (`"mixed_per_channel"`): the same with the range `[-8, 7]`.
- int4 per block (`"int4"`, `"mixed"`): asymmetric, a scale and a zero point per
  `block_size` consecutive inputs, `scale = (max - min + eps) / 15`,
  `zero = clip(round(-min / scale) - 8, -8, 7)`,
  `w ~ (clip(round(w / scale) + zero, -8, 7) - zero) * scale`.

The gradient goes straight through to the float weight (and input):
`w + stop_gradient(fq(w) - w)` has the value `fq(w)` and the gradient of `w`.
Only `keras.ops`, so every backend trains the same way. The float weights stay
the model's weights: saving a model during QAT saves a float model.
"""

import keras
from keras import ops

from keras_egemma import _keras_compat
from keras_egemma.quantization.weight_quantization import BLOCK_MODES
from keras_egemma.quantization.weight_quantization import check_quantization_arguments
from keras_egemma.quantization.weight_quantization import quantizable_layers
from keras_egemma.quantization.weight_quantization import quantization_plan

# Keras' quantizers add `backend.epsilon()` to the range before dividing.
_EPSILON = keras.config.epsilon()
_MARK = "_egemma_fake_quantized"


def straight_through(x, fake_quantized):
    """The value of `fake_quantized` with the gradient of `x` (STE)."""
    return x + ops.stop_gradient(fake_quantized - x)


def fake_quantize_abs_max(x, axis, value_range=(-127, 127)):
    """Symmetric abs-max quantize-dequantize along `axis` (Keras'
    `abs_max_quantize`): one scale per slice, so `axis` is the reduced one.

    Args:
        x: float tensor of any shape.
        axis: int or tuple of ints, the axes one scale covers.
        value_range: the integer range, `(-127, 127)` for int8 and
            `(-8, 7)` for Keras' per-channel int4.

    Returns:
        A float tensor of `x`'s shape on the quantization grid.
    """
    # `ops.divide` with a tensor numerator: torch computes `scalar / tensor`
    # as `reciprocal(tensor) * scalar`, one rounding more than Keras' numpy
    # quantizer, which moves values that sit on a rounding tie (frequent for
    # weights stored in bfloat16) to the other grid point.
    high = ops.convert_to_tensor(float(value_range[1]), x.dtype)
    scale = ops.divide(high, ops.max(ops.abs(x), axis=axis, keepdims=True) + _EPSILON)
    quantized = ops.clip(ops.round(ops.multiply(x, scale)), value_range[0], value_range[1])
    return ops.divide(quantized, scale)


def fake_quantize_blocks(x, block_size):
    """Asymmetric int4 quantize-dequantize in blocks along axis 0 (Keras'
    `abs_max_quantize_grouped_with_zero_point`).

    Args:
        x: float tensor of shape `(rows, columns)`, `rows` a multiple of
            `block_size` (`EmbeddingGemma.quantize` checks it).
        block_size: rows per block; each block of each column gets a scale
            and a zero point.

    Returns:
        A float tensor of shape `(rows, columns)` on the quantization grid.
    """
    rows, columns = x.shape
    blocks = ops.reshape(x, (rows // block_size, block_size, columns))
    low = ops.min(blocks, axis=1, keepdims=True)
    high = ops.max(blocks, axis=1, keepdims=True)
    scale = ops.divide(high - low + _EPSILON, ops.convert_to_tensor(15.0, x.dtype))
    zero = ops.clip(ops.round(ops.divide(-low, scale)) - 8.0, -8.0, 7.0)
    quantized = ops.clip(ops.round(ops.divide(blocks, scale)) + zero, -8.0, 7.0)
    return ops.reshape((quantized - zero) * scale, (rows, columns))


def _einsum_axes(equation):
    """(input reduced axes, kernel reduced axes) of an `EinsumDense` equation:
    the labels missing from the output are summed over."""
    if "..." in equation:
        raise ValueError(
            f"Quantization-aware training does not support the einsum "
            f"equation {equation!r} (ellipsis)."
        )
    inputs, output = equation.split("->")
    x_labels, kernel_labels = inputs.split(",")
    reduced = lambda labels: tuple(i for i, a in enumerate(labels) if a not in output)  # noqa: E731
    return reduced(x_labels), reduced(kernel_labels)


def _fake_quantize_weight(layer, weight, mode, block_size):
    """`weight` on the grid `layer.quantize(mode, config)` will store."""
    if isinstance(layer, keras.layers.Embedding):
        # One scale per table row; int4 blocks run along each row.
        if mode == "int8":
            return fake_quantize_abs_max(weight, axis=-1)
        if block_size is None:
            return fake_quantize_abs_max(weight, axis=-1, value_range=(-8, 7))
        return ops.transpose(fake_quantize_blocks(ops.transpose(weight), block_size))
    if isinstance(layer, keras.layers.Dense):
        if mode == "int8":
            return fake_quantize_abs_max(weight, axis=0)
        if block_size is None:
            return fake_quantize_abs_max(weight, axis=0, value_range=(-8, 7))
        return fake_quantize_blocks(weight, block_size)
    # EinsumDense. int8 keeps the kernel's shape and reduces its summed axes;
    # int4 quantizes a plain row-major reshape to (summed size, other size)
    # and reshapes back when it dequantizes, so the fake quantizer does the
    # same reshape (for a kernel whose summed axis is not leading, e.g. the
    # query's "ndh", that groups values Keras' way, not along `d`).
    if mode == "int8":
        return fake_quantize_abs_max(weight, axis=_einsum_axes(layer.equation)[1])
    shape = weight.shape
    rows = 1
    for axis in _einsum_axes(layer.equation)[1]:
        rows *= shape[axis]
    flat = ops.reshape(weight, (rows, -1))
    if block_size is None:
        flat = fake_quantize_abs_max(flat, axis=0, value_range=(-8, 7))
    else:
        flat = fake_quantize_blocks(flat, block_size)
    return ops.reshape(flat, shape)


def _fake_quantized_call(layer, mode, block_size):
    """A `call` for `layer` that computes with fake-quantized weights (and,
    for int8, inputs), reusing the layer's own matmul / einsum / take."""
    fake = lambda w: straight_through(w, _fake_quantize_weight(layer, w, mode, block_size))  # noqa: E731

    if isinstance(layer, keras.layers.Embedding):

        def call(inputs):
            if keras.backend.standardize_dtype(inputs.dtype) not in ("int32", "int64"):
                inputs = ops.cast(inputs, "int32")
            outputs = ops.take(fake(layer.embeddings), inputs, axis=0)
            return ops.cast(outputs, layer.compute_dtype)

    else:
        if isinstance(layer, keras.layers.Dense):
            input_axes = -1
            product = ops.matmul
        else:
            input_axes = _einsum_axes(layer.equation)[0]
            product = lambda x, w: ops.einsum(layer.equation, x, w)  # noqa: E731

        def call(inputs, training=None):
            inputs = ops.convert_to_tensor(inputs)
            if mode == "int8":
                # Keras' int8 layers quantize inputs per token on the fly.
                inputs = straight_through(inputs, fake_quantize_abs_max(inputs, input_axes))
            x = product(inputs, fake(layer.kernel))
            if layer.bias is not None:
                x = ops.add(x, layer.bias)
            if layer.activation is not None:
                x = layer.activation(x)
            return x

    setattr(call, _MARK, True)
    return call


def enable_fake_quantization(model, mode, block_size):
    """Makes every layer of `mode`'s recipe compute with fake-quantized
    weights; see `EmbeddingGemma.quantize_aware`. Returns the setting."""
    check_quantization_arguments(model, mode, block_size)
    disable_fake_quantization(model)
    plan = quantization_plan(model, mode, block_size)
    for layer, _, _ in plan:
        if getattr(layer, "lora_enabled", False):
            raise ValueError(
                f"Layer {layer.path!r} has LoRA enabled; quantization-aware training "
                "fake-quantizes the full float weights. Merge or disable LoRA first."
            )
    for layer, layer_mode, config in plan:
        layer_block = None if config is None else config.block_size
        if layer_block == -1:
            layer_block = None
        _keras_compat.set_layer_call(layer, _fake_quantized_call(layer, layer_mode, layer_block))
    return {"mode": mode, "block_size": block_size if mode in BLOCK_MODES else None}


def disable_fake_quantization(model):
    """Restores the layers' own float forward."""
    for layer in quantizable_layers(model):
        if getattr(_keras_compat.instance_layer_call(layer), _MARK, False):
            _keras_compat.reset_layer_call(layer)
