import keras
import numpy as np
from keras_hub.models import TextEmbedder

from keras_egemma.layers.l2_normalization import l2_normalize
from keras_egemma.layers.matryoshka import matryoshka_truncate
from keras_egemma.layers.poolers import get_pooler
from keras_egemma.layers.projection_head import EmbeddingProjectionHead
from keras_egemma.models.backbone import EmbeddingGemmaBackbone
from keras_egemma.models.batching import embed_token_ids
from keras_egemma.models.dtypes import check_dtype
from keras_egemma.models.preprocessor import EmbeddingGemmaPreprocessor
from keras_egemma.models.preprocessor import check_texts
from keras_egemma.quantization.weight_quantization import DEFAULT_BLOCK_SIZE
from keras_egemma.quantization.weight_quantization import check_quantization_arguments
from keras_egemma.quantization.weight_quantization import check_saved_quantization
from keras_egemma.quantization.weight_quantization import quantizable_layers
from keras_egemma.quantization.weight_quantization import quantize_weights


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingGemma(TextEmbedder):
    """EmbeddingGemma: text in, L2-normalised embeddings out.

    Backbone (token embeddings) -> pooler (masked mean for the published
    model) -> projection head (768 -> 3072 -> 768, no bias) -> L2 norm. The
    `encode*` methods add the task prompt, tokenise, batch texts of similar
    length together, and return numpy float32 arrays, optionally truncated
    to a Matryoshka size and re-normalised.

    Args:
        backbone: an `EmbeddingGemmaBackbone`.
        preprocessor: an `EmbeddingGemmaPreprocessor`, or `None` to call the
            model on token ids directly.
        pooling: `"mean"` (published), `"first"`, `"last"` or `"attention"`.
        projection_units: widths of the bias-free dense layers after pooling.
            Defaults to `(3072, 768)`.
        attention_pooling_heads: heads of the `"attention"` pooler.

    Inputs / outputs of the Keras model:
        `{"token_ids", "padding_mask"}` `(batch, length)` -> `(batch, d)`.

    Example:
    ```python
    import keras_egemma as eg
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_300m")
    q = model.encode_query(["Which planet is known as the Red Planet?"])
    d = model.encode_document(["Mars is the red planet.", "Venus is hot."])
    model.similarity(q, d)   # (1, 2) cosine similarities
    ```
    """

    backbone_cls = EmbeddingGemmaBackbone
    preprocessor_cls = EmbeddingGemmaPreprocessor

    def __init__(
        self,
        backbone,
        preprocessor=None,
        pooling="mean",
        projection_units=(3072, 768),
        attention_pooling_heads=4,
        quantization=None,
        projection_dtype=None,
        **kwargs,
    ):
        check_saved_quantization(quantization, "The model config")
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        pooler_kwargs = {"num_heads": attention_pooling_heads} if pooling == "attention" else {}
        self.pooler = get_pooler(
            pooling, dtype=backbone.dtype_policy, name="pooler", **pooler_kwargs
        )
        # A quantized model's head gets its layers' policies back from the
        # config (the backbone keeps its own in its dtype policy map).
        self.projection_head = EmbeddingProjectionHead(
            units=projection_units,
            dtype=backbone.dtype_policy if projection_dtype is None else projection_dtype,
            name="projection_head",
        )

        # === Functional model ===
        inputs = backbone.input
        sequence_output = backbone(inputs)
        pooled = self.pooler(sequence_output, padding_mask=inputs["padding_mask"])
        embeddings = self.projection_head(pooled)
        super().__init__(inputs=inputs, outputs=embeddings, **kwargs)

        # === Config ===
        self.pooling = pooling
        self.projection_units = tuple(projection_units)
        self.attention_pooling_heads = attention_pooling_heads
        self.quantization = quantization
        if quantization is not None:
            # Rebuilt quantized layers hold the whole policy map; Keras'
            # saving asks `layer.dtype_policy.quantization_mode`, which a map
            # answers with its default (float): give each its own policy.
            for layer in quantizable_layers(self):
                if isinstance(layer._dtype_policy, keras.dtype_policies.DTypePolicyMap):
                    layer._dtype_policy = layer._dtype_policy[layer.path]
        # Keras wraps `quantize` per instance with a check that knows only its
        # own modes ("mixed" is a recipe over them); use the method as defined.
        self.__dict__["quantize"] = type(self).quantize.__get__(self)

    @property
    def embedding_dim(self):
        """Size of the full embedding (768 for the published model)."""
        units = self.projection_head.units
        return units[-1] if units else self.backbone.hidden_dim

    # --- Inference ---------------------------------------------------------

    def encode(
        self,
        texts,
        task=None,
        dim=None,
        *,
        prompt=None,
        titles=None,
        batch_size=32,
        verbose="auto",
    ):
        """Embeds texts; returns a numpy float32 array of unit vectors.

        Args:
            texts: a string, or a list of strings.
            task: a prompt name from the model card / sentence-transformers
                table (`"query"`, `"document"`, `"STS"`, `"Clustering"`,
                `"question answering"`, ...), or `None` for no prompt.
            dim: Matryoshka size in `(0, embedding_dim]` (768, 512, 256 and
                128 are trained); `None` keeps all dimensions.
            prompt: a literal prefix instead of a named task.
            titles: document titles (see `encode_document`).
            batch_size: texts per forward pass.
            verbose: `"auto"` shows a progress bar when there is more than
                one batch; `True`/`False` force it on or off.

        Returns:
            `(len(texts), dim)` array, or `(dim,)` for a single string.

        Example:
        ```python
        x = model.encode(["a cat", "a dog"], task="STS", dim=256)
        ```
        """
        if self.preprocessor is None:
            raise ValueError(
                "This model has no preprocessor, so it cannot read text. Load it "
                "with `from_preset`, or pass `preprocessor=` when building it."
            )
        texts, single = check_texts(texts)
        if dim is not None:
            # Validate before spending a forward pass.
            matryoshka_truncate(np.zeros((1, self.embedding_dim), "float32"), dim)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        formatted = self.preprocessor.format_texts(
            texts, task=task, prompt=prompt, titles=titles
        )
        token_ids = self.preprocessor.tokenize_texts(formatted)
        embeddings = embed_token_ids(
            self,
            token_ids,
            pad_id=self.preprocessor.tokenizer.pad_token_id,
            max_length=self.preprocessor.sequence_length,
            batch_size=batch_size,
            verbose=verbose,
        )
        if dim is not None:
            embeddings = keras.ops.convert_to_numpy(matryoshka_truncate(embeddings, dim))
        embeddings = embeddings.astype("float32")
        return embeddings[0] if single else embeddings

    def encode_query(self, texts, dim=None, **kwargs):
        """Embeds search queries with the retrieval query prompt.

        `task: search result | query: {text}`. See `encode` for arguments.

        Example:
        ```python
        q = model.encode_query(["Which planet is known as the Red Planet?"])
        ```
        """
        return self.encode(texts, task="query", dim=dim, **kwargs)

    def encode_document(self, texts, titles=None, dim=None, **kwargs):
        """Embeds documents with the retrieval document prompt.

        `title: {title} | text: {text}`, with `title: none` when `titles` is
        `None` (or for each `None` title). See `encode` for arguments.

        Example:
        ```python
        d = model.encode_document(["Mars is red."], titles=["Mars"])
        ```
        """
        if titles is None:
            return self.encode(texts, task="document", dim=dim, **kwargs)
        text_list, single = check_texts(texts)
        if single:
            titles = [titles] if isinstance(titles, str) else titles
        out = self.encode(text_list, titles=titles, dim=dim, **kwargs)
        return out[0] if single else out

    def similarity(self, a, b):
        """Cosine similarity matrix between two sets of embeddings.

        Args:
            a: `(n, d)` or `(d,)` array; b: `(m, d)` or `(d,)` array.

        Returns:
            numpy float32 `(n, m)`.

        Example:
        ```python
        model.similarity(model.encode_query(q), model.encode_document(docs))
        ```
        """
        a = np.atleast_2d(np.asarray(keras.ops.convert_to_numpy(a), "float32"))
        b = np.atleast_2d(np.asarray(keras.ops.convert_to_numpy(b), "float32"))
        if a.shape[-1] != b.shape[-1]:
            raise ValueError(
                f"Embeddings of different sizes: {a.shape[-1]} and {b.shape[-1]}. "
                "Encode both with the same `dim`."
            )
        a = keras.ops.convert_to_numpy(l2_normalize(a))
        b = keras.ops.convert_to_numpy(l2_normalize(b))
        return (a @ b.T).astype("float32")

    # --- Training ----------------------------------------------------------

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        *,
        mrl_dims=(768, 512, 256, 128),
        temperature=0.05,
        hardness_alpha=5.0,
        include_positive_in_denominator=False,
        nce_weight=1.0,
        spread_out_weight=1.0,
        distillation_weight=1.0,
        distillation_distance="l2",
        teacher_dim=None,
        gradient_cache_chunk_size=None,
        **kwargs,
    ):
        """Configures training; with no arguments, the paper's objective.

        `loss="auto"` trains with NCE (in-batch and hardness-weighted hard
        negatives, duplicates masked) plus the spread-out regulariser, both
        summed over the Matryoshka sizes, plus embedding distillation when
        the data carries teacher embeddings (`keras_egemma.training.objective`).
        Any other `loss` is passed to `keras.Model.compile` unchanged, for
        training on token ids with your own targets.

        Args:
            optimizer: `"auto"` is Adam with learning rate 5e-5.
            mrl_dims: Matryoshka sizes (those above the embedding size are
                dropped), or `None` for the full size only.
            temperature, hardness_alpha, include_positive_in_denominator: NCE
                settings (`keras_egemma.losses.nce`).
            nce_weight, spread_out_weight, distillation_weight: weights of
                the three terms (the paper weighs them uniformly).
            distillation_distance: `"l2"`, `"cosine"` or `"mse"`.
            teacher_dim: size of the teacher embeddings in the data, when it
                differs from the model's: a learnable projection (trained with
                the model, unused at inference) maps student embeddings to it.
            gradient_cache_chunk_size: embed each batch in chunks of this many
                examples and backpropagate chunk by chunk (gradient caching,
                `keras_egemma.training.gradient_cache`): the same gradients
                with the activation memory of one chunk. Every backend.

        Example:
        ```python
        model.compile()                       # the paper's objective
        model.fit(examples, batch_size=32, epochs=1)
        ```
        """
        from keras_egemma.training.objective import EmbeddingGemmaObjective

        if gradient_cache_chunk_size is not None:
            if not isinstance(gradient_cache_chunk_size, int) or gradient_cache_chunk_size < 1:
                raise ValueError(
                    "gradient_cache_chunk_size must be a positive int, got "
                    f"{gradient_cache_chunk_size!r}."
                )
        self.gradient_cache_chunk_size = gradient_cache_chunk_size
        self._objective_config = {
            "mrl_dims": None if mrl_dims is None else list(mrl_dims),
            "temperature": temperature,
            "hardness_alpha": hardness_alpha,
            "include_positive_in_denominator": include_positive_in_denominator,
            "nce_weight": nce_weight,
            "spread_out_weight": spread_out_weight,
            "distillation_weight": distillation_weight,
            "distillation_distance": distillation_distance,
            "teacher_dim": teacher_dim,
            "gradient_cache_chunk_size": gradient_cache_chunk_size,
        }
        self.objective = None
        if isinstance(loss, str) and loss == "auto":
            objective_args = dict(self._objective_config)
            objective_args.pop("gradient_cache_chunk_size")
            self.objective = EmbeddingGemmaObjective(self.embedding_dim, **objective_args)
            projection = self.objective.distillation.projection
            if projection is not None:
                projection.build((None, self.embedding_dim))
                # An attribute, so the model tracks and trains its weights.
                self.distillation_projection = projection
            loss = None
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        if self.objective is not None:
            self._term_trackers = {
                name: keras.metrics.Mean(name=name) for name in ("nce", "spread_out")
            }

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config.update(self._objective_config)
            if self.objective is not None:
                config["loss"] = "auto"
            # Whether the saved file holds optimizer slots to restore.
            config["optimizer_built"] = bool(getattr(self.optimizer, "built", False))
        return config

    def compile_from_config(self, config):
        # `.keras` files restore the objective's settings and the optimizer.
        config = keras.saving.deserialize_keras_object(config)
        optimizer_built = config.pop("optimizer_built", False)
        self.compile(**config)
        if optimizer_built and self.built:
            self.optimizer.build(self.trainable_variables)

    def __call__(self, inputs, *args, **kwargs):
        # Training batches are a dict of text groups, which the functional
        # input checks would reject; `call` embeds each group.
        if isinstance(inputs, dict) and "query" in inputs:
            return self.call(inputs, training=kwargs.get("training"))
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if not (isinstance(inputs, dict) and "query" in inputs):
            return super().call(inputs, training=training, mask=mask)
        # Training batches: queries, positives and hard negatives (all packed
        # to one length) go through the encoder as one batch.
        parts = [inputs["query"], inputs["positive"]]
        negatives = inputs.get("negatives")
        if negatives is not None:
            batch, k, length = keras.ops.shape(negatives["token_ids"])
            parts.append({
                key: keras.ops.reshape(value, (batch * k, length))
                for key, value in negatives.items()
            })
        joined = {
            key: keras.ops.concatenate(
                [keras.ops.cast(part[key], "int32") for part in parts], axis=0
            )
            for key in ("token_ids", "padding_mask")
        }
        embeddings = super().call(joined, training=training)
        size = keras.ops.shape(inputs["query"]["token_ids"])[0]
        out = {"query": embeddings[:size], "positive": embeddings[size : 2 * size]}
        if negatives is not None:
            out["negatives"] = keras.ops.reshape(
                embeddings[2 * size :], (size, k, keras.ops.shape(embeddings)[-1])
            )
        return out

    def train_step(self, *args):
        if not getattr(self, "gradient_cache_chunk_size", None):
            return super().train_step(*args)
        from keras_egemma.training import gradient_cache

        step = getattr(gradient_cache, f"{keras.backend.backend()}_gradient_cache_train_step")
        return step(self, *args, self.gradient_cache_chunk_size)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if getattr(self, "objective", None) is None or not isinstance(y_pred, dict):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        from keras_egemma.training.distributed import gather_across_replicas
        from keras_egemma.training.distributed import num_replicas

        total, terms = self.objective(*gather_across_replicas((y, y_pred)))
        for name, value in terms.items():
            self._term_trackers[name].update_state(value)
        # Keras sums gradients over replicas and expects each replica's loss
        # to be its share of the global loss.
        return total / num_replicas()

    def _training_data(self, data, batch_size, sequence_length, query_task, document_task,
                       shuffle):
        from keras_egemma.training.data import as_training_dataset

        if self.preprocessor is None:
            raise ValueError("Training on text needs the model's preprocessor.")
        return as_training_dataset(
            data,
            self.preprocessor,
            batch_size=batch_size,
            sequence_length=sequence_length,
            query_task=query_task,
            document_task=document_task,
            shuffle=shuffle,
        )

    def fit(
        self,
        x=None,
        y=None,
        batch_size=32,
        epochs=1,
        *,
        validation_data=None,
        sequence_length=None,
        query_task="query",
        document_task="document",
        shuffle=True,
        **kwargs,
    ):
        """Trains on (query, positive, negatives, teacher) examples.

        Args:
            x: a list of example dicts, a generator (function or iterator) of
                them, or a `tf.data.Dataset` of them (batched or not). An
                example: `{"query": str, "positive": str, "negative": str or
                [str, ...] (optional), "teacher": {"query": (D,), "positive":
                (D,), "negative": (k, D)} (optional), "query_id"/"positive_id"
                (optional ints marking duplicates), "query_prompt"/
                "document_prompt" (optional per-example prompts, as
                `single_source_batches(..., tasks=...)` sets them)}`.
            y: must be `None` (targets come from the examples).
            batch_size: examples per batch (in-batch negatives). Default 32.
            epochs: passes over the data.
            validation_data: examples in the same forms, for `val_loss`.
            sequence_length: padded length of every text; defaults to the
                preprocessor's (shorter is much faster).
            query_task, document_task: prompt names for queries and for
                positives / negatives (retrieval query / document).
            shuffle: shuffle examples each epoch (Python lists and unbatched
                datasets). Use `False` with `single_source_batches`.
            **kwargs: passed to `keras.Model.fit` (callbacks, steps_per_epoch,
                initial_epoch, verbose, ...).

        Example:
        ```python
        model.compile()
        model.fit(
            [{"query": "red planet?", "positive": "Mars is red.",
              "negative": "Venus is hot."}, ...],
            batch_size=16, epochs=2, sequence_length=128,
        )
        ```
        """
        if getattr(self, "objective", None) is None:
            return super().fit(x, y, batch_size=batch_size, epochs=epochs,
                               validation_data=validation_data, **kwargs)
        if y is not None:
            raise ValueError("With the default objective, `y` must be None: targets come "
                             "from the examples.")
        prepare = lambda data, mix: self._training_data(  # noqa: E731
            data, batch_size, sequence_length, query_task, document_task, mix
        )
        train = prepare(x, shuffle)
        validation = None if validation_data is None else prepare(validation_data, False)
        if "teacher" in train.element_spec[1] and "distillation" not in self._term_trackers:
            self._term_trackers["distillation"] = keras.metrics.Mean(name="distillation")
        # Shuffling happened in the pipeline; Keras cannot shuffle a dataset.
        return keras.Model.fit(
            self, train, epochs=epochs, validation_data=validation, shuffle=False, **kwargs
        )

    # --- Quantization ------------------------------------------------------

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
                (like Q4_0/Q4_1), two values per byte. `"mixed"`: the paper's
                per-channel recipe: int8 for the attention projections, int4
                for the embedding table, feed-forward and projection head.
            config: not supported; the recipe is set by `mode` (use
                `keras.Model.quantize` on a sub-layer for custom quantizers).
            filters: not supported, for the same reason.
            block_size: inputs per int4 block (`mode="int4"`); must divide
                every layer's input size. Default 32.

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
        self._post_quantize(mode)

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
            mode: `"int8"`, `"int4"` or `"mixed"` (see `quantize`), or `None`
                to go back to the float forward.
            block_size: inputs per int4 block (`mode="int4"`). Default 32.

        Example:
        ```python
        model = EmbeddingGemma.from_preset("embeddinggemma_300m")
        model.quantize_aware("int4")
        model.compile()
        model.fit(examples, batch_size=32, sequence_length=128)
        model.quantize()          # int4, block 32: the deployable model
        ```
        """
        from keras_egemma.quantization.qat import disable_fake_quantization
        from keras_egemma.quantization.qat import enable_fake_quantization

        if mode is None:
            disable_fake_quantization(self)
            self.quantization_aware = None
        else:
            self.quantization_aware = enable_fake_quantization(self, mode, block_size)
        # Compiled functions traced the previous forward.
        self.__dict__.pop("_inference_function", None)
        self.train_function = self.test_function = self.predict_function = None

    # --- Presets -----------------------------------------------------------

    @classmethod
    def from_preset(cls, preset, load_weights=True, dtype=None, **kwargs):
        """Loads a model from a name, a directory or a hub handle.

        Resolved automatically:
        - a registered name (`keras_egemma.presets.list_presets()`), e.g.
          `"embeddinggemma_300m"` (the published model) or the bundled small
          `"embeddinggemma_tiny"`;
        - a preset directory saved by `save_to_preset`;
        - a Hugging Face / sentence-transformers checkpoint folder
          (`config.json` + `model.safetensors` + tokenizer + `2_Dense`/`3_Dense`)
          or an `hf://owner/name` handle;
        - a KerasHub `Gemma3Backbone(is_embedding_model=True)` preset folder or
          its `kaggle://...` handle.

        Weights are read from safetensors or `.weights.h5` only; nothing is
        unpickled.

        Args:
            preset: name, path or handle.
            load_weights: `False` builds the architecture with random weights.
            dtype: `"float32"` (default) or `"bfloat16"`.

        Example:
        ```python
        model = EmbeddingGemma.from_preset("hf://google/embeddinggemma-300m")
        ```
        """
        from keras_egemma.convert.loading import load_embedding_gemma

        check_dtype(dtype)
        return load_embedding_gemma(
            cls, preset, load_weights=load_weights, dtype=dtype, **kwargs
        )

    @classmethod
    def from_decoder(cls, source, **kwargs):
        """A new embedding model initialised from a decoder-only Gemma 3.

        The transformer of a Hugging Face `Gemma3ForCausalLM` /
        `Gemma3TextModel` folder or a KerasHub `Gemma3Backbone` preset, its
        attention made bidirectional, with a new pooler and projection head
        (the "Gemma 3 decoder" initialisation of the paper's Table 2). See
        `keras_egemma.convert.initialization.embedding_gemma_from_decoder` for
        the arguments (`projection_units`, `sliding_window`, `seed`, ...).

        Example:
        ```python
        model = EmbeddingGemma.from_decoder("./gemma-3-270m", seed=0)
        ```
        """
        from keras_egemma.convert.initialization import embedding_gemma_from_decoder

        return embedding_gemma_from_decoder(source, **kwargs)

    @classmethod
    def from_t5gemma(cls, source, **kwargs):
        """A new embedding model from the text encoder of a T5Gemma 2 checkpoint.

        The paper's initialisation (Table 2): Gemma 3 adapted to an
        encoder-decoder, then its encoder kept. See
        `keras_egemma.convert.initialization.embedding_gemma_from_t5gemma`.

        Example:
        ```python
        model = EmbeddingGemma.from_t5gemma("./t5gemma-2-270m-270m", seed=0)
        ```
        """
        from keras_egemma.convert.initialization import embedding_gemma_from_t5gemma

        return embedding_gemma_from_t5gemma(source, **kwargs)

    @classmethod
    def _from_keras_preset(cls, preset, **kwargs):
        """KerasHub's own preset loading, for presets saved by this library."""
        return super().from_preset(preset, **kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """Saves the model, its tokenizer and its prompts to a preset folder.

        The files are written to a temporary folder beside `preset_dir` and
        moved into place once complete, so an interrupted save leaves the old
        preset (or nothing), never a mix. An existing `preset_dir` is replaced
        if it is empty or a preset saved by this library; any other existing
        path raises `ValueError` and is left untouched.

        Args:
            preset_dir: folder to write.
            max_shard_size: largest weights file in GB before KerasHub shards.

        Example:
        ```python
        model.save_to_preset("./my_embeddinggemma")
        EmbeddingGemma.from_preset("./my_embeddinggemma")
        ```
        """
        from keras_egemma.convert.mapped_weights import zero_copy_weight_files
        from keras_egemma.convert.packed_int4 import int4_weights_left_packed
        from keras_egemma.convert.saving import save_atomically

        def save(folder):
            # Large tensors on page boundaries: JAX maps them when loading.
            with zero_copy_weight_files(), int4_weights_left_packed():
                super(EmbeddingGemma, self).save_to_preset(folder, max_shard_size=max_shard_size)

        save_atomically(save, preset_dir)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pooling": self.pooling,
                "projection_units": list(self.projection_units),
                "attention_pooling_heads": self.attention_pooling_heads,
            }
        )
        if self.quantization is not None:
            default = self.backbone.dtype_policy
            # A quantized backbone loaded from a preset holds a policy map.
            default = getattr(default, "default_policy", default)
            head_policies = keras.dtype_policies.DTypePolicyMap(default)
            for layer in self.projection_head.dense_layers:
                head_policies[layer.path] = layer.dtype_policy
            config["quantization"] = dict(self.quantization)
            config["projection_dtype"] = keras.dtype_policies.serialize(head_policies)
        return config
