"""EmbeddingGemma 2 beyond loading: the registered name resolves to its Hugging Face
repository, and `fit` then trains the tiny random model (embedding_gemma2_checkpoints) with the
paper's objective and MRL on the active backend; LoRA adapts the attention and feed-forward
kernels, and int8 quantization keeps the embeddings close."""

import embedding_gemma2_checkpoints as e2
import keras
import numpy as np
import pytest
from test_training import synthetic_retrieval

import keras_egemma as eg
from keras_egemma.io import preset_loading
from keras_egemma.models.embedding_gemma2_backbone import EmbeddingGemma2Backbone

TEXTS = ["Which planet is known as the Red Planet? Mars has a thin atmosphere.", "short",
         "Venus is often called Earth's twin because of its similar size."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, spm_path):
    return e2.build_embedding_gemma2_checkpoint(
        str(tmp_path_factory.mktemp("eg2_train")), spm_path=spm_path, seed=1
    )


def test_registered_name_loads_from_hugging_face_and_fit_lowers_the_loss(checkpoint):
    asked = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preset_loading, "download_hf", lambda repo: asked.append(repo) or checkpoint)
        keras.utils.set_random_seed(0)
        model = eg.EmbeddingGemma.from_preset("embeddinggemma2")
    assert asked == ["google/embeddinggemma-2"]
    assert isinstance(model.backbone, EmbeddingGemma2Backbone)

    scalars = [keras.ops.convert_to_numpy(b.layer_scalar) for b in model.backbone.transformer_layers]
    model.compile(optimizer=keras.optimizers.Adam(3e-3), mrl_dims=(24, 8))
    history = model.fit(synthetic_retrieval(48, seed=1), batch_size=16, epochs=3,
                        sequence_length=24, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] - 1.0, losses
    # The checkpoint's per-layer scalars are buffers, not trained.
    for block, before in zip(model.backbone.transformer_layers, scalars):
        assert (keras.ops.convert_to_numpy(block.layer_scalar) == before).all()


def test_lora_trains_only_adapters_and_int8_stays_close(checkpoint):
    keras.utils.set_random_seed(0)
    model = eg.EmbeddingGemma.from_preset(checkpoint)
    float_embeddings = model.encode(TEXTS)
    model.enable_lora(2)
    trainable = {v.path for v in model.trainable_weights}
    assert trainable and all("lora" in path for path in trainable), sorted(trainable)[:4]
    # Every block's attention and feed-forward kernels are adapted.
    assert len(trainable) == 2 * 7 * model.backbone.num_layers
    model.compile(optimizer=keras.optimizers.Adam(1e-2), mrl_dims=(24, 8))
    history = model.fit(synthetic_retrieval(16, seed=2), batch_size=16, epochs=1,
                        sequence_length=24, verbose=0)
    assert np.isfinite(history.history["loss"]).all()

    quantized = eg.EmbeddingGemma.from_preset(checkpoint)
    quantized.quantize("int8")
    cosines = np.sum(quantized.encode(TEXTS) * float_embeddings, axis=1)
    assert cosines.min() > 0.99, cosines
