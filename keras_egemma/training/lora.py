"""`EmbeddingGemma`'s LoRA methods: low-rank adapters on the backbone's
attention and feed-forward kernels (optionally the projection head), trained
while every other weight stays frozen, and saved merged or alone.

The adapters are Keras' own (`EinsumDense.enable_lora` / `Dense.enable_lora`:
`kernel + (alpha / rank) * a @ b`, float32 factors, `b` starting at zero), so
a model with fresh adapters embeds exactly as before.
"""

import numbers

import keras

from keras_egemma.io.lora_weights import check_lora_path
from keras_egemma.io.lora_weights import read_lora_file
from keras_egemma.io.lora_weights import write_lora_file

# Per encoder block: the attention projections, then the GeGLU feed-forward.
_ATTENTION_TARGETS = (
    ("query", "query_dense"),
    ("key", "key_dense"),
    ("value", "value_dense"),
    ("attention_output", "output_dense"),
)
_FEED_FORWARD_TARGETS = ("ffw_gating", "ffw_gating_2", "ffw_linear")


def lora_targets(model, include_heads=False):
    """`[(key, layer), ...]`: the layers `enable_lora` adapts, each under a
    key that names it in adapter files independently of Keras' layer names
    (which get numbered when several models share a process)."""
    targets = []
    for i, block in enumerate(model.backbone.transformer_layers):
        prefix = f"backbone/encoder_block_{i}"
        for name, attribute in _ATTENTION_TARGETS:
            targets.append((f"{prefix}/attention/{name}", getattr(block.attention, attribute)))
        for name in _FEED_FORWARD_TARGETS:
            targets.append((f"{prefix}/{name}", getattr(block, name)))
    if include_heads:
        for j, layer in enumerate(model.projection_head.dense_layers):
            targets.append((f"projection_head/dense_{j}", layer))
    return targets


def _check_settings(rank, lora_alpha, include_heads):
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ValueError(f"LoRA `rank` must be an int >= 1 (4 to 16 is usual), got {rank!r}.")
    alpha = rank if lora_alpha is None else lora_alpha
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(
            f"`lora_alpha` must be a positive number (the update is scaled by "
            f"alpha / rank), got {lora_alpha!r}."
        )
    if not isinstance(include_heads, bool):
        raise ValueError(f"`include_heads` must be True or False, got {include_heads!r}.")
    return {"rank": int(rank), "alpha": float(alpha), "include_heads": include_heads}


