"""An Apache Beam `RunInference` model handler for EmbeddingGemma."""

import apache_beam.ml.inference.base as beam_inference

from keras_egemma import _quiet
from keras_egemma.models.embedding_gemma import EmbeddingGemma

# Texts in one RunInference batch. `encode` sorts each batch by length and
# pads every forward pass only to its own bucket, so a large batch groups
# texts of similar length; forward passes stay at `batch_size` rows.
MAX_BATCH_TEXTS = 1024


class EmbeddingGemmaModelHandler(beam_inference.ModelHandler):
    """Embeds rows of text in a Beam pipeline with `EmbeddingGemma.encode`.

    The model is loaded once per worker process (`load_model`, which
    RunInference calls once and keeps), or once per machine with
    `share_model_across_processes=True`: then every SDK process on the
    machine sends its batches to one model (one copy of the weights, as on
    an accelerator, at the cost of moving texts and embeddings between
    processes).

    Elements are dicts `{"id": str, "text": str}`, with an optional
    `"title"` (str or None) used with `task="document"`, as in
    `encode_document`. Each prediction is a dict
    `{"id": str, "embedding": float32 array (dim,)}`, a unit vector equal to
    what `encode` gives for the same text.

    Args:
        preset: a preset name, folder or handle (`EmbeddingGemma.from_preset`);
            every worker must be able to read it.
        task: a prompt name (`"query"`, `"document"`, ...), or `None`.
        prompt: a literal prefix instead of `task`.
        dim: Matryoshka size, or `None` for the full size.
        dtype: weights and compute dtype (default: the preset's).
        batch_size: texts per forward pass.
        max_batch_texts: the most texts in one RunInference batch (sorted by
            length within it).
        share_model_across_processes: one model per machine instead of one
            per process.

    Example:
    ```python
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference

    handler = EmbeddingGemmaModelHandler("embeddinggemma_mini", task="document")
    with beam.Pipeline() as p:
        rows = p | beam.Create([{"id": "a", "text": "Mars is red."}])
        embeddings = rows | RunInference(handler)
    ```
    """

    def __init__(
        self,
        preset,
        *,
        task=None,
        prompt=None,
        dim=None,
        dtype=None,
        batch_size=32,
        max_batch_texts=MAX_BATCH_TEXTS,
        share_model_across_processes=False,
    ):
        if task is not None and prompt is not None:
            raise ValueError("Pass at most one of `task` and `prompt`.")
        for name, value in (("batch_size", batch_size), ("max_batch_texts", max_batch_texts)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        super().__init__(
            # Fixed-size batches (a bundle's last one excepted): Beam's adaptive
            # sizes, starting at 1, would give forward passes of many more shapes,
            # each compiled anew.
            min_batch_size=max_batch_texts,
            max_batch_size=max_batch_texts,
            large_model=share_model_across_processes,
        )
        self._preset = preset
        self._task = task
        self._prompt = prompt
        self._dim = dim
        self._dtype = dtype
        self._batch_size = batch_size

    def load_model(self):
        # tensorflow-text's SentencePiece logs a line as the tokenizer loads.
        with _quiet.native_logs_dropped():
            return EmbeddingGemma.from_preset(self._preset, dtype=self._dtype)

    def run_inference(self, batch, model, inference_args=None):
        texts = [row["text"] for row in batch]
        prompt = {"task": self._task, "prompt": self._prompt}
        if self._task == "document" and any(row.get("title") for row in batch):
            prompt = {"titles": [row.get("title") for row in batch]}
        embeddings = model.encode(
            texts, dim=self._dim, batch_size=self._batch_size, verbose=False, **prompt
        )
        return [{"id": row["id"], "embedding": vector} for row, vector in zip(batch, embeddings)]

    def get_num_bytes(self, batch):
        return sum(len(row["text"].encode("utf-8")) for row in batch)

    def get_metrics_namespace(self):
        return "keras_egemma"
