"""Shared fixtures for tests/ and integration/."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's fused kernels reorder float sums; the parity tests compare to 1e-5.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import sys  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

# Test-support modules (numpy reference, reference checkpoint builders).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tests"))


@pytest.fixture(scope="session")
def tiny_model():
    import keras_egemma as eg

    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")


@pytest.fixture(autouse=True)
def _float32_policy():
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory):
    import reference_checkpoints as rc

    return rc.train_sentencepiece(str(tmp_path_factory.mktemp("spm")))


@pytest.fixture(scope="session")
def st_checkpoint(tmp_path_factory, spm_path):
    """Published-layout sentence-transformers folder: 6 layers (5 sliding +
    1 full), window 8, query_pre_attn_scalar 24 != head_dim 32."""
    import reference_checkpoints as rc

    return rc.build_sentence_transformers_checkpoint(
        str(tmp_path_factory.mktemp("st")), spm_path=spm_path
    )


@pytest.fixture(scope="session")
def st_checkpoint_native(tmp_path_factory, spm_path):
    """The same network as written by the installed sentence-transformers,
    with a different layer mix (full layers at 1 and 4)."""
    import reference_checkpoints as rc

    types = ["sliding_attention", "full_attention", "sliding_attention",
             "sliding_attention", "full_attention"]
    return rc.build_sentence_transformers_checkpoint(
        str(tmp_path_factory.mktemp("st_native")), spm_path=spm_path, num_layers=5,
        layer_types=types, seed=1, layout="native",
    )


@pytest.fixture(scope="session")
def keras_hub_pair(tmp_path_factory, spm_path):
    """A KerasHub embedding preset and its Hugging Face twin (same weights),
    window 64, so KerasHub's asymmetric window binds only past 32 tokens."""
    import reference_checkpoints as rc

    kh = rc.build_keras_hub_embedding_preset(
        str(tmp_path_factory.mktemp("kh")), spm_path=spm_path, sliding_window_size=64,
        seed=3,
    )
    st = rc.build_sentence_transformers_checkpoint(
        str(tmp_path_factory.mktemp("kh_twin")), spm_path=spm_path, sliding_window=64,
        query_pre_attn_scalar=32, seed=3,
    )
    return kh, st
