"""TensorFlow SavedModel export: raw strings in, normalised embeddings out."""

import keras

from keras_egemma.export.common import SWITCH_BACKEND
from keras_egemma.export.common import check_dim
from keras_egemma.export.common import check_model
from keras_egemma.export.common import embedding_model
from keras_egemma.export.common import token_input_signature

STRING_ENDPOINT = "serve"
TOKEN_ENDPOINT = "embed_token_ids"


def export_saved_model(model, path, task="document", dim=None, *, prompt=None, verbose=False):
    """Exports `model` as a TensorFlow SavedModel that embeds raw strings.

    The artifact prepends the task prompt, tokenises with tensorflow-text's
    SentencePiece op, packs `<bos>` + tokens + `<eos>` (truncated to the
    preprocessor's `sequence_length`, padded to the longest text of the
    batch), runs the encoder and returns unit-norm embeddings, equal to
    `model.encode(texts, task=task, dim=dim)`. Load it in TensorFlow alone
    (no Keras, no keras_egemma), after `import tensorflow_text` to register
    the SentencePiece op.

    Endpoints (also the signatures, for TF Serving):
    - `serve` and `serving_default`: `texts` `(batch,)` string ->
      `(batch, dim)` float32.
    - `embed_token_ids`: `{"token_ids", "padding_mask"}` `(batch, length)`
      int32 -> `(batch, dim)` float32 (no prompt, no tokenisation).

    Backends: TensorFlow (a TF graph) and JAX (through `jax2tf`; the encoder
    is stored as StableHLO lowered for the platform it was exported on, so a
    CPU export serves on CPU). Not PyTorch: Keras exports PyTorch models
    through torch_xla's StableHLO bridge, which takes no dict inputs.

    Args:
        model: an `EmbeddingGemma` with its preprocessor.
        path: output folder.
        task: prompt name baked into `serve` (`"document"`, `"query"`,
            `"STS"`, ... as in `model.encode`), or `None` for no prompt.
        dim: Matryoshka size in `(0, embedding_dim]` (truncate, then
            re-normalise), or `None` for the full embedding.
        prompt: a literal prefix baked in instead of `task`'s prompt.
        verbose: print Keras' summary of the endpoints.

    Example:
    ```python
    export_saved_model(model, "./embedder", task="query", dim=256)

    import tensorflow as tf
    import tensorflow_text  # registers the SentencePiece op
    embedder = tf.saved_model.load("./embedder")
    embedder.serve(tf.constant(["Which planet is red?"]))  # (1, 256)
    ```
    """
    check_model(model)
    check_dim(model, dim)
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ValueError(
            f"A TensorFlow SavedModel cannot be exported from the {backend} backend: Keras "
            "converts PyTorch models through torch_xla (a separate install tied to one "
            "PyTorch release), and that path takes no dict inputs such as this model's "
            "token ids and padding mask. Export it from the TensorFlow or JAX backend. "
            + SWITCH_BACKEND.format(backend="tensorflow")
        )
    if model.preprocessor is None:
        raise ValueError(
            "This model has no preprocessor, so the SavedModel could not tokenise strings. "
            "Load the model with `from_preset`, or pass `preprocessor=` when building it."
        )
    if task is not None and prompt is None:
        prompt = model.preprocessor.prompt_for(task)
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"`prompt` must be a string, got {type(prompt).__name__}.")

    exported = embedding_model(model, dim)
    archive = keras.export.ExportArchive()
    kwargs = {}
    if backend == "jax":
        # jax2tf names each unknown dimension on its own; the mask and the
        # ids share their length, which the attention's broadcasts need.
        shape = "(batch, length)"
        kwargs["jax2tf_kwargs"] = {
            "polymorphic_shapes": [{"token_ids": shape, "padding_mask": shape}]
        }
    embed = archive.track_and_add_endpoint(
        TOKEN_ENDPOINT, exported, token_input_signature(), **kwargs
    )
    serve = _string_function(embed, model.preprocessor, prompt or "")
    archive.add_endpoint(STRING_ENDPOINT, serve)
    # TF Serving's default signature is the first endpoint unless one is named so.
    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(path), verbose=verbose)


def _string_function(embed, preprocessor, prompt):
    """A traced `tf.function`: `(batch,)` strings -> embeddings via `embed`."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    tokenizer = preprocessor.tokenizer
    proto = tokenizer.proto
    budget = preprocessor.sequence_length - 2
    start, end, pad = tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    def serve(texts):
        # Built inside the function, so the SentencePiece resource belongs to
        # the exported graph and is rebuilt from the model proto stored in it
        # when the SavedModel is loaded (see `EmbeddingGemmaTokenizer._tokenize_tf`).
        sentence_piece = tf_text.SentencepieceTokenizer(model=proto, out_type=tf.int32)
        pieces = sentence_piece.tokenize(tf.strings.join([prompt, texts]))
        # As `EmbeddingGemmaPreprocessor.tokenize_texts`: cut the text, keep
        # `<bos>` and `<eos>`.
        pieces = pieces[:, :budget]
        rows = pieces.nrows()
        ids = tf.concat([tf.fill([rows, 1], start), pieces, tf.fill([rows, 1], end)], axis=1)
        # Padded to the batch's longest text: the masked mean ignores padding.
        token_ids = ids.to_tensor(default_value=pad)
        padding_mask = tf.sequence_mask(ids.row_lengths(), tf.shape(token_ids)[1], dtype=tf.int32)
        return embed({"token_ids": token_ids, "padding_mask": padding_mask})

    serve.get_concrete_function()
    return serve
