"""Retrieval metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from keras_egemma.evaluation import retrieval_metrics


def test_hand_computed_example():
    scores = np.array([
        [0.9, 0.1, 0.5, 0.3],   # ranking 0, 2, 3, 1; relevant {2}: rank 2
        [0.2, 0.8, 0.7, 0.1],   # ranking 1, 2, 0, 3; relevant {0, 3}: ranks 3 and 4
    ])
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
