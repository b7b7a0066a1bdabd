"""Post-training weight quantisation of an `EmbeddingGemma`, through Keras.

Keras' own `quantize` machinery does the work (`int8`: per-output-channel
scales; `int4`: per-block scales and zero points along the reduced axis,
two values packed per byte). This module picks which layers get which mode
(the paper's recipes), checks the arguments, and records the recipe in the
model's config so that a saved preset rebuilds the same quantised layers.
"""

import gc

import keras
from keras.quantizers import Int4QuantizationConfig

from keras_egemma import _keras_compat
from keras_egemma.io.errors import CheckpointError

MODES = ("int8", "int4", "mixed", "mixed_per_channel")
# Modes whose int4 layers have one scale per block of `block_size` inputs.
BLOCK_MODES = ("int4", "mixed")
# Bumped when a preset needs a newer library to be read; loading refuses
# presets whose version is higher than this.
QUANTIZATION_FORMAT_VERSION = 1
DEFAULT_BLOCK_SIZE = 32

_QUANTIZABLE = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)


def _is_attention(layer):
    return "/attention/" in (layer.path or "")


def _reduced_size(layer):
    """Length of the axis a layer's int4 blocks run along."""
    if isinstance(layer, keras.layers.Embedding):
        return layer.output_dim
    if isinstance(layer, keras.layers.Dense):
        return layer.kernel.shape[0]
    # EinsumDense: the kernel axes that do not appear in the output.
    inputs, output = layer.equation.split("->")
    kernel_axes = inputs.split(",")[1]
    size = 1
    for axis, dim in zip(kernel_axes, layer.kernel.shape):
        if axis not in output:
            size *= dim
    return size


def quantizable_layers(model):
    """The layers that weight quantisation touches: every `Dense`,
    `EinsumDense` and `Embedding` of the backbone and the projection head (the
    token embedding table included: two thirds of the parameters). The
    preprocessor and the pooler are left as they are."""
    layers = [
        layer
        for layer in _keras_compat.sublayers(model.backbone)
        if isinstance(layer, _QUANTIZABLE)
    ]
    return layers + list(model.projection_head.dense_layers)


def quantization_plan(model, mode, block_size):
    """The recipe `mode` applies to `model`: a list of `(layer, keras mode,
    keras config)`, one per quantizable layer, where the keras mode is
    `"int8"` or `"int4"` and the config an `Int4QuantizationConfig` for int4
    layers (`block_size=None` for per-channel) or None for int8.
    `quantize_weights` and quantization-aware training both follow it."""
    layers = quantizable_layers(model)
    if mode == "int8":
        return [(layer, "int8", None) for layer in layers]
    if mode == "int4":
        config = Int4QuantizationConfig(block_size=block_size)
        return [(layer, "int4", config) for layer in layers]
    # Both mixed recipes: per-channel int8 for attention, int4 for the
    # embedding table, feed-forward and projection layers; per block after
    # training ("mixed"), per channel for weights trained for it (the paper's).
    int4 = Int4QuantizationConfig(block_size=block_size if mode == "mixed" else None)
    return [
        (layer, "int8", None) if _is_attention(layer) else (layer, "int4", int4) for layer in layers
    ]


def check_quantization_arguments(model, mode, block_size):
    """Raises `ValueError` for a recipe that cannot be applied to `model`."""
    if mode not in MODES:
        raise ValueError(
            f"Unknown quantization mode {mode!r}. Use one of {', '.join(map(repr, MODES))}: "
            "'int8' (per-channel), 'int4' (per-block, see `block_size`), 'mixed' (int8 "
            "attention, per-block int4 elsewhere) or 'mixed_per_channel' (the paper's "
            "recipe, for weights trained for it with `quantize_aware`)."
        )
    if getattr(model, "quantization", None) is not None:
        raise ValueError(
            f"This model is already quantized ({model.quantization['mode']}). Quantizing "
            "twice compounds the rounding errors: quantize the float model "
            "(`EmbeddingGemma.from_preset(...)` of the unquantized preset) instead."
        )
    if mode not in BLOCK_MODES:
        return
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"`block_size` must be a positive int, got {block_size!r}.")
    for layer, layer_mode, _ in quantization_plan(model, mode, block_size):
        if layer_mode != "int4":
            continue
        size = _reduced_size(layer)
        if size % block_size:
            raise ValueError(
                f"`block_size={block_size}` does not divide the {size} inputs of layer "
                f"{layer.path!r}, so its last block would be partial. Use a block size "
                f"that divides every layer's input size (e.g. {DEFAULT_BLOCK_SIZE} or 16 for "
                "the published model)."
            )


def quantize_weights(model, mode, block_size=DEFAULT_BLOCK_SIZE):
    """Quantises `model`'s weights in place; see `EmbeddingGemma.quantize`."""
    check_quantization_arguments(model, mode, block_size)
    # Keras runs a full `gc.collect()` each time a layer drops its float
    # kernel: ~1 s apiece with TF, JAX and torch objects in the heap. Frozen
    # objects are skipped by the collector, so each pass only scans new ones.
    gc.freeze()
    try:
        for layer, layer_mode, config in quantization_plan(model, mode, block_size):
            layer.quantize(layer_mode, config=config)
    finally:
        gc.unfreeze()
    return {
        "mode": mode,
        "block_size": block_size if mode in BLOCK_MODES else None,
        "format_version": QUANTIZATION_FORMAT_VERSION,
    }


def check_saved_quantization(quantization, source):
    """Refuses a saved recipe this library cannot rebuild."""
    if quantization is None:
        return
    version = quantization.get("format_version", 0) if isinstance(quantization, dict) else None
    mode = quantization.get("mode") if isinstance(quantization, dict) else None
    if not isinstance(version, int) or version > QUANTIZATION_FORMAT_VERSION or mode not in MODES:
        raise CheckpointError(
            f"{source} holds a model quantized as {quantization!r}, which this version of "
            f"keras_egemma cannot read (it knows modes {', '.join(MODES)}, format version "
            f"<= {QUANTIZATION_FORMAT_VERSION}). The preset was saved by a newer library: "
            "upgrade with `pip install -U keras-egemma keras`."
        )
