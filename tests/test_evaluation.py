"""Evaluation: metrics against hand-worked values, pytrec_eval and scipy; local datasets; mteb."""

import math

import keras
import numpy as np
import pytest

from keras_egemma.evaluation import retrieval_metrics


def test_hand_computed_example():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # ranking 0, 2, 3, 1; relevant {2}: rank 2
            [0.2, 0.8, 0.7, 0.1],  # ranking 1, 2, 0, 3; relevant {0, 3}: ranks 3 and 4
        ]
    )
    m = retrieval_metrics(scores, [2, {0, 3}], ks=(1, 3))
    ndcg_0 = (1 / math.log2(3)) / 1.0
    ndcg_1 = (1 / math.log2(4) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg_0 + ndcg_1) / 2)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert m["recall@1"] == 0.0
    assert m["recall@3"] == pytest.approx((1 + 0.5) / 2)


def test_perfect_and_bad_input():
    m = retrieval_metrics(np.eye(5), list(range(5)))
    assert m["ndcg@10"] == 1.0 and m["recall@1"] == 1.0 and m["mrr@10"] == 1.0
    with pytest.raises(ValueError, match="one entry of `relevant` per query"):
        retrieval_metrics(np.eye(3), [0, 1])
    with pytest.raises(ValueError, match="at least one relevant"):
        retrieval_metrics(np.eye(2), [0, set()])


def test_trec_metrics_match_pytrec_eval():
    import pytrec_eval

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 60))  # continuous: no ties, so rankings agree
    relevant = []
    for _ in range(30):
        docs = rng.choice(60, size=rng.integers(1, 6), replace=False)
        relevant.append({int(d): int(rng.integers(1, 4)) for d in docs})
    ours = retrieval_metrics(scores, relevant, ks=(5, 10, 20))
    qrels = {f"q{i}": {f"d{d}": g for d, g in rel.items()} for i, rel in enumerate(relevant)}
    run = {f"q{i}": {f"d{d}": float(s) for d, s in enumerate(row)} for i, row in enumerate(scores)}
    # MRR@10: trec_eval's reciprocal rank over a run cut to each query's top 10.
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map", "recall.5,10,20"}).evaluate(
        run
    )
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    mean = lambda results, name: np.mean([r[name] for r in results.values()])  # noqa: E731
    assert ours["ndcg@10"] == pytest.approx(mean(full, "ndcg_cut_10"), abs=1e-12)
    assert ours["map"] == pytest.approx(mean(full, "map"), abs=1e-12)
    assert ours["mrr@10"] == pytest.approx(mean(cut, "recip_rank"), abs=1e-12)
    for k in (5, 10, 20):
        assert ours[f"recall@{k}"] == pytest.approx(mean(full, f"recall_{k}"), abs=1e-12)
    assert 0.05 < ours["ndcg@10"] < 0.5  # random scores: far from the trivial 0 or 1


def test_spearman_and_sts_match_scipy():
    from scipy import stats

    from keras_egemma.evaluation import spearman
    from keras_egemma.evaluation import sts_metrics

    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=40).astype(float)  # many ties
    y = x + rng.normal(size=40)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    gold = rng.uniform(0, 5, size=40)
    cosine = [np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v) for u, v in zip(a, b)]
    m = sts_metrics(a, b, gold)
    assert m["spearman"] == pytest.approx(stats.spearmanr(cosine, gold).statistic, abs=1e-12)
    assert m["pearson"] == pytest.approx(stats.pearsonr(cosine, gold).statistic, abs=1e-12)
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])


def write_dataset(folder):
    """A small BEIR-style folder: 3 queries, 5 documents, graded qrels, STS pairs."""
    import json

    folder.mkdir(exist_ok=True)
    docs = [
        ("d1", "Mars", "Mars is the red planet."),
        ("d2", None, "Venus is very hot."),
        ("d3", "Python", "Python lists are mutable sequences."),
        ("d4", None, "Tuples are immutable."),
        ("d5", None, "The sun is a star."),
    ]
    (folder / "corpus.jsonl").write_text(
        "\n".join(
            json.dumps({"_id": i, "title": t, "text": x} if t else {"_id": i, "text": x})
            for i, t, x in docs
        )
        + "\n"
    )
    queries = [
        ("q1", "Which planet is red?"),
        ("q2", "Can a list be changed?"),
        ("q3", "What is hot?"),
        ("q4", "unjudged query"),
    ]
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps({"id": i, "text": t}) for i, t in queries)
    )
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t1\nq2\td4\t1\nq3\td2\t1\nq3\td5\t0\n"
    )
    (folder / "sts.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"sentence1": "A cat sits.", "sentence2": "A cat is sitting.", "score": 4.8},
                {"sentence1": "A man cooks.", "sentence2": "The stock fell.", "score": 0.2},
                {"sentence1": "Kids play.", "sentence2": "Children are playing.", "score": 4.5},
                {"sentence1": "It rains.", "sentence2": "A dog barks.", "score": 0.5},
            ]
        )
    )
    return folder