class LoraMethods:
    """`enable_lora`, `save_lora_weights`, `load_lora_weights` and the `lora`
    setting; mixed into `EmbeddingGemma`."""

    @property
    def lora(self):
        """`None`, or the LoRA settings: `{"rank", "alpha", "include_heads"}`."""
        settings = getattr(self, "_lora_settings", None)
        return None if settings is None else dict(settings)

    def enable_lora(self, rank, lora_alpha=None, include_heads=False):
        """Adds LoRA adapters and freezes every other weight.

        Adapted: each encoder block's query, key, value and attention-output
        projections and its three feed-forward kernels (KerasHub's
        convention: every `EinsumDense`), and with `include_heads=True` the
        projection head's dense layers. Frozen: the token embedding table,
        the norms, the pooler, the head (unless adapted) and the adapted
        kernels themselves; `fit` then trains only the adapters (and the
        distillation projection of `compile(teacher_dim=...)`, which is new).
        An optimizer that already trained starts afresh.

        `save_to_preset` writes the merged weights, a plain preset that
        loads without LoRA; `save_lora_weights` writes the adapters alone.

        Args:
            rank: int >= 1, the rank of each adapter.
            lora_alpha: the update is `(lora_alpha / rank) * a @ b`; defaults
                to `rank` (scale 1).
            include_heads: also adapt the projection head.

        Example:
        ```python
        model = EmbeddingGemma.from_preset("embeddinggemma_300m")
        model.enable_lora(8)
        model.compile()
        model.fit(examples, batch_size=32)
        model.save_to_preset("./merged")          # plain weights, no LoRA
        model.save_lora_weights("run.lora.h5")    # the adapters alone
        ```
        """
        settings = _check_settings(rank, lora_alpha, include_heads)
        current = self.lora
        if current is not None:
            if current == settings:
                return
            raise ValueError(
                f"LoRA is already enabled ({_describe(current)}); adapters cannot be "
                f"changed to {_describe(settings)} in place. Save the merged weights "
                "(`save_to_preset`), load them with `from_preset`, and enable LoRA again."
            )
        if getattr(self, "quantization", None) is not None:
            raise ValueError(
                f"LoRA needs the float kernels, and this model is quantized "
                f"({self.quantization['mode']}). Load the float model, enable LoRA, train, "
                "save it with `save_to_preset` (merged), then load and `quantize` that."
            )
        if getattr(self, "quantization_aware", None) is not None:
            raise ValueError(
                "Quantization-aware training is on; it fake-quantizes the full float "
                "kernels, which LoRA freezes. Call `quantize_aware(None)` first, or train "
                "without LoRA."
            )
        for root in (self.backbone, self.pooler, self.projection_head):
            for variable in root.weights:
                variable.trainable = False
        for _, layer in lora_targets(self, include_heads):
            layer.enable_lora(settings["rank"], lora_alpha=settings["alpha"])
        self._lora_settings = settings
        self._forget_compiled_state()

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save_weights`; with LoRA, the file also holds each
        adapted layer's kernel and adapters unmerged (Keras alone saves the
        merged kernel), so that `load_weights`, and with it
        `keras.callbacks.BackupAndRestore`, resumes the same adapters."""
        self._saving_lora_state = True
        try:
            super().save_weights(filepath, overwrite=overwrite, **kwargs)
        finally:
            self._saving_lora_state = False

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """`keras.Model.load_weights`; restores the adapters `save_weights`
        wrote into a model with the same LoRA settings. Into a model without
        LoRA, the file loads as the merged weights."""
        self._loaded_lora_state = {}
        try:
            super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)
            state = self._loaded_lora_state
        finally:
            self._loaded_lora_state = None
        if state and self.lora is not None:
            _restore_lora_state(self, state, filepath)

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if not getattr(self, "_saving_lora_state", False) or self.lora is None:
            return
        settings = self.lora
        store[_LORA_SETTINGS] = [settings["rank"], settings["alpha"], settings["include_heads"]]
        for key, layer in self._lora_layers():
            for part, variable in _lora_parts(layer).items():
                store[_lora_store_key(key, part)] = variable

    def load_own_variables(self, store):
        lora_keys = [k for k in store.keys() if k.startswith(_LORA_PREFIX)]
        if lora_keys and getattr(self, "_loaded_lora_state", None) is not None:
            self._loaded_lora_state.update({k: store[k] for k in lora_keys})
        super().load_own_variables({k: store[k] for k in store.keys() if k not in lora_keys})

    def _forget_compiled_state(self):
        # Compiled steps and a built optimizer hold the previous set of
        # trainable variables; a fresh optimizer of the same configuration
        # replaces a built one.
        self.__dict__.pop("_inference_function", None)
        self.train_function = self.test_function = self.predict_function = None
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and optimizer.built:
            config = self.get_compile_config()
            config["optimizer_built"] = False
            self.compile_from_config(config)

    def _lora_layers(self):
        settings = self.lora
        if settings is None:
            raise ValueError("This model has no LoRA adapters; call `enable_lora(rank)` first.")
        return lora_targets(self, settings["include_heads"])

    def save_lora_weights(self, path):
        """Saves the LoRA adapters alone (a few MB) to a `.lora.h5` file.

        The file holds the settings and each adapted layer's two factors; it
        is written beside `path` and renamed into place. Load it into the
        model it was trained from with `load_lora_weights`.

        Args:
            path: file name ending in `.lora.h5`; an existing file is
                replaced only if it is an adapter file.

        Example:
        ```python
        model.save_lora_weights("run.lora.h5")
        base = EmbeddingGemma.from_preset("embeddinggemma_300m")
        base.load_lora_weights("run.lora.h5")   # the trained model's embeddings
        ```
        """
        check_lora_path(path)
        factors = {
            key: (
                keras.ops.convert_to_numpy(layer.lora_kernel_a),
                keras.ops.convert_to_numpy(layer.lora_kernel_b),
            )
            for key, layer in self._lora_layers()
        }
        write_lora_file(path, self.lora, factors)

    def load_lora_weights(self, path):
        """Loads adapters saved by `save_lora_weights`.

        Enables LoRA with the file's settings if it is not enabled yet (then
        the model must be the one the adapters were trained from, e.g. the
        same preset); otherwise the settings must match. A file that does
        not fit leaves the model unchanged.

        Args:
            path: a `.lora.h5` file.

        Example:
        ```python
        model = EmbeddingGemma.from_preset("embeddinggemma_300m")
        model.load_lora_weights("run.lora.h5")
        ```
        """
        settings, factors = read_lora_file(path)
        current = self.lora
        if current is not None and current != settings:
            raise ValueError(
                f"{path} holds adapters with {_describe(settings)}, but this model has "
                f"LoRA with {_describe(current)}. Load it into a model without LoRA, "
                "which then takes the file's settings."
            )
        for key, layer in lora_targets(self, settings["include_heads"]):
            if key not in factors:
                raise ValueError(
                    f"{path} has no adapter for {key}: it was saved from a model of "
                    "another configuration."
                )
            kernel = tuple(layer.kernel.shape)
            expected = (kernel[:-1] + (settings["rank"],), (settings["rank"], kernel[-1]))
            found = tuple(tuple(f.shape) for f in factors[key])
            if found != expected:
                raise ValueError(
                    f"{path}: the adapter of {key} has shapes {found}, this model needs "
                    f"{expected}. It was saved from a model of another configuration."
                )
        if current is None:
            self.enable_lora(
                settings["rank"], settings["alpha"], include_heads=settings["include_heads"]
            )
        for key, layer in self._lora_layers():
            a, b = factors[key]
            layer.lora_kernel_a.assign(a)
            layer.lora_kernel_b.assign(b)


_LORA_PREFIX = "lora:"
_LORA_SETTINGS = "lora:settings"


def _lora_store_key(key, part):
    # Slashes would nest groups in the weights file.
    return f"{_LORA_PREFIX}{key.replace('/', '.')}:{part}"


def _lora_parts(layer):
    """The adapted layer's own kernel (unmerged) and its two factors."""
    kernel = [w for w in layer.weights if w.name == "kernel"]
    return {"kernel": kernel[0], "a": layer.lora_kernel_a, "b": layer.lora_kernel_b}


def _restore_lora_state(model, state, filepath):
    rank, alpha, include_heads = (x.item() for x in state[_LORA_SETTINGS])
    saved = {"rank": int(rank), "alpha": float(alpha), "include_heads": bool(include_heads)}
    if saved != model.lora:
        raise ValueError(
            f"{filepath} was saved from a model with LoRA {_describe(saved)}; this model has "
            f"{_describe(model.lora)}. Enable LoRA with the same settings before loading."
        )
    for key, layer in model._lora_layers():
        for part, variable in _lora_parts(layer).items():
            variable.assign(state[_lora_store_key(key, part)])


def _describe(settings):
    return (
        f"rank={settings['rank']}, lora_alpha={settings['alpha']:g}, "
        f"include_heads={settings['include_heads']}"
    )


def check_no_lora(model, action):
    """Refuses `action` (e.g. "quantize") on a model with LoRA adapters."""
    if getattr(model, "_lora_settings", None) is not None:
        raise ValueError(
            f"Cannot {action} a model with LoRA adapters. Save it with `save_to_preset` "
            f"(the adapters merged into the weights), load that with `from_preset`, "
            f"then {action} it."
        )
