"""A test checkpoint whose weights carry the outlier input channels of
trained transformers, which random (Gaussian) weights lack.

Trained transformers have a few hidden channels whose norm gain and kernel
rows are far larger than the rest (the "outlier features" that int8
activation quantization stumbles on), so a few input rows of a kernel hold
its largest weights by one to two orders of magnitude. The checkpoint is the
trained `embeddinggemma_mini` with such channels folded in: in every block,
3 input channels of the query/key/value kernels and 3 of the gated
feed-forward kernels are multiplied by 20-50, and the RMS norm feeding them
divided by the same factors. The float model therefore computes exactly
what the bundled model does (same embeddings to float rounding); only the
weights' statistics change, and with them what quantization does to them.
"""

import keras
import numpy as np

import keras_egemma as eg

BASE_PRESET = "embeddinggemma_mini"
OUTLIER_CHANNELS = 3
OUTLIER_FACTORS = (20.0, 50.0)


def _scale_input_channels(layer, channels, factors):
    """Multiplies an `EinsumDense` kernel's slices along its summed (input)
    axis: `channels` by `factors`."""
    inputs, output = layer.equation.split("->")
    kernel_axes = inputs.split(",")[1]
    (axis,) = [i for i, label in enumerate(kernel_axes) if label not in output]
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    multiplier = np.ones(kernel.shape[axis], "float32")
    multiplier[channels] = factors
    shape = [1] * kernel.ndim
    shape[axis] = -1
    layer.kernel.assign(kernel * multiplier.reshape(shape))


def build_outlier_preset(path, seed=0, factors=OUTLIER_FACTORS):
    """Saves the outlier checkpoint (see the module docstring) as a preset
    at `path` and returns `path`.

    Args:
        path: the preset folder to write.
        seed: draws the channels and their factors.
        factors: `(low, high)`, the range the factors are drawn from.
    """
    model = eg.EmbeddingGemma.from_preset(BASE_PRESET)
    rng = np.random.default_rng(seed)
    hidden = model.backbone.hidden_dim
    for block in model.backbone.transformer_layers:
        attention = block.attention
        for norm, layers in (
            (
                block.pre_attention_norm,
                (attention.query_dense, attention.key_dense, attention.value_dense),
            ),
            (block.pre_ffw_norm, (block.ffw_gating, block.ffw_gating_2)),
        ):
            channels = rng.choice(hidden, OUTLIER_CHANNELS, replace=False)
            scales = rng.uniform(*factors, size=OUTLIER_CHANNELS).astype("float32")
            for layer in layers:
                _scale_input_channels(layer, channels, scales)
            # The norm multiplies by (1 + scale): divide that by the factors.
            gain = 1.0 + keras.ops.convert_to_numpy(norm.scale)
            gain[channels] /= scales
            norm.scale.assign(gain - 1.0)
    model.save_to_preset(path)
    return path
