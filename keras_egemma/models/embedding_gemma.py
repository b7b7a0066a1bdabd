import keras
import numpy as np
from keras_hub.models import TextEmbedder

from keras_egemma import _keras_compat
from keras_egemma.io.model_presets import PresetMethods
from keras_egemma.layers.l2_normalization import l2_normalize
from keras_egemma.layers.matryoshka import check_matryoshka_dim
from keras_egemma.layers.matryoshka import matryoshka_truncate
from keras_egemma.layers.poolers import get_pooler
from keras_egemma.layers.projection_head import EmbeddingProjectionHead
from keras_egemma.models.backbone import EmbeddingGemmaBackbone
from keras_egemma.models.batching import embed_token_ids
from keras_egemma.models.preprocessor import EmbeddingGemmaPreprocessor
from keras_egemma.models.preprocessor import check_texts
from keras_egemma.quantization.model_quantization import QuantizationMethods
from keras_egemma.quantization.model_quantization import give_layers_own_policies
from keras_egemma.quantization.weight_quantization import check_saved_quantization
from keras_egemma.training.lora import LoraMethods
from keras_egemma.training.model_training import TrainingMethods


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingGemma(
    TrainingMethods, LoraMethods, QuantizationMethods, PresetMethods, TextEmbedder
):
    """EmbeddingGemma: text in, L2-normalised embeddings out.

    Backbone (token embeddings) -> pooler (masked mean for the published
    model) -> projection head (768 -> 3072 -> 768, no bias) -> L2 norm. The
    `encode*` methods add the task prompt, tokenise, batch texts of similar
    length together, and return numpy float32 arrays, optionally truncated
    to a Matryoshka size and re-normalised.

    This file holds the graph and inference; training (`compile`, `fit`),
    LoRA (`enable_lora`, `save_lora_weights`, `load_lora_weights`),
    quantization (`quantize`, `quantize_aware`) and presets (`from_preset`,
    `save_to_preset`, `from_decoder`, `from_t5gemma`) come from
    `keras_egemma.training.model_training`, `keras_egemma.training.lora`,
    `keras_egemma.quantization.model_quantization` and
    `keras_egemma.io.model_presets`.

    Args:
        backbone: an `EmbeddingGemmaBackbone`, or an `EmbeddingGemma2Backbone`
            (EmbeddingGemma 2, whose embedding projection is the head's first
            layer).
        preprocessor: an `EmbeddingGemmaPreprocessor`, or `None` to call the
            model on token ids directly.
        pooling: `"mean"` (published), `"first"`, `"last"` or `"attention"`.
        projection_units: widths of the bias-free dense layers after pooling.
            Defaults to `(3072, 768)`.
        attention_pooling_heads: heads of the `"attention"` pooler.
        matryoshka_dims: the Matryoshka sizes the model is trained for, to
            name in errors (`None`: not recorded).

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
        matryoshka_dims=None,
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
        self.matryoshka_dims = None if matryoshka_dims is None else tuple(matryoshka_dims)
        self.quantization = quantization
        if quantization is not None:
            give_layers_own_policies(self)
        # Keras' per-instance `quantize` check knows only its own modes
        # ("mixed" is a recipe over them).
        _keras_compat.use_class_quantize(self)

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
            dim: Matryoshka size in `(0, embedding_dim]` (the trained ones:
                `matryoshka_dims`; 768, 512, 256 and 128 for the published
                model); `None` keeps all dimensions.
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
            check_matryoshka_dim(dim, self.embedding_dim, self.matryoshka_dims)
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

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pooling": self.pooling,
                "projection_units": list(self.projection_units),
                "attention_pooling_heads": self.attention_pooling_heads,
            }
        )
        if self.matryoshka_dims is not None:
            config["matryoshka_dims"] = list(self.matryoshka_dims)
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