def test_local_dataset_evaluation_equals_manual_ranking(tmp_path):
    import keras_egemma as eg
    from keras_egemma.evaluation import evaluate_retrieval
    from keras_egemma.evaluation import evaluate_sts
    from keras_egemma.evaluation import load_retrieval_dataset
    from keras_egemma.evaluation import load_sts_dataset

    folder = write_dataset(tmp_path / "data")
    queries, corpus, qrels = load_retrieval_dataset(folder)
    assert list(queries) == ["q1", "q2", "q3"]  # q4 is unjudged
    assert corpus["d1"] == ("Mars", "Mars is the red planet.") and corpus["d2"][0] is None
    assert qrels == {"q1": {"d1": 2.0}, "q2": {"d3": 1.0, "d4": 1.0}, "q3": {"d2": 1.0}}
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    m = evaluate_retrieval(model, queries, corpus, qrels, dim=64)
    q = model.encode_query(list(queries.values()), dim=64)
    d = model.encode_document(
        [t for _, t in corpus.values()], titles=[t for t, _ in corpus.values()], dim=64
    )
    expected = retrieval_metrics(q @ d.T, [{0: 2}, {2: 1, 3: 1}, {1: 1}])
    assert m == {**expected, "queries": 3, "documents": 5}
    s1, s2, gold = load_sts_dataset(folder)
    sts = evaluate_sts(model, s1, s2, gold)
    a, b = model.encode(s1, task="STS"), model.encode(s2, task="STS")
    from scipy import stats

    assert sts["spearman"] == pytest.approx(
        stats.spearmanr((a * b).sum(1), gold).statistic, abs=1e-6
    )


def test_dataset_errors(tmp_path):
    from keras_egemma.evaluation import load_retrieval_dataset
    from keras_egemma.evaluation import load_sts_dataset

    with pytest.raises(FileNotFoundError, match="no corpus.jsonl, queries.jsonl, qrels.tsv"):
        load_retrieval_dataset(tmp_path)
    folder = write_dataset(tmp_path / "data")
    (folder / "qrels.tsv").write_text("q1\td9\t1\n")
    with pytest.raises(ValueError, match="unknown document id 'd9'"):
        load_retrieval_dataset(folder)
    (folder / "sts.jsonl").write_text('{"sentence1": "a", "score": 1}\n')
    with pytest.raises(ValueError, match="line 1: needs string"):
        load_sts_dataset(folder)


def test_read_jsonl(tmp_path):
    """The one JSON Lines reader (datasets and the command line's corpora)."""
    from keras_egemma.evaluation.datasets import read_jsonl

    path = tmp_path / "rows.jsonl"
    # A blank line is skipped but counted; U+2028 inside a string is not a line break.
    path.write_text('{"a": 1}\n\n{"b": "x\u2028y"}\r\n', encoding="utf-8")
    assert read_jsonl(path) == [(1, {"a": 1}), (3, {"b": "x\u2028y"})]
    path.write_text("\n  \n")
    assert read_jsonl(path) == []
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2: expected a JSON object"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n{"b": \n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        read_jsonl(path)
    path.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(ValueError, match="is not a UTF-8 text file"):
        read_jsonl(path)


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="once, in the JAX pass: the wrapper only calls `encode`, which is "
    "checked on every backend elsewhere; mteb itself is slow to run",
)
def test_mteb_accepts_the_encoder(tmp_path):
    """mteb runs a retrieval and an STS task defined here, offline, and its
    scores (its own pytrec_eval / scipy code) equal ours."""
    import mteb
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    import keras_egemma as eg
    from keras_egemma.evaluation import MTEBEncoder
    from keras_egemma.evaluation import evaluate_retrieval
    from keras_egemma.evaluation import evaluate_sts
    from keras_egemma.evaluation import load_retrieval_dataset
    from keras_egemma.evaluation import load_sts_dataset

    folder = write_dataset(tmp_path / "data")
    queries, corpus, qrels = load_retrieval_dataset(folder)
    s1, s2, gold = load_sts_dataset(folder)
    common = dict(
        reference="https://example.org",
        dataset={"path": "local", "revision": "1"},
        category="t2t",
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        date=("2024-01-01", "2024-01-02"),
        dialect=["Written"],
        domains=[],
        task_subtypes=[],
        license="cc-by-4.0",
        annotations_creators="derived",
        modalities=["text"],
        sample_creation="found",
        bibtex_citation="",
        description="A task defined in the test.",
    )

    class LocalRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            type="Retrieval", name="LocalRetrieval", main_score="ndcg_at_10", **common
        )

        def load_data(self, **kwargs):
            split = RetrievalSplitData(
                queries=Dataset.from_list([{"id": i, "text": t} for i, t in queries.items()]),
                corpus=Dataset.from_list(
                    [{"id": i, "title": t or "", "text": x} for i, (t, x) in corpus.items()]
                ),
                relevant_docs={q: {d: int(g) for d, g in r.items()} for q, r in qrels.items()},
                top_ranked=None,
            )
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    class LocalSTS(AbsTaskSTS):
        metadata = TaskMetadata(type="STS", name="LocalSTS", main_score="cosine_spearman", **common)
        min_score, max_score = 0, 5

        def load_data(self, **kwargs):
            self.dataset = {
                "test": Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": gold})
            }
            self.data_loaded = True

    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    results = mteb.evaluate(
        MTEBEncoder(model, dim=64),
        [LocalRetrieval(), LocalSTS()],
        cache=None,
        show_progress_bar=False,
    )
    scores = {r.task_name: r.scores["test"][0] for r in results.task_results}
    ours = evaluate_retrieval(model, queries, corpus, {q: r for q, r in qrels.items()}, dim=64)
    assert scores["LocalRetrieval"]["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    assert scores["LocalRetrieval"]["map_at_1000"] == pytest.approx(ours["map"], abs=1e-4)
    sts = evaluate_sts(model, s1, s2, gold, dim=64)
    assert scores["LocalSTS"]["cosine_spearman"] == pytest.approx(sts["spearman"], abs=1e-6)
