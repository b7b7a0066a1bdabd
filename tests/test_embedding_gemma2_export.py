"""EmbeddingGemma 2 through the exporters (SavedModel, LiteRT, ONNX), each artifact run in its
own runtime on the tiny random checkpoint of embedding_gemma2_checkpoints (sliding radius 3,
so the window binds, and the band attention runs at these lengths) and compared with
`model.encode`, to the bounds of test_export. The exporters need nothing model-specific: the
formats each backend cannot write are refused the same way for both models (test_export)."""

import embedding_gemma2_checkpoints as e2
import keras
import pytest
from test_export import LITERT_WORKS
from test_export import assert_matches
from test_export import litert_query_embeddings

import keras_egemma as eg
from keras_egemma import export

BACKEND = keras.backend.backend()
# The longest is 67 tokens with the query prompt, so SEQUENCE_LENGTH cuts nothing.
TEXTS = [
    "Which planet is known as the Red Planet? Mars has a thin atmosphere and two small moons.",
    "",
    "Numbers 12345 and 3.14159, unicode café naïve 東京.",
]
SEQUENCE_LENGTH = 80
BATCH_SIZE = 4


@pytest.fixture(scope="module")
def model(tmp_path_factory, spm_path):
    folder = e2.build_embedding_gemma2_checkpoint(
        str(tmp_path_factory.mktemp("eg2_export")), spm_path=spm_path
    )
    return eg.EmbeddingGemma.from_preset(folder)


def test_the_longest_text_fits(model):
    inputs = export.prepare_inputs(model, TEXTS, SEQUENCE_LENGTH, task="query")
    assert 60 < inputs["padding_mask"].sum(axis=1).max() < SEQUENCE_LENGTH


@pytest.mark.skipif(BACKEND == "torch", reason="no SavedModel export from PyTorch")
def test_saved_model_embeds_raw_strings_like_encode(model, tmp_path):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_text")
    export.export_saved_model(model, tmp_path / "embedder", task="query", dim=16)
    loaded = tf.saved_model.load(str(tmp_path / "embedder"))
    assert_matches(loaded.serve(tf.constant(TEXTS)).numpy(),
                   model.encode(TEXTS, task="query", dim=16))


@pytest.mark.skipif(
    not LITERT_WORKS,
    reason="LiteRT export runs on TensorFlow, and on PyTorch with litert-torch installed",
)
def test_litert_matches_encode(model, tmp_path):
    output = litert_query_embeddings(
        model, tmp_path / "embedder.tflite", TEXTS, SEQUENCE_LENGTH
    )
    assert_matches(output, model.encode(TEXTS, task="query"))


def test_onnx_matches_encode(model, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    path = tmp_path / "embedder.onnx"
    if BACKEND == "tensorflow":
        # Dynamic batch and length.
        export.export_onnx(model, path, dim=8)
        inputs = export.prepare_inputs(model, TEXTS, SEQUENCE_LENGTH, task="document")
    else:
        export.export_onnx(model, path, SEQUENCE_LENGTH, dim=8, batch_size=BATCH_SIZE)
        inputs = export.prepare_inputs(
            model, TEXTS, SEQUENCE_LENGTH, task="document", batch_size=BATCH_SIZE
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, inputs)
    assert_matches(output[: len(TEXTS)], model.encode(TEXTS, task="document", dim=8))
