"""Builds the bundled `embeddinggemma_tiny` preset, deterministically.

A SentencePiece vocabulary (Gemma conventions: `<pad>` 0, `<eos>` 1, `<bos>`
2, `<unk>` 3, `<mask>` 4, byte fallback, BPE) trained on the Python reference
text that ships with CPython (`pydoc_data.topics`), and a 6-layer
EmbeddingGemma-architecture model (five sliding layers then one global) with
seeded random weights. It exists so tests and offline demos run without any
download.

    python -m keras_egemma.presets.build_tiny_preset [output_dir]
"""

import io
import os
import sys

TINY_CONFIG = dict(
    num_layers=6,
    num_query_heads=3,
    num_key_value_heads=1,
    hidden_dim=128,
    intermediate_dim=256,
    head_dim=64,
    query_pre_attn_scalar=64,
    sliding_window=64,
)
TINY_VOCABULARY_SIZE = 2048
TINY_PROJECTION_UNITS = (512, 128)


def reference_corpus():
    """Non-empty lines of the Python reference topics shipped with CPython."""
    from pydoc_data.topics import topics

    return [
        line.strip()
        for name in sorted(topics)
        for line in topics[name].splitlines()
        if line.strip()
    ]


def train_vocabulary(lines, vocab_size):
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=["<mask>"],
        byte_fallback=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def build(output_dir):
    import keras

    import keras_egemma as eg

    keras.utils.set_random_seed(0)
    tokenizer = eg.EmbeddingGemmaTokenizer(
        proto=train_vocabulary(reference_corpus(), TINY_VOCABULARY_SIZE)
    )
    backbone = eg.EmbeddingGemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), dtype="float32", **TINY_CONFIG
    )
    model = eg.EmbeddingGemma(
        backbone,
        eg.EmbeddingGemmaPreprocessor(tokenizer, sequence_length=512),
        projection_units=TINY_PROJECTION_UNITS,
    )
    model.save_to_preset(output_dir)
    return model


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embeddinggemma_tiny")
    build(sys.argv[1] if len(sys.argv) > 1 else default)
