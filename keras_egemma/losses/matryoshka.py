"""Matryoshka (MRL) wrapper: a loss summed over nested embedding sizes."""

import keras

from keras_egemma.layers.matryoshka import MATRYOSHKA_DIMS
from keras_egemma.layers.matryoshka import matryoshka_truncate
from keras_egemma.losses.base import EmbeddingLoss


@keras.saving.register_keras_serializable(package="keras_egemma")
class MatryoshkaLoss(EmbeddingLoss):
    """Applies a loss at each nested embedding size and sums, unweighted.

    The paper (section 2.2): "We adapt the contrastive and spread-out losses
    using MRL (Kusupati et al., 2022), which splits each loss into k separate
    losses applied to k overlapping sub-dimensions of the embedding. We
    consider each of these individual losses equally, simply adding their
    values during training without any special weights." So:

        L_MRL = sum_{m in dims} L(y_true, {key: normalise(y_pred[key][..., :m])})

    Every entry of `y_pred` (query, positive, negatives) is cut to its first
    `m` dimensions and L2-normalised again, as the served model does;
    `y_true` (ids) is passed unchanged. The paper does not apply MRL to
    distillation (eq. (5)), whose `y_true` would need cutting too.

    Args:
        loss: the inner `keras.losses.Loss` (e.g. `NCELoss()`), or its
            serialised config.
        dims: nested sizes; each at most the embedding size. Defaults to
            `(768, 512, 256, 128)`.

    Call arguments:
        y_true, y_pred: as the inner loss takes them.

    Example:
    ```python
    loss = MatryoshkaLoss(NCELoss(), dims=(768, 512, 256, 128))
    value = loss(None, {"query": q, "positive": p})
    ```
    """

    def __init__(self, loss, dims=MATRYOSHKA_DIMS, name=None, **kwargs):
        if isinstance(loss, dict):
            loss = keras.losses.deserialize(loss)
        if not isinstance(loss, keras.losses.Loss):
            raise TypeError(f"`loss` must be a keras.losses.Loss, got {loss!r}.")
        dims = tuple(dims)
        if not dims or any(
            isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0 for dim in dims
        ):
            raise ValueError(f"`dims` must be positive integers, got {dims!r}.")
        super().__init__(name=name or f"matryoshka_{loss.name}", **kwargs)
        self.loss = loss
        self.dims = dims

    def call(self, y_true, y_pred):
        for key, embeddings in y_pred.items():
            if max(self.dims) > embeddings.shape[-1]:
                raise ValueError(
                    f"MatryoshkaLoss dims {self.dims} exceed the size "
                    f"{embeddings.shape[-1]} of y_pred[{key!r}]."
                )
        total = 0.0
        for dim in self.dims:
            prefixes = {
                key: matryoshka_truncate(embeddings, dim)
                for key, embeddings in y_pred.items()
            }
            total = total + self.loss(y_true, prefixes)
        return total

    def get_config(self):
        config = super().get_config()
        config.update({"loss": keras.losses.serialize(self.loss), "dims": list(self.dims)})
        return config
