"""The base of the embedding losses: dicts of embeddings in, a scalar out."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingLoss(keras.losses.Loss):
    """Base of the losses here: `y_true` / `y_pred` are dicts of tensors.

    `keras.losses.Loss.__call__` casts every `y_true` entry to the loss
    dtype, which would turn 63-bit text ids into floats (making distinct
    ids equal), and cannot take `y_true=None`. Here float entries become
    float32, integer entries keep their dtype, `None` passes through, and
    the scalar that `call` returns is returned as is. Per-example
    `sample_weight` is refused: these losses couple the examples of a batch.

    Subclasses implement `call(y_true, y_pred)` returning a scalar.
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} does not support `sample_weight`: "
                "the loss couples the examples of a batch."
            )
        with keras.name_scope(self.name):
            return self.call(_to_tensors(y_true), _to_tensors(y_pred))

    def _check_y_pred(self, y_pred):
        if not isinstance(y_pred, dict) or not {"query", "positive"} <= set(y_pred):
            got = sorted(y_pred) if isinstance(y_pred, dict) else type(y_pred).__name__
            raise ValueError(
                f"{type(self).__name__} needs `y_pred` to be a dict with keys "
                f"'query', 'positive' (and optionally 'negatives'); got {got}."
            )


def _to_tensors(structure):
    def convert(x):
        x = ops.convert_to_tensor(x)
        if "float" in keras.backend.standardize_dtype(x.dtype):
            return ops.cast(x, "float32")
        return x

    return None if structure is None else keras.tree.map_structure(convert, structure)
