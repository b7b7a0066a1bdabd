"""Property-based checks of the preprocessor and `encode*` on hostile text.

Inputs tried (hypothesis draws from all of them, mixed in batches of 1-6) and
what each gets:

| input | what happens |
|---|---|
| any unicode: emoji (ZWJ sequences), RTL scripts and bidi controls, stacked combining marks, NUL and other controls, BOM, private-use and noncharacters | tokenised exactly as SentencePiece does; a finite unit vector |
| lone surrogates (`"\\ud800"`, a reversed pair) | each replaced by U+FFFD; a high + low pair becomes its character |
| empty string | `<bos> <eos>` (with a task: the prompt alone); a finite unit vector |
| whitespace only | SentencePiece's whitespace pieces; a finite unit vector |
| 100,000-character texts | cut to `sequence_length` tokens (`<eos>` kept), one warning per model |
| bytes | decoded as UTF-8; invalid UTF-8 is a `ValueError` naming the item |
| the same text in any batch, next to any other texts | the same vector as alone (<= 1e-6) |

The reference for token ids is the `sentencepiece` library run on the
preset's own vocabulary, not the tokenizer under test.
"""

import warnings

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_egemma as eg

SPECIAL = [
    "",
    " ",
    "   \t\n\r\x0b\x0c",
    "\u3000\u00a0\u2009",
    "\x00",
    "a\x00b\x00",
    "\x01\x1f\x7f\x9f",
    "\ufeffBOM first",
    "👩‍👩‍👧‍👦 🏳️‍🌈 👍🏽",
    "مرحبا بالعالم שלום עולם",
    "\u202eRTL override\u202c \u200f\u200e",
    "Z̷̢̛̤̈́͊a̶̡͇̓l̸̰̈́g̷̣̈o̵̧͌",
    "e" + "\u0301" * 12,
    "\ue000\U000f0000\uffff\U0010ffff",
    "\ud800",
    "x\udfff\ud800y",
    "\ud83d\ude80 pair",
    "日本語、中文，한국어",
    "ℌ𝔢𝔩𝔩𝔬 𝟙𝟚𝟛 ﬁ ﬀ",
]

# Short texts: on JAX every new (rows, bucket) shape costs a compilation, so
# the drawn batches stay within a few shapes.
texts = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(max_size=8),
    st.text(st.characters(categories=["Cs", "Mn", "Cc", "Zs", "Cf", "So"]), max_size=6),
    st.text(st.sampled_from(" \t\n"), max_size=8),
)
TASKS = [None, "query", "document", "STS"]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_clean(text):
    """Pairs of surrogates joined, lone ones replaced, written out by hand."""
    out, i = [], 0
    while i < len(text):
        c = ord(text[i])
        nxt = ord(text[i + 1]) if i + 1 < len(text) else 0
        if 0xD800 <= c <= 0xDBFF and 0xDC00 <= nxt <= 0xDFFF:
            out.append(chr(0x10000 + ((c - 0xD800) << 10) + (nxt - 0xDC00)))
            i += 2
            continue
        out.append("\ufffd" if 0xD800 <= c <= 0xDFFF else text[i])
        i += 1
    return "".join(out)


@pytest.fixture(scope="module")
def sentencepiece(tiny_model):
    return spm.SentencePieceProcessor(model_proto=tiny_model.preprocessor.tokenizer.proto)


@pytest.fixture(scope="module")
def short_preprocessor(tiny_model):
    """The preset's tokenizer with a 16-token budget, so truncation is common."""
    return eg.EmbeddingGemmaPreprocessor(tiny_model.preprocessor.tokenizer, sequence_length=16)


@pytest.fixture(scope="module")
def alone(tiny_model):
    """A text's embedding next to two empty strings (other neighbours, other
    padding, another position than in the drawn batch), memoised.

    Three texts pad to the same four rows as the drawn batches, so JAX
    compiles no extra shapes; `tests/test_model.py` checks batches against
    single-row calls.
    """
    cache = {}

    def embed(text, task):
        if (text, task) not in cache:
            cache[(text, task)] = tiny_model.encode([text, "", ""], task=task, batch_size=4)[0]
        return cache[(text, task)]

    return embed


