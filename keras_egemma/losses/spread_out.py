"""Spread-out (global orthogonal) regulariser: EmbeddingGemma eq. (4)."""

import keras
from keras import ops

from keras_egemma.layers.l2_normalization import l2_normalize
from keras_egemma.losses.base import EmbeddingLoss


def _second_moment(x):
    """`1/(B(B-1)) sum_{i != j} (x_i^T x_j)^2` of unit rows `x`."""
    if x.shape[0] == 1:
        raise ValueError(
            "`spread_out` needs a batch of at least 2: eq. (4) averages over "
            "pairs i != j, and a batch of 1 has none."
        )
    batch_size = ops.shape(x)[0]
    index = ops.arange(batch_size)
    off_diagonal = ops.not_equal(index[:, None], index[None, :])
    # Masking (not subtracting the diagonal's 1s) keeps the small
    # off-diagonal sum exact in float32.
    squares = ops.where(off_diagonal, ops.square(ops.matmul(x, ops.transpose(x))), 0.0)
    pairs = ops.cast(batch_size * (batch_size - 1), "float32")
    # A batch of 1 with an unknown static size has no pairs: 0, not 0/0.
    return ops.sum(squares) / ops.maximum(pairs, 1.0)


def spread_out(query, positive):
    """The spread-out loss of eq. (4) (second moment of the GOR).

    The paper's eq. (4):

        L_S = 1/(B(B-1)) sum_{i,j in B: i != j} (q_i^T q_j)^2
            + 1/(B(B-1)) sum_{i,j in B: i != j} (p_i^+T p_j^+)^2          (4)

    Ordered pairs, so each unordered pair counts twice and the division is by
    `B(B-1)`: each term is the mean over pairs `i != j`. The embeddings are
    L2-normalised first, since the regulariser compares them with points
    drawn uniformly on the unit sphere (whose second moment is `1/d`).

    Args:
        query: `(B, d)` query embeddings (need not be normalised), `B >= 2`.
        positive: `(B, d)` positive passage embeddings.

    Returns:
        Scalar float32.

    Raises:
        ValueError: when the static batch size is 1 (no pairs).

    Example:
    ```python
    loss = spread_out(np.random.rand(8, 768), np.random.rand(8, 768))
    ```
    """
    return _second_moment(l2_normalize(query)) + _second_moment(l2_normalize(positive))


@keras.saving.register_keras_serializable(package="keras_egemma")
class SpreadOutLoss(EmbeddingLoss):
    """Eq. (4) as a Keras loss; see `spread_out`.

    Eq. (4): `L_S = 1/(B(B-1)) sum_{i != j} (q_i^T q_j)^2
    + 1/(B(B-1)) sum_{i != j} (p_i^+T p_j^+)^2`.

    Call arguments:
        y_true: ignored (None or any dict, e.g. the one `NCELoss` takes).
        y_pred: dict with `"query"` `(B, d)` and `"positive"` `(B, d)`;
            other keys (`"negatives"`) are ignored, as in eq. (4).

    Example:
    ```python
    SpreadOutLoss()(None, {"query": q, "positive": p})
    ```
    """

    def __init__(self, name="spread_out", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        self._check_y_pred(y_pred)
        return spread_out(y_pred["query"], y_pred["positive"])
