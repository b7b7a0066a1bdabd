"""Prompts, tokenizer and packing."""

import keras
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma.models.prompts import resolve_prompt

# The prompt table of docs/reference.md, verbatim.
TABLE = {
    "task: search result | query: ": ["query", "Retrieval", "Retrieval-query", "Reranking",
                                      "BitextMining"],
    "title: none | text: ": ["document", "Retrieval-document"],
    "task: clustering | query: ": ["Clustering"],
    "task: classification | query: ": ["Classification", "MultilabelClassification"],
    "task: sentence similarity | query: ": ["PairClassification", "STS"],
    "task: summarization | query: ": ["Summarization"],
    "task: code retrieval | query: ": ["InstructionRetrieval", "code retrieval"],
    "task: question answering | query: ": ["question answering"],
    "task: fact checking | query: ": ["fact checking"],
}


@pytest.mark.parametrize("prompt, names", TABLE.items())
def test_every_prompt_name(prompt, names):
    for name in names:
        assert resolve_prompt(name) == prompt
    assert resolve_prompt(names[0].upper().replace("-", "_")) == prompt


def test_unknown_and_non_string_task():
    with pytest.raises(ValueError, match="Unknown task 'search'.*STS"):
        resolve_prompt("search")
    with pytest.raises(TypeError, match="prompt name"):
        resolve_prompt(3)


def test_checkpoint_prompts_extend_the_table():
    assert resolve_prompt("my-task", {"my-task": "task: mine | query: "}) == "task: mine | query: "


@pytest.fixture(scope="module")
def preprocessor(tiny_model):
    return tiny_model.preprocessor


def test_packing_adds_bos_eos_and_pads_right(preprocessor):
    tok = preprocessor.tokenizer
    assert (tok.pad_token_id, tok.end_token_id, tok.start_token_id) == (0, 1, 2)
    out = preprocessor(["hello world", "a"], sequence_length=12)
    ids = np.asarray(out["token_ids"])
    mask = np.asarray(out["padding_mask"]).astype(bool)
    raw = [list(tok.tokenize(t)) for t in ["hello world", "a"]]
    for row, pieces in enumerate(raw):
        n = len(pieces) + 2
        assert ids[row, :n].tolist() == [2, *map(int, pieces), 1]
        assert mask[row].tolist() == [True] * n + [False] * (12 - n)
        assert (ids[row, n:] == 0).all()
    python_path = preprocessor.tokenize_texts(["hello world", "a"])
    assert python_path == [ids[r, : mask[r].sum()].tolist() for r in range(2)]


def test_truncation_keeps_eos(preprocessor):
    ids = preprocessor(["word " * 200], sequence_length=10)["token_ids"]
    ids = np.asarray(ids)[0].tolist()
    assert len(ids) == 10 and ids[0] == 2 and ids[-1] == 1


def test_tf_data_pipeline(preprocessor):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(["first text", "second, longer text here"]).batch(2)
    batch = next(iter(ds.map(lambda x: preprocessor(x, sequence_length=16))))
    assert tuple(batch["token_ids"].shape) == (2, 16)


def test_tf_data_pipeline_survives_set_random_seed(preprocessor):
    # `keras.utils.set_random_seed` clears TensorFlow's eager kernel cache,
    # which owned the SentencePiece resource of an eagerly built tokenizer:
    # the pipeline then failed with "Resource ... SentencepieceOp does not
    # exist".
    import tensorflow as tf

    texts = ["first text", "second, longer text here"]
    keras.utils.set_random_seed(0)
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(2)
    batch = next(iter(ds.map(lambda x: preprocessor(x, sequence_length=16))))
    eager = preprocessor(texts, sequence_length=16)
    np.testing.assert_array_equal(
        np.asarray(batch["token_ids"]), keras.ops.convert_to_numpy(eager["token_ids"])
    )


def test_titles_and_prompt_formatting(preprocessor):
    texts = ["body one", "body two"]
    assert preprocessor.format_texts(texts, titles=["T", None]) == [
        "title: T | text: body one", "title: none | text: body two"]
    assert preprocessor.format_texts(texts, task="STS")[0] == (
        "task: sentence similarity | query: body one")
    assert preprocessor.format_texts(texts) == texts
    with pytest.raises(TypeError, match="title must be a string"):
        preprocessor.format_texts(texts, titles=[1, None])


def test_tokenizer_requires_gemma_special_tokens():
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["hello world"] * 50), model_writer=buf, vocab_size=5,
        model_type="word", minloglevel=2,
    )
    with pytest.raises(ValueError, match="Cannot find special token"):
        eg.EmbeddingGemmaTokenizer(proto=buf.getvalue())
