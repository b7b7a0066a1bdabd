"""An encoder the `mteb` package accepts (its `EncoderProtocol`)."""

import numpy as np

# mteb task types -> this model's prompt names. Retrieval-like tasks use the
# query / document prompts according to mteb's `prompt_type`.
RETRIEVAL_TYPES = {"Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking"}


class MTEBEncoder:
    """Wraps an `EmbeddingGemma` for `mteb.evaluate`, with the model card's prompts.

    Retrieval and reranking tasks embed queries with the query prompt and
    documents with `title: {title} | text: ` (mteb gives titles
    separately); every other task type uses the prompt of the same name
    (`STS`, `Clustering`, `Classification`, `BitextMining`, ...).

    Args:
        model: an `EmbeddingGemma`.
        dim: Matryoshka size, or `None` for the full size.
        name: the model name recorded in mteb's results ("org/name").
        batch_size: texts per forward pass.

    Example:
    ```python
    import mteb
    encoder = MTEBEncoder(eg.EmbeddingGemma.from_preset("embeddinggemma_300m"), dim=256)
    results = mteb.evaluate(encoder, mteb.get_tasks(tasks=["STSBenchmark"]))
    ```
    """

    def __init__(self, model, dim=None, name="keras_egemma/embeddinggemma", batch_size=32):
        self.model = model
        self.dim = dim
        self.name = name
        self.batch_size = batch_size

    @property
    def mteb_model_meta(self):
        from mteb.models.model_meta import ModelMeta

        return ModelMeta.create_empty({
            "name": self.name,
            "revision": "local",
            "embed_dim": self.dim or self.model.embedding_dim,
            "similarity_fn_name": "cosine",
            "framework": ["Keras"],
        })

    def get_config(self):
        return {"dim": self.dim, "name": self.name, "batch_size": self.batch_size}

    def encode(self, inputs, *, task_metadata, hf_split=None, hf_subset=None, prompt_type=None,
               **kwargs):
        texts, titles = [], []
        for batch in inputs:
            texts += list(batch["body"] if "body" in batch else batch["text"])
            titles += list(batch.get("title") or [None] * (len(texts) - len(titles)))
        if not texts:
            return np.zeros((0, self.dim or self.model.embedding_dim), "float32")
        kind = getattr(prompt_type, "value", prompt_type)
        common = dict(dim=self.dim, batch_size=self.batch_size, verbose=False)
        if task_metadata.type in RETRIEVAL_TYPES or kind is not None:
            if kind == "document":
                return self.model.encode_document(texts, titles=[t or None for t in titles],
                                                  **common)
            return self.model.encode(texts, task="query", **common)
        return self.model.encode(texts, task=task_metadata.type, **common)

    def similarity(self, embeddings1, embeddings2):
        return self.model.similarity(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1, embeddings2):
        a = np.atleast_2d(np.asarray(embeddings1, "float32"))
        b = np.atleast_2d(np.asarray(embeddings2, "float32"))
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return (a * b).sum(1)
