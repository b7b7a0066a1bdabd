import keras

from keras_egemma.layers.l2_normalization import l2_normalize

MATRYOSHKA_DIMS = (768, 512, 256, 128)


def matryoshka_truncate(embeddings, dim):
    """Keeps the first `dim` dimensions, then L2-normalises again.

    This is how the published model serves 512, 256 and 128 dimensions (and
    any other size up to 768).

    Args:
        embeddings: `(..., d)` tensor or array.
        dim: int in `(0, d]`.

    Returns:
        `(..., dim)` float32, unit norm.

    Example:
    ```python
    small = matryoshka_truncate(embeddings, 256)
    ```
    """
    check_matryoshka_dim(dim, embeddings.shape[-1])
    return l2_normalize(embeddings[..., :dim])


def check_matryoshka_dim(dim, embedding_dim, trained_dims=None):
    """Refuses a Matryoshka size outside `(0, embedding_dim]`.

    The error names the sizes the model is trained for: `trained_dims` when
    the model records them, the published model's for a 768-d model that
    does not.

    Example:
    ```python
    check_matryoshka_dim(1000, 384, (384, 256, 128, 64))   # ValueError
    ```
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= embedding_dim:
        if trained_dims:
            trained = f" This model is trained for {', '.join(map(str, trained_dims))}."
        elif embedding_dim == MATRYOSHKA_DIMS[0]:
            trained = f" The published model is trained for {', '.join(map(str, MATRYOSHKA_DIMS))}."
        else:
            trained = ""
        raise ValueError(
            f"Matryoshka `dim` must be an integer in (0, {embedding_dim}] (the model's "
            f"embedding size), got {dim!r}.{trained}"
        )


@keras.saving.register_keras_serializable(package="keras_egemma")
class MatryoshkaTruncation(keras.layers.Layer):
    """Layer form of `matryoshka_truncate`: `(..., d)` -> `(..., dim)`.

    Example:
    ```python
    MatryoshkaTruncation(128)(embeddings)
    ```
    """

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def call(self, x):
        return matryoshka_truncate(x, self.dim)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim})
        return config
