"""EmbeddingGemma 2's published text configuration with random weights, built offline.

`build_published_checkpoint(out_dir)` saves a sentence-transformers folder (Transformer ->
mean Pooling -> Normalize, transformers' `EmbeddingGemma2TextModel` underneath) with
`EmbeddingGemma2TextConfig`'s own defaults (24 layers, hidden 512, sliding radius 512,
global heads of 512, PLE 512, projection to 768) and transformers' own random
initialisation (seeded; linear weights N(0, 0.02), norms one) in place of the test
builder's N(0, 1/fan_in) weights. The tokenizer is a small SentencePiece model trained
offline (`spm_vocab_size` pieces); `vocab_size` sizes the embedding table (default: the
tokenizer's; 262144, the published size, gives the published parameter count, and every
id of the small tokenizer fits). No download. Shared by the benchmarks that need the
published shapes: `embedding_gemma2_long_parity.py`, `inference_speed.py --model
embeddinggemma2` and `quantization_fidelity.py --embeddinggemma2`.

    checkpoint = build_published_checkpoint("/tmp/eg2", vocab_size=262144)
"""

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED_VOCAB_SIZE = 262144


def published_text_overrides():
    """`EmbeddingGemma2TextConfig`'s own defaults in place of the tiny test values."""
    from transformers import EmbeddingGemma2TextConfig

    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "sliding_window", "hidden_size_per_layer_input",
            "embedding_dim")
    overrides = {key: getattr(EmbeddingGemma2TextConfig, key) for key in keys}
    # Builder-only arguments (not config attributes): their defaults, and the default
    # layer pattern (a global layer every 6th).
    overrides.update(global_head_dim=512, num_global_key_value_heads=1, layer_types=None)
    return overrides


def test_builders():
    """The test suite's checkpoint modules (`tests/` on the path)."""
    tests = os.path.join(HERE, "..", "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import embedding_gemma2_checkpoints
    import reference_checkpoints

    return embedding_gemma2_checkpoints, reference_checkpoints


def build_published_checkpoint(out_dir, *, seed=0, spm_vocab_size=1024, vocab_size=None,
                               max_seq_length=8192):
    """The folder described in the module docstring; returns `out_dir`."""
    import torch
    from transformers import EmbeddingGemma2TextConfig
    from transformers import EmbeddingGemma2TextModel

    e2, rc = test_builders()
    with tempfile.TemporaryDirectory() as tmp:
        spm = rc.train_sentencepiece(tmp, vocab_size=spm_vocab_size)
        overrides = published_text_overrides()
        if vocab_size is not None:
            overrides["vocab_size"] = vocab_size
        checkpoint = e2.build_embedding_gemma2_checkpoint(
            out_dir, spm_path=spm, seed=seed, max_seq_length=max_seq_length, **overrides,
        )
    torch.manual_seed(seed)
    initial = EmbeddingGemma2TextModel(EmbeddingGemma2TextConfig.from_pretrained(checkpoint))
    initial.save_pretrained(checkpoint)
    return checkpoint
