"""ONNX export: token ids in, normalised embeddings out."""

import contextlib
import importlib.util

import keras

from keras_egemma import _keras_compat
from keras_egemma.export.common import check_dim
from keras_egemma.export.common import check_length
from keras_egemma.export.common import check_model
from keras_egemma.export.common import embedding_model
from keras_egemma.export.common import require_static_shapes
from keras_egemma.export.common import token_input_signature

# The converter each backend's ONNX export goes through (Keras 3.15).
_CONVERTERS = {
    "tensorflow": ("tf2onnx", "tf2onnx onnx"),
    "jax": ("jax2onnx", "jax2onnx"),
    "torch": ("onnxscript", "onnxscript onnx"),
}


def export_onnx(
    model,
    path,
    sequence_length=None,
    dim=None,
    *,
    batch_size=None,
    opset_version=None,
    verbose=False,
):
    """Exports the encoder as an ONNX model (Keras `format="onnx"`).

    Inputs are token ids, not strings (tokenise on the host, e.g. with
    `keras_egemma.export.prepare_inputs`): ONNX has no SentencePiece operator
    in its standard domain.

    Graph: `token_ids`, `padding_mask` `(batch, length)` int32 ->
    `(batch, dim)` float32, unit norm.

    Backends: TensorFlow (tf2onnx; `None` sizes stay dynamic), JAX (jax2onnx)
    and PyTorch (the dynamo exporter); the last two trace one fixed shape, so
    they need `batch_size` and `sequence_length`.

    Args:
        model: an `EmbeddingGemma`.
        path: output `.onnx` file.
        sequence_length: padded input length, or `None` for dynamic
            (TensorFlow only). Texts beyond it are cut.
        dim: Matryoshka size, or `None` for the full embedding.
        batch_size: fixed number of rows, or `None` for dynamic (TensorFlow only).
        opset_version: ONNX opset, or `None` for the converter's default.
        verbose: print Keras' messages.

    Example:
    ```python
    export_onnx(model, "embedder.onnx", dim=256)

    import onnxruntime
    session = onnxruntime.InferenceSession("embedder.onnx")
    inputs = prepare_inputs(model, ["Which planet is red?"], 64, task="query")
    session.run(None, inputs)[0]  # (1, 256)
    ```
    """
    check_model(model)
    check_dim(model, dim)
    check_length("sequence_length", sequence_length)
    check_length("batch_size", batch_size)
    require_static_shapes("ONNX", batch_size, sequence_length)
    backend = keras.backend.backend()
    module, packages = _CONVERTERS[backend]
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"ONNX export from the {backend} backend needs `pip install {packages}` "
            "(or `pip install keras-egemma[export]`)."
        )
    arange_fix = (
        _keras_compat.jax_arange_with_explicit_start()
        if backend == "jax"
        else contextlib.nullcontext()
    )
    with arange_fix:
        embedding_model(model, dim).export(
            str(path),
            format="onnx",
            input_signature=token_input_signature(batch_size, sequence_length),
            opset_version=opset_version,
            verbose=verbose,
        )


