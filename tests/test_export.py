"""Export to SavedModel, LiteRT and ONNX, each artifact run in its own runtime.

Every format is exported once per backend (module-scoped fixtures) from the
bundled tiny preset and compared with `model.encode` on the same texts.
Formats a backend cannot write are checked for their error instead.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma import export

BACKEND = keras.backend.backend()
# Exported artifacts agree with the Keras model to float32 rounding.
MIN_COSINE = 0.9999
MAX_DIFFERENCE = 1e-5
SEQUENCE_LENGTH = 128  # Above the tiny preset's band threshold (window 64).
BATCH_SIZE = 4

# Fit in SEQUENCE_LENGTH tokens with the prompt, so the token formats see
# exactly what `encode` sees.
SHORT_TEXTS = [
    "Which planet is known as the Red Planet?",
    "",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet. " * 2,
]
# The SavedModel also gets a text past the preprocessor's 512 tokens (cut
# inside the graph as `encode` cuts it) and non-ASCII text.
STRING_TEXTS = SHORT_TEXTS + ["word " * 700, "héllo wörld, 日本語のテキスト"]


def cosines(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def assert_matches(actual, expected):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.isfinite(actual).all()
    assert cosines(actual, expected).min() >= MIN_COSINE, cosines(actual, expected)
    # Measured: under 4e-7 on every backend and format.
    np.testing.assert_allclose(actual, expected, atol=MAX_DIFFERENCE)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=-1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def model():
    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")


# --- SavedModel ------------------------------------------------------------

# Run in a fresh interpreter with TensorFlow and tensorflow-text only: the
# artifact must not need Keras or this library. `tf.random.set_seed` clears
# TF's eager kernel cache, which would drop an eagerly built SentencePiece
# resource; the exported graph builds its own.
STANDALONE_SAVED_MODEL = """
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # registers the SentencePiece op

