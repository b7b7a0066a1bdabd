"""`EmbeddingGemma`'s quantization methods: post-training weight quantization
with the paper's recipes, and quantization-aware training."""

import keras

from keras_egemma import _keras_compat
from keras_egemma.quantization.qat import disable_fake_quantization
from keras_egemma.quantization.qat import enable_fake_quantization
from keras_egemma.quantization.weight_quantization import DEFAULT_BLOCK_SIZE
from keras_egemma.quantization.weight_quantization import check_quantization_arguments
from keras_egemma.quantization.weight_quantization import quantizable_layers
from keras_egemma.quantization.weight_quantization import quantize_weights
from keras_egemma.training.lora import check_no_lora


def give_layers_own_policies(model):
    """After rebuilding a quantized model from its config: each quantized
    layer gets its own dtype policy, and a recipe saved by an earlier version
    gets today's name.

    Rebuilt layers hold the whole policy map, and Keras' saving asks
    `layer.dtype_policy.quantization_mode`, which a map answers with its
    default (float). Before `"mixed"` used per-block int4, it was the
    per-channel recipe, saved with no block size: its layers are rebuilt from
    their own saved policies (per channel) either way, so only the name of
    the recipe changes, to `"mixed_per_channel"`.
    """
    recipe = model.quantization
    if recipe["mode"] == "mixed" and recipe.get("block_size") is None:
        model.quantization = {**recipe, "mode": "mixed_per_channel"}
    for layer in quantizable_layers(model):
        policy = _keras_compat.layer_dtype_policy(layer)
        if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            _keras_compat.set_layer_dtype_policy(layer, policy[layer.path])


class QuantizationMethods:
    """`quantize` (int8, int4 and the two mixed recipes) and
    `quantize_aware`; mixed into `EmbeddingGemma`."""

    def quantize(self, mode=None, config=None, filters=None, block_size=DEFAULT_BLOCK_SIZE,
                 **kwargs):
        """Quantizes the weights in place with Keras' quantization layers.

        The token embedding table (two thirds of the parameters), every
        attention, feed-forward and projection-head kernel are quantized;
        norms, the pooler and the tokenizer are not. int8 layers also
        quantize their inputs on the fly (per-token abs-max, Keras' int8
        scheme) for integer matmuls; int4 layers dequantize their weights to
        the compute dtype. The recipe is saved with `save_to_preset`, and
        `from_preset` rebuilds the quantized layers directly (the float
        weights are never materialised).

        Args:
            mode: `"int8"`: symmetric int8 with one scale per output channel
                (per table row for the embedding). `"int4"`: int4 with a scale
                and zero point per block of `block_size` consecutive inputs
                (like Q4_0/Q4_1), two values per byte. `"mixed"`: int8 for the
                attention projections, per-block int4 for the embedding table,
                feed-forward and projection head; the choice after training
                (closer to float than int4, a little larger).
                `"mixed_per_channel"`: the paper's recipe, the same layers
                with one int4 scale per output channel: only for weights
                trained for it (`quantize_aware("mixed_per_channel")`), since
                one outlier weight sets the step of its whole channel.
            config: not supported; the recipe is set by `mode` (use
                `keras.Model.quantize` on a sub-layer for custom quantizers).
            filters: not supported, for the same reason.
            block_size: inputs per int4 block (`"int4"` and `"mixed"`); must
                divide the input size of every layer it applies to. Default 32.

        Example:
        ```python
        model = EmbeddingGemma.from_preset("embeddinggemma_300m")
        model.quantize("int4", block_size=32)
        model.save_to_preset("./embeddinggemma_int4")   # ~0.2 GB
        ```
        """
        if config is not None or filters is not None or kwargs:
            raise ValueError(
                "EmbeddingGemma.quantize takes `mode` and `block_size` only (the layers "
                "and their quantizers follow the recipe). For custom quantization, call "
                "`layer.quantize(...)` on the layers of `model.backbone`."
            )
        check_no_lora(self, "quantize")
        qat = getattr(self, "quantization_aware", None)
        if mode is None and qat is not None:
            # After quantization-aware training, its recipe by default.
            mode, block_size = qat["mode"], qat["block_size"] or block_size
        if qat is not None:
            # The fake quantizers read the float kernels that quantizing drops
            # (checked first so that a bad call leaves training as it was).
            check_quantization_arguments(self, mode, block_size)
            self.quantize_aware(None)
        self.quantization = quantize_weights(self, mode, block_size)
        # Compiled functions captured the float variables.
        self.__dict__.pop("_inference_function", None)
        self.train_function = self.test_function = self.predict_function = None
        _keras_compat.after_quantize(self, mode)

    def quantize_aware(self, mode, block_size=DEFAULT_BLOCK_SIZE):
        """Trains with fake-quantized weights (quantization-aware training).

        Every layer `quantize(mode, block_size)` would quantize computes its
        forward with `dequantize(quantize(w))` on exactly Keras' grid for that
        layer (int8 layers also round their inputs per token, as Keras' int8
        matmuls do), and passes gradients straight through to the float
        weights. `fit` then finetunes a model that keeps its quality when
        quantized; `quantize()` afterwards applies the same recipe (and ends
        the fake quantization). The weights stay float: `save_to_preset`
        during QAT saves a float model, and the setting is not saved.

        Args:
            mode: `"int8"`, `"int4"`, `"mixed"` or `"mixed_per_channel"`
                (see `quantize`), or `None` to go back to the float forward.
            block_size: inputs per int4 block (`"int4"` and `"mixed"`).
                Default 32.

        Example:
        ```python
        model = EmbeddingGemma.from_preset("embeddinggemma_300m")
        model.quantize_aware("int4")
        model.compile()
        model.fit(examples, batch_size=32, sequence_length=128)
        model.quantize()          # int4, block 32: the deployable model
        ```
        """
        if mode is not None:
            check_no_lora(self, "quantization-aware train")
        if mode is None:
            disable_fake_quantization(self)
            self.quantization_aware = None
        else:
            self.quantization_aware = enable_fake_quantization(self, mode, block_size)
        # Compiled functions traced the previous forward.
        self.__dict__.pop("_inference_function", None)
        self.train_function = self.test_function = self.predict_function = None
