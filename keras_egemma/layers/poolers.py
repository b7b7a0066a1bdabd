"""Pooler lookup by name: "mean" (the published model), "first", "last",
"attention" (the paper's ablation)."""

from keras_egemma.layers.attention_pooling import AttentionPooling
from keras_egemma.layers.first_token_pooling import FirstTokenPooling
from keras_egemma.layers.last_token_pooling import LastTokenPooling
from keras_egemma.layers.mean_pooling import MeanPooling

POOLERS = {
    "mean": MeanPooling,
    "first": FirstTokenPooling,
    "last": LastTokenPooling,
    "attention": AttentionPooling,
}


def get_pooler(pooling, **kwargs):
    """Returns a new pooling layer for `pooling`, one of `POOLERS`.

    Example:
    ```python
    pooler = get_pooler("mean", name="pooler")
    ```
    """
    if pooling not in POOLERS:
        raise ValueError(
            f"Unknown pooling {pooling!r}. Choose one of {sorted(POOLERS)}."
        )
    return POOLERS[pooling](**kwargs)
