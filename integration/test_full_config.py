"""The full published configuration (24 layers, 768 wide, window 512, 3072
projection) with random weights, on a 1100-token input so the +-256 window
binds and the sliding layers take their band form, against
sentence-transformers. The vocabulary is the tiny test one:
the embedding table's size does not change the arithmetic."""

import numpy as np
import pytest
import reference_checkpoints as rc

import keras_egemma as eg


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory, spm_path):
    return rc.build_sentence_transformers_checkpoint(
        str(tmp_path_factory.mktemp("full")), spm_path=spm_path, num_layers=24,
        hidden_size=768, intermediate_size=1152, num_attention_heads=3,
        num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
        sliding_window=512, projection_intermediate_dim=3072, embedding_dim=768,
    )


def test_full_config_1100_tokens_matches_reference(full_checkpoint):
    model = eg.EmbeddingGemma.from_preset(full_checkpoint)
    config = model.backbone.get_config()
    assert config["layer_types"] == (["sliding_attention"] * 5 + ["full_attention"]) * 4
    assert config["sliding_window"] == 512 and config["head_dim"] == 256
    long_text = " ".join(
        f"Sentence {i}: the sliding window of EmbeddingGemma spans 256 tokens on each side."
        for i in range(26)
    )
    texts = [long_text, "A short query about planets."]
    lengths = [len(ids) for ids in model.preprocessor.tokenize_texts(
        model.preprocessor.format_texts(texts, task="document"))]
    assert lengths[0] > 1024, lengths
    ours = model.encode_document(texts, batch_size=2)
    expected = rc.reference_embeddings(full_checkpoint, texts, kind="document")
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    assert ours.shape == (2, 768)
    for dim in (512, 256, 128):
        truncated = expected[:, :dim] / np.linalg.norm(expected[:, :dim], axis=1, keepdims=True)
        np.testing.assert_allclose(model.encode_document(texts, dim=dim, batch_size=2),
                                   truncated, atol=1e-4, rtol=0)
