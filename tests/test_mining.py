"""Hard-negative mining against a numpy ranking of the model's own
similarities (computed here from `encode_query` / `encode_document`)."""

import numpy as np
import pytest

from keras_egemma.training.mining import mine_hard_negatives

CORPUS = [
    "Mars is the fourth planet from the Sun.",
    "Venus is the hottest planet in the solar system.",
    "Jupiter is a gas giant with a great red spot.",
    "The Moon orbits the Earth every 27 days.",
    "Photosynthesis turns light into chemical energy.",
    "Mitochondria are the powerhouse of the cell.",
    "The French Revolution began in 1789.",
    "Rome was not built in a day.",
    "Python lists are mutable sequences.",
    "A dictionary maps keys to values.",
    "The Pacific is the largest ocean on Earth.",
    "Mount Everest is the highest mountain above sea level.",
    "Bread is made from flour, water and yeast.",
    "Coffee beans are roasted seeds of a fruit.",
    "The violin has four strings.",
    "Jazz originated in New Orleans.",
    "Football is played with eleven players per side.",
    "A marathon is 42.195 kilometres long.",
    "Gold is a dense, soft and shiny metal.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The heart pumps blood through the body.",
    "Penguins live mostly in the Southern Hemisphere.",
    "Tokyo is the capital of Japan.",
    "The Nile flows north into the Mediterranean.",
]
QUERIES = [
    "Which planet is known as the Red Planet?",
    "What does a cell's mitochondrion do?",
    "How long is a marathon?",
    "What is the capital of Japan?",
    "How are Python lists different from tuples?",
    "Where did jazz music start?",
]


@pytest.fixture(scope="module")
def scores(tiny_model):
    """`(len(QUERIES), len(CORPUS))` cosine similarities, the model's own."""
    queries = tiny_model.encode_query(QUERIES)
    documents = tiny_model.encode_document(CORPUS)
    return queries @ documents.T


def _ranking(row, excluded=(), threshold=None):
    """Corpus indices by decreasing score, without `excluded` and anything
    scoring above `threshold`."""
    order = [int(i) for i in np.argsort(-row, kind="stable")]
    return [
        i for i in order
        if i not in excluded and (threshold is None or row[i] <= threshold)
    ]


def test_top_k_is_the_ranking_without_the_positive(tiny_model, scores):
    # Each query's positive is its best-scoring document, so excluding it
    # changes the answer.
    best = scores.argmax(axis=1)
    positives = [CORPUS[i] for i in best]
    examples = mine_hard_negatives(
        tiny_model, QUERIES, positives, CORPUS, num_negatives=3, rank_window=None
    )
    assert [e["query"] for e in examples] == QUERIES
    for example, row, positive_index in zip(examples, scores, best):
        expected = _ranking(row, excluded={positive_index})[:3]
        assert example["negative"] == [CORPUS[i] for i in expected]
        assert example["positive"] not in example["negative"]


def test_every_positive_of_a_repeated_query_is_excluded(tiny_model, scores):
    first, second, third = _ranking(scores[0])[:3]
    # The first query comes twice, with its two best documents as positives.
    queries = QUERIES + [QUERIES[0]]
    positives = [CORPUS[first], *CORPUS[1 : len(QUERIES)], CORPUS[second]]
    examples = mine_hard_negatives(
        tiny_model, queries, positives, CORPUS, rank_window=None
    )
    assert examples[0]["negative"] == examples[-1]["negative"] == [CORPUS[third]]


@pytest.mark.parametrize("margin", [0.0, 0.01])
def test_margin_drops_documents_scoring_near_the_positive(tiny_model, scores, margin):
    # The positive is each query's 5th document: four score above it.
    positive_index = [_ranking(row)[4] for row in scores]
    positives = [CORPUS[i] for i in positive_index]
    examples = mine_hard_negatives(
        tiny_model, QUERIES, positives, CORPUS, num_negatives=2, rank_window=None,
        margin=margin,
    )
    by_query = {e["query"]: e["negative"] for e in examples}
    for query, row, index in zip(QUERIES, scores, positive_index):
        expected = _ranking(row, excluded={index}, threshold=row[index] - margin)[:2]
        if len(expected) < 2:
            assert query not in by_query
            continue
        assert by_query[query] == [CORPUS[i] for i in expected]
        assert all(row[CORPUS.index(n)] <= row[index] - margin for n in by_query[query])
        assert CORPUS[_ranking(row)[0]] not in by_query[query]


def test_rank_window_samples_within_the_window(tiny_model, scores):
    positives = [CORPUS[i] for i in scores.argmax(axis=1)]
    mine = lambda seed: mine_hard_negatives(  # noqa: E731
        tiny_model, QUERIES, positives, CORPUS, num_negatives=2, rank_window=(2, 8),
        seed=seed,
    )
    first = mine(0)
    for example, row, positive in zip(first, scores, scores.argmax(axis=1)):
        ranking = _ranking(row, excluded={positive})
        ranks = [ranking.index(CORPUS.index(n)) for n in example["negative"]]
        assert len(set(ranks)) == 2 and all(2 <= r < 8 for r in ranks)
        assert ranks == sorted(ranks)
    assert mine(0) == first
    # 15 pairs to choose from per query: six equal draws are (1/15)**6 likely.
    assert mine(1) != first


def test_default_corpus_is_the_positives(tiny_model):
    positives = CORPUS[: len(QUERIES)]
    examples = mine_hard_negatives(tiny_model, QUERIES, positives, rank_window=(1, 3))
    assert len(examples) == len(QUERIES)
    for example, positive in zip(examples, positives):
        assert set(example) == {"query", "positive", "negative"}
        assert example["positive"] == positive
        (negative,) = example["negative"]
        assert negative in positives and negative != positive


def test_pairs_without_enough_negatives_are_left_out_with_a_warning(tiny_model):
    with pytest.warns(UserWarning, match=r"6 of 6 pairs .* ranks \[5, 10\)"):
        examples = mine_hard_negatives(tiny_model, QUERIES, CORPUS[:6], rank_window=(5, 10))
    assert examples == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"positives": CORPUS[:2]}, "one positive per query"),
        ({"rank_window": (5, 5)}, "0 <= start < stop"),
        ({"rank_window": (0, 1), "num_negatives": 2}, "at least num_negatives=2"),
        ({"rank_window": 10}, "pair"),
        ({"margin": -0.1}, "margin"),
        ({"num_negatives": 0}, "num_negatives"),
    ],
)
def test_invalid_options(tiny_model, kwargs, message):
    arguments = {"queries": QUERIES, "positives": CORPUS[:6], **kwargs}
    with pytest.raises(ValueError, match=message):
        mine_hard_negatives(tiny_model, **arguments)