path, texts, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
loaded = tf.saved_model.load(path)
tf.random.set_seed(0)
tokens = np.load(out + ".inputs.npz")
np.savez(
    out,
    serve=loaded.serve(tf.constant(texts)).numpy(),
    default=loaded.signatures["serving_default"](texts=tf.constant(texts))["output_0"].numpy(),
    tokens=loaded.embed_token_ids({k: tf.constant(v) for k, v in tokens.items()}).numpy(),
    signatures=sorted(loaded.signatures),
    imported=sorted(m for m in ("keras_egemma", "keras_hub") if m in sys.modules),
)
"""


@pytest.fixture(scope="module")
def saved_model_outputs(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved_model")
    export.export_saved_model(model, folder / "embedder", task="query", dim=64)
    inputs = export.prepare_inputs(model, SHORT_TEXTS, SEQUENCE_LENGTH, task="STS")
    out = str(folder / "outputs.npz")
    np.savez(out + ".inputs.npz", **inputs)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            STANDALONE_SAVED_MODEL,
            str(folder / "embedder"),
            json.dumps(STRING_TEXTS),
            out,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.skipif(BACKEND == "torch", reason="no SavedModel export from PyTorch")
def test_saved_model_embeds_raw_strings_like_encode(model, saved_model_outputs):
    with pytest.warns(UserWarning, match="truncated"):
        expected = model.encode(STRING_TEXTS, task="query", dim=64)
    assert_matches(saved_model_outputs["serve"], expected)
    assert_matches(saved_model_outputs["default"], expected)
    # The prompt chosen at export time is the one applied.
    other_prompt = model.encode(STRING_TEXTS, task="document", dim=64)
    assert cosines(saved_model_outputs["serve"], other_prompt).min() < MIN_COSINE
    assert {"serve", "serving_default", "embed_token_ids"} <= set(saved_model_outputs["signatures"])
    assert saved_model_outputs["imported"].size == 0


@pytest.mark.skipif(BACKEND == "torch", reason="no SavedModel export from PyTorch")
def test_saved_model_token_endpoint_matches_encode(model, saved_model_outputs):
    expected = model.encode(SHORT_TEXTS, task="STS", dim=64)
    assert_matches(saved_model_outputs["tokens"], expected)


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch refusal")
def test_saved_model_from_torch_names_the_backends_that_work(model, tmp_path):
    with pytest.raises(ValueError, match="TensorFlow or JAX backend"):
        export.export_saved_model(model, tmp_path / "embedder")


# --- LiteRT ----------------------------------------------------------------

LITERT_WORKS = BACKEND == "tensorflow" or (
    BACKEND == "torch" and importlib.util.find_spec("litert_torch") is not None
)


def litert_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


def litert_query_embeddings(model, path, texts, sequence_length=SEQUENCE_LENGTH):
    """Exports `model` to LiteRT at `path` and embeds `texts` as queries there."""
    # PyTorch exports one fixed batch; TensorFlow keeps it dynamic.
    batch_size = BATCH_SIZE if BACKEND == "torch" else None
    export.export_litert(model, path, sequence_length, batch_size=batch_size)
    inputs = export.prepare_inputs(
        model, texts, sequence_length, task="query", batch_size=batch_size
    )
    runner = litert_interpreter(path).get_signature_runner()
    # PyTorch-exported inputs carry an `args_0_` prefix.
    feed = {name: inputs[name.removeprefix("args_0_")] for name in runner.get_input_details()}
    (output,) = runner(**feed).values()
    return output[: len(texts)]


@pytest.mark.skipif(
    not LITERT_WORKS,
    reason="LiteRT export runs on TensorFlow, and on PyTorch with litert-torch installed",
)
def test_litert_matches_encode(model, tmp_path):
    output = litert_query_embeddings(model, tmp_path / "embedder.tflite", SHORT_TEXTS)
    assert_matches(output, model.encode(SHORT_TEXTS, task="query"))


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX refusal")
def test_litert_from_jax_names_the_backend_that_works(model, tmp_path):
    with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow"):
        export.export_litert(model, tmp_path / "embedder.tflite", SEQUENCE_LENGTH)


@pytest.mark.skipif(
    BACKEND != "torch" or LITERT_WORKS, reason="PyTorch without litert-torch installed"
)
def test_litert_from_torch_without_litert_torch_says_what_to_install(model, tmp_path):
    with pytest.raises(ImportError, match="pip install litert-torch"):
        export.export_litert(
            model, tmp_path / "embedder.tflite", SEQUENCE_LENGTH, batch_size=BATCH_SIZE
        )


# --- ONNX ------------------------------------------------------------------


def test_onnx_matches_encode(model, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    path = tmp_path / "embedder.onnx"
    if BACKEND == "tensorflow":
        # Dynamic batch and length; run at a length the export never saw.
        export.export_onnx(model, path, dim=32)
        inputs = export.prepare_inputs(model, SHORT_TEXTS, 100, task="query")
    else:
        export.export_onnx(model, path, SEQUENCE_LENGTH, dim=32, batch_size=BATCH_SIZE)
        inputs = export.prepare_inputs(
            model, SHORT_TEXTS, SEQUENCE_LENGTH, task="query", batch_size=BATCH_SIZE
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in session.get_inputs()) == ["padding_mask", "token_ids"]
    (output,) = session.run(None, inputs)
    assert_matches(output[: len(SHORT_TEXTS)], model.encode(SHORT_TEXTS, task="query", dim=32))


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow exports dynamic shapes")
def test_onnx_dynamic_shapes_need_tensorflow(model, tmp_path):
    with pytest.raises(ValueError, match="batch_size=.*sequence_length="):
        export.export_onnx(model, tmp_path / "embedder.onnx", SEQUENCE_LENGTH)


# --- Arguments -------------------------------------------------------------


def test_prepare_inputs_pads_and_cuts_like_encode(model):
    inputs = export.prepare_inputs(model, ["a b c d e f g h i j k"], 6, batch_size=2)
    tokenizer = model.preprocessor.tokenizer
    ids, mask = inputs["token_ids"], inputs["padding_mask"]
    assert ids.shape == mask.shape == (2, 6) and ids.dtype == mask.dtype == np.int32
    assert ids[0, 0] == tokenizer.start_token_id and ids[0, -1] == tokenizer.end_token_id
    assert mask[0].all() and not mask[1].any()
    with pytest.raises(ValueError, match="fixed batch_size"):
        export.prepare_inputs(model, ["a", "b", "c"], 6, batch_size=2)


def test_bad_arguments_are_refused_before_exporting(model, tmp_path):
    with pytest.raises(ValueError, match="Matryoshka"):
        export.export_onnx(model, tmp_path / "x.onnx", 16, dim=1000, batch_size=1)
    with pytest.raises(ValueError, match=".tflite"):
        export.export_litert(model, tmp_path / "x.onnx", 16, batch_size=1)
    with pytest.raises(TypeError, match="EmbeddingGemma"):
        export.export_onnx(model.backbone, tmp_path / "x.onnx", 16, batch_size=1)


# JAX only (through jax2tf), to keep the TensorFlow pass, which also converts
# to ONNX, within its time; the TF graph path is the same as the float one.
@pytest.mark.skipif(BACKEND != "jax", reason="run on one backend")
def test_int8_quantized_model_exports_to_saved_model(model, tmp_path):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_text")
    quantized = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    quantized.quantize("int8")
    export.export_saved_model(quantized, tmp_path / "embedder", task="document")
    loaded = tf.saved_model.load(str(tmp_path / "embedder"))
    output = loaded.serve(tf.constant(SHORT_TEXTS)).numpy()
    np.testing.assert_allclose(np.linalg.norm(output, axis=-1), 1.0, atol=1e-5)
    # Activations are quantized to int8 on the fly, so float rounding that
    # differs between two compilations of the same graph can move a value to
    # the next int8 step: the artifact agrees with the quantized Keras model
    # to ~3e-3 per element rather than ~3e-7 (measured cosine 0.99990 on the
    # 82-token text, 1.0 on the shorter ones).
    keras_cosines = cosines(output, quantized.encode(SHORT_TEXTS, task="document"))
    assert keras_cosines.min() >= 0.999, keras_cosines
    # It serves the int8 weights, not the float ones (test_quantization bounds
    # the quantization error).
    float_cosines = cosines(output, model.encode(SHORT_TEXTS, task="document"))
    assert 0.99 <= float_cosines.min() and float_cosines.max() < 1 - 1e-7, float_cosines