@settings(max_examples=60, **SETTINGS)
@given(batch=st.lists(texts, min_size=1, max_size=6), task=st.sampled_from(TASKS))
def test_token_ids_match_sentencepiece(short_preprocessor, sentencepiece, batch, task):
    pre = short_preprocessor
    formatted = pre.format_texts(batch, task=task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = pre.tokenize_texts(formatted)
    for text, row in zip(formatted, ids):
        expected = sentencepiece.encode(reference_clean(text))[: pre.sequence_length - 2]
        assert row == [2, *expected, 1]
    # The tf.data path (KerasHub's packer) packs the same ids.
    packed = pre(formatted)
    token_ids = np.asarray(packed["token_ids"])
    mask = np.asarray(packed["padding_mask"]).astype(bool)
    assert token_ids.shape == (len(batch), 16)
    for r, row in enumerate(ids):
        assert token_ids[r, mask[r]].tolist() == row
        assert mask[r].sum() == len(row) and not mask[r, len(row):].any()


@settings(max_examples=12, **SETTINGS)
@given(batch=st.lists(texts, min_size=3, max_size=4), task=st.sampled_from(TASKS),
       index=st.integers(0, 3))
def test_encode_is_finite_unit_norm_and_batch_independent(tiny_model, alone, batch, task,
                                                          index):
    out = tiny_model.encode(batch, task=task, batch_size=4, verbose=False)
    assert out.shape == (len(batch), 128) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out.astype("float64"), axis=1), 1.0, atol=1e-6)
    # One drawn row per example: every forward pass costs seconds on torch.
    i = index % len(batch)
    np.testing.assert_allclose(out[i], alone(batch[i], task), atol=1e-6, rtol=0)


def test_every_special_input(tiny_model, sentencepiece):
    out = tiny_model.encode_query(SPECIAL, batch_size=4)
    assert out.shape == (len(SPECIAL), 128) and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out.astype("float64"), axis=1), 1.0, atol=1e-6)
    prompt = tiny_model.preprocessor.prompt_for("query")
    ids = tiny_model.preprocessor.tokenize_texts([prompt + text for text in SPECIAL])
    for text, row in zip(SPECIAL, ids):
        assert row == [2, *sentencepiece.encode(prompt + reference_clean(text)), 1], text


def test_lone_surrogates_embed_as_the_replacement_character(tiny_model):
    a = tiny_model.encode(["\ud800", "x\udfff\ud800y", "\ud83d\ude80"], batch_size=4)
    b = tiny_model.encode(["\ufffd", "x\ufffd\ufffdy", "🚀"], batch_size=4)
    np.testing.assert_array_equal(a, b)


def test_empty_string_is_the_prompt_alone(tiny_model, sentencepiece):
    prompt = tiny_model.preprocessor.prompt_for("query")
    assert tiny_model.preprocessor.tokenize_texts([""]) == [[2, 1]]
    assert tiny_model.preprocessor.tokenize_texts([prompt]) == [
        [2, *sentencepiece.encode(prompt), 1]
    ]
    np.testing.assert_array_equal(
        tiny_model.encode_query(["", "a", ""], batch_size=4),
        tiny_model.encode([prompt, prompt + "a", prompt], batch_size=4),
    )


def test_100k_character_texts_are_truncated_and_reported_once(tiny_model, sentencepiece):
    rng = np.random.default_rng(0)
    # Latin, Greek, Cyrillic, Hebrew, Arabic, CJK, emoji and combining marks.
    alphabet = [chr(c) for r in [(0x20, 0x7F), (0x370, 0x3FF), (0x400, 0x4FF), (0x5D0, 0x5EA),
                                 (0x620, 0x64A), (0x4E00, 0x4FFF), (0x1F600, 0x1F64F),
                                 (0x300, 0x36F)] for c in range(*r)]
    long_texts = ["".join(rng.choice(alphabet, 100_000)) for _ in range(2)]
    # A preprocessor of its own, so no earlier test has used up its one warning.
    pre = eg.EmbeddingGemmaPreprocessor(
        tiny_model.preprocessor.tokenizer, sequence_length=tiny_model.preprocessor.sequence_length
    )
    formatted = pre.format_texts(long_texts, task="document")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = pre.tokenize_texts(formatted)
        pre.tokenize_texts(formatted[:1])
    messages = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert len(messages) == 1 and "2 text(s)" in messages[0], messages
    length = pre.sequence_length
    for text, row in zip(formatted, ids):
        reference = sentencepiece.encode(text)
        assert len(reference) > 10 * length
        assert row == [2, *reference[: length - 2], 1]

    batch = [long_texts[0], "short", long_texts[1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = tiny_model.encode_document(batch, batch_size=4)
        # Other neighbours, other padding; the same (4, 512) shape.
        other = tiny_model.encode_document(["a", long_texts[1], "b"], batch_size=4)
    assert out.shape == (3, 128) and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[2], other[1], atol=1e-6, rtol=0)


def test_bytes_are_decoded_and_invalid_utf8_is_named(tiny_model):
    np.testing.assert_array_equal(
        tiny_model.encode([b"caf\xc3\xa9", "a", "b"], batch_size=4),
        tiny_model.encode(["café", "a", "b"], batch_size=4),
    )
    with pytest.raises(ValueError, match=r"`texts\[1\]` is bytes that are not valid UTF-8"):
        tiny_model.encode(["ok", b"\xff\xfe"])
