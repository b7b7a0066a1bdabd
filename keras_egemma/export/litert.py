"""LiteRT (TensorFlow Lite) export: token ids in, normalised embeddings out."""

import importlib.util

import keras

from keras_egemma.export.common import SWITCH_BACKEND
from keras_egemma.export.common import check_dim
from keras_egemma.export.common import check_length
from keras_egemma.export.common import check_model
from keras_egemma.export.common import embedding_model
from keras_egemma.export.common import require_static_shapes
from keras_egemma.export.common import token_input_signature


def export_litert(model, path, sequence_length, dim=None, *, batch_size=None, verbose=False):
    """Exports the encoder as a LiteRT `.tflite` flatbuffer (Keras `format="litert"`).

    Inputs are token ids, not strings: LiteRT's built-in ops have no
    SentencePiece tokenizer (tensorflow-text's op is a TensorFlow custom op
    that the LiteRT runtime cannot run), so tokenise on the host, e.g. with
    `keras_egemma.export.prepare_inputs` or any SentencePiece binding with
    the model's vocabulary, and pad to `sequence_length`.

    Signature `serving_default`: `token_ids`, `padding_mask` `(batch,
    sequence_length)` int32 -> `(batch, dim)` float32, unit norm (from the
    PyTorch backend the inputs are named `args_0_token_ids` and
    `args_0_padding_mask`).

    Backends: TensorFlow (TF Lite converter; `batch_size=None` keeps the batch
    dynamic) and PyTorch (needs `pip install litert-torch`; fixed
    `batch_size`). Not JAX: Keras has no LiteRT path from JAX.

    Args:
        model: an `EmbeddingGemma`.
        path: output file, ending in `.tflite`.
        sequence_length: padded input length (special tokens included).
            Shorter is faster; texts beyond it are cut.
        dim: Matryoshka size, or `None` for the full embedding.
        batch_size: fixed number of rows, or `None` for dynamic (TensorFlow).
        verbose: print Keras' messages.

    Example:
    ```python
    export_litert(model, "embedder.tflite", sequence_length=256, dim=256)

    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter(model_path="embedder.tflite").get_signature_runner()
    inputs = prepare_inputs(model, ["Which planet is red?"], 256, task="query")
    runner(**inputs)["output_0"]  # (1, 256)
    ```
    """
    check_model(model)
    check_dim(model, dim)
    check_length("sequence_length", sequence_length)
    check_length("batch_size", batch_size)
    if sequence_length is None:
        raise ValueError("`sequence_length` is required: LiteRT models take fixed-length inputs.")
    if not str(path).endswith(".tflite"):
        raise ValueError(f"The LiteRT file name must end with '.tflite', got {str(path)!r}.")
    backend = keras.backend.backend()
    if backend == "jax":
        raise ValueError(
            "LiteRT export is not available from the JAX backend (Keras converts from "
            "TensorFlow or PyTorch only). " + SWITCH_BACKEND.format(backend="tensorflow")
        )
    if backend == "torch":
        require_static_shapes("LiteRT", batch_size, sequence_length)
        if importlib.util.find_spec("litert_torch") is None:
            raise ImportError(
                "LiteRT export from the PyTorch backend needs the `litert-torch` package "
                "(`pip install litert-torch`), or export from the TensorFlow backend, which "
                "needs nothing more. " + SWITCH_BACKEND.format(backend="tensorflow")
            )
    embedding_model(model, dim).export(
        str(path),
        format="litert",
        input_signature=token_input_signature(batch_size, sequence_length),
        verbose=verbose,
    )
