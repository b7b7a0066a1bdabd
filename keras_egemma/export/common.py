"""Helpers shared by the exporters: input specs, Matryoshka heads, backend checks."""

import keras
import numpy as np

from keras_egemma.layers.matryoshka import MatryoshkaTruncation
from keras_egemma.layers.matryoshka import matryoshka_truncate
from keras_egemma.models.embedding_gemma import EmbeddingGemma
from keras_egemma.models.preprocessor import check_texts

INPUT_NAMES = ("token_ids", "padding_mask")

# What to say when a format cannot be written from the current backend.
SWITCH_BACKEND = (
    "The weights are the same on every backend: save the model with "
    "`model.save_to_preset(folder)`, then export from a process started with "
    "`KERAS_BACKEND={backend}` (Keras reads the backend once, at import)."
)


def check_model(model):
    """Refuses anything but a built `EmbeddingGemma`-like Keras model."""
    if not isinstance(model, EmbeddingGemma):
        raise TypeError(
            "Export takes a `keras_egemma.EmbeddingGemma` model, got "
            f"{type(model).__name__}. Load one with `EmbeddingGemma.from_preset(...)`."
        )


def check_dim(model, dim):
    """Validates a Matryoshka size against the model (`None` keeps all)."""
    if dim is not None:
        matryoshka_truncate(np.zeros((1, model.embedding_dim), "float32"), dim)


def check_length(name, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{name}` must be a positive int or None, got {value!r}.")


def embedding_model(model, dim=None):
    """The Keras model to export: token ids in, (truncated) unit embeddings out.

    `model` itself when `dim` is `None`; otherwise a functional model sharing
    its layers and weights with a `MatryoshkaTruncation` on top, so every
    format computes the truncation and re-normalisation inside the graph.
    """
    check_dim(model, dim)
    if dim is None or dim == model.embedding_dim:
        return model
    outputs = MatryoshkaTruncation(dim, name="matryoshka_truncation")(model.output)
    return keras.Model(inputs=model.input, outputs=outputs, name=f"{model.name}_dim{dim}")


def token_input_signature(batch_size=None, sequence_length=None):
    """`[{"token_ids", "padding_mask"}]` int32 specs, named for the artifacts' inputs.

    A `None` dimension stays dynamic where the backend allows it.
    """
    shape = (batch_size, sequence_length)
    return [{name: keras.InputSpec(shape=shape, dtype="int32", name=name) for name in INPUT_NAMES}]


def require_static_shapes(fmt, batch_size, sequence_length):
    """JAX and PyTorch exporters trace one fixed shape; say so instead of guessing 1."""
    backend = keras.backend.backend()
    if backend != "tensorflow" and (batch_size is None or sequence_length is None):
        raise ValueError(
            f"{fmt} export from the {backend} backend needs fixed shapes: pass both "
            f"`batch_size=` and `sequence_length=` (got batch_size={batch_size!r}, "
            f"sequence_length={sequence_length!r}) and pad every input to them. Only the "
            "TensorFlow backend exports dynamic shapes. "
            + SWITCH_BACKEND.format(backend="tensorflow")
        )


def prepare_inputs(model, texts, sequence_length, task=None, *, prompt=None, batch_size=None):
    """Prompts, tokenises and pads texts to the fixed shapes of an exported model.

    For the LiteRT and ONNX artifacts, which take token ids: the same ids as
    `model.encode` uses (`<bos>` + tokens + `<eos>`, truncated to
    `sequence_length`), right-padded with `<pad>`.

    Args:
        model: the `EmbeddingGemma` that was exported (for its tokenizer and prompts).
        texts: a string or a list of strings.
        sequence_length: the exported length (every row is padded to it).
        task: prompt name (`"query"`, `"document"`, ...), or `None` for none.
        prompt: a literal prefix instead of `task`.
        batch_size: pad the batch with empty rows up to this many (for an
            artifact with a fixed batch size); `None` keeps `len(texts)` rows.

    Returns:
        `{"token_ids": (rows, sequence_length) int32, "padding_mask": (rows,
        sequence_length) int32}` numpy arrays.

    Example:
    ```python
    inputs = prepare_inputs(model, ["Which planet is red?"], 128, task="query")
    ```
    """
    texts, _ = check_texts(texts)
    check_length("sequence_length", sequence_length)
    if sequence_length is None or sequence_length < 2:
        raise ValueError(f"`sequence_length` must be at least 2, got {sequence_length!r}.")
    rows = len(texts) if batch_size is None else batch_size
    if rows < len(texts):
        raise ValueError(f"Got {len(texts)} texts for a fixed batch_size of {batch_size}.")
    preprocessor = model.preprocessor
    formatted = preprocessor.format_texts(texts, task=task, prompt=prompt)
    ids = preprocessor.tokenize_texts(formatted)
    tokenizer = preprocessor.tokenizer
    token_ids = np.full((rows, sequence_length), tokenizer.pad_token_id, "int32")
    padding_mask = np.zeros((rows, sequence_length), "int32")
    for row, row_ids in enumerate(ids):
        if len(row_ids) > sequence_length:
            # Cut the text, keep `<eos>`, as `model.encode` does.
            row_ids = row_ids[: sequence_length - 1] + row_ids[-1:]
        token_ids[row, : len(row_ids)] = row_ids
        padding_mask[row, : len(row_ids)] = 1
    return {"token_ids": token_ids, "padding_mask": padding_mask}
