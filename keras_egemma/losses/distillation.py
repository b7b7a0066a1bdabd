"""Embedding-matching distillation: EmbeddingGemma eq. (5)."""

import keras
from keras import ops

from keras_egemma.layers.l2_normalization import l2_normalize
from keras_egemma.losses.base import EmbeddingLoss

DISTANCES = ("l2", "cosine", "mse")
_KEYS = ("query", "positive", "negatives")


def embedding_distillation(student, teacher, *, distance="l2"):
    """Mean distance between student and teacher embeddings: one term of eq. (5).

    The paper's eq. (5) sums three embedding-matching terms with equal
    weights:

        L_D = L_D^Q + L_D^{P+} + L_D^{P-}                                   (5)

    and takes each term from Kim et al. (2023) without writing its distance.
    This function is one term: the mean over the batch of
    `distance(s_i / ||s_i||, t_i / ||t_i||)`.

    Distances (on the normalised vectors):
        - `"l2"`: the Euclidean distance `||s - t||_2`, not squared, as in
          Kim et al.'s `||emb^t - proj(emb^s)||`. (Squared, it would be
          `2 * (1 - cos)`, i.e. `"cosine"` doubled.) Its gradient at
          `s == t` is taken as 0.
        - `"cosine"`: `1 - cos(s, t)`.
        - `"mse"`: `mean_k (s_k - t_k)^2 = 2 (1 - cos) / d`.

    Args:
        student: `(B, d)` or `(B, k, d)` student embeddings.
        teacher: teacher embeddings of the same shape.
        distance: one of `"l2"`, `"cosine"`, `"mse"`.

    Returns:
        Scalar float32: the mean over all leading axes.

    Raises:
        ValueError: unknown `distance`, or the last dimensions differ.

    Example:
    ```python
    loss = embedding_distillation(student_q, teacher_q, distance="cosine")
    ```
    """
    if distance not in DISTANCES:
        raise ValueError(f"`distance` must be one of {DISTANCES}, got {distance!r}.")
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(
            f"Student embeddings have size {student.shape[-1]} but teacher "
            f"embeddings have size {teacher.shape[-1]}. Give "
            "`EmbeddingDistillationLoss` `student_dim` and `teacher_dim` to "
            "learn a projection between them."
        )
    student = l2_normalize(student)
    teacher = l2_normalize(teacher)
    if distance == "cosine":
        per_pair = 1.0 - ops.sum(student * teacher, axis=-1)
    elif distance == "mse":
        per_pair = ops.mean(ops.square(student - teacher), axis=-1)
    else:
        squared = ops.sum(ops.square(student - teacher), axis=-1)
        # sqrt has an infinite slope at 0; `where` keeps that out of the
        # gradient when a student already matches its teacher.
        nonzero = squared > 0.0
        per_pair = ops.where(nonzero, ops.sqrt(ops.where(nonzero, squared, 1.0)), 0.0)
    return ops.mean(per_pair)


@keras.saving.register_keras_serializable(package="keras_egemma")
class DistillationProjection(keras.layers.Layer):
    """Learned bias-free linear map from student to teacher embedding size.

    Kim et al. (2023) match `emb^t` with `proj(emb^s)` when the sizes differ.
    This is `proj`: `x @ kernel`, kernel `(student_dim, teacher_dim)`,
    computed in float32 by default. Its kernel exists from creation, so the
    training code can track it before the first batch.

    Shapes: `(..., student_dim)` -> `(..., teacher_dim)`.

    Example:
    ```python
    projection = DistillationProjection(student_dim=768, teacher_dim=3072)
    projection(np.random.rand(2, 768))   # (2, 3072)
    ```
    """

    def __init__(self, student_dim, teacher_dim, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.student_dim = int(student_dim)
        self.teacher_dim = int(teacher_dim)
        # Both sizes are known, so the kernel is made here (no `build`): it
        # exists before the first batch, and reloading cannot build it twice.
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.student_dim, self.teacher_dim),
            initializer="glorot_uniform",
        )
        self.built = True

    def call(self, x):
        if x.shape[-1] != self.student_dim:
            raise ValueError(
                f"Student embeddings have size {x.shape[-1]}, but the "
                f"distillation projection expects {self.student_dim}."
            )
        return ops.matmul(ops.cast(x, self.compute_dtype), self.kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.teacher_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"student_dim": self.student_dim, "teacher_dim": self.teacher_dim})
        return config


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingDistillationLoss(EmbeddingLoss):
    """Eq. (5) as a Keras loss: queries, positives and hard negatives.

    Eq. (5): `L_D = L_D^Q + L_D^{P+} + L_D^{P-}`, each term
    `embedding_distillation(student, teacher, distance=distance)` (the mean
    over the query, positive or `B * k` hard-negative pairs) with weight 1.
    The hard-negative term is present when `y_pred` has `"negatives"`
    with `k >= 1`.

    A projection: a loss with weights is not standard Keras (a `Loss` is not
    tracked by a model), so the weights live in a `DistillationProjection`
    layer, created when both `student_dim` and `teacher_dim` are given and
    exposed as `.projection`. The training code must track it (e.g. assign
    it to an attribute of the model being trained) so that it is trained
    and saved with the model; `get_config` only records its sizes.

    Args:
        distance: `"l2"` (default), `"cosine"` or `"mse"`; see
            `embedding_distillation`.
        teacher_dim: teacher embedding size (with `student_dim`).
        student_dim: student embedding size (with `teacher_dim`).

    Call arguments:
        y_true: dict of teacher embeddings, the same keys as `y_pred`.
        y_pred: dict of student embeddings: `"query"` `(B, d)`,
            `"positive"` `(B, d)`, optional `"negatives"` `(B, k, d)`.

    Example:
    ```python
    loss = EmbeddingDistillationLoss(student_dim=768, teacher_dim=3072)
    model.distillation_projection = loss.projection   # tracked and trained
    value = loss(teacher_embeddings, student_embeddings)
    ```
    """

    def __init__(
        self, distance="l2", teacher_dim=None, student_dim=None, name="distillation", **kwargs
    ):
        if distance not in DISTANCES:
            raise ValueError(f"`distance` must be one of {DISTANCES}, got {distance!r}.")
        if (teacher_dim is None) != (student_dim is None):
            raise ValueError(
                "Give both `teacher_dim` and `student_dim` (for a projection) or "
                f"neither; got teacher_dim={teacher_dim}, student_dim={student_dim}."
            )
        super().__init__(name=name, **kwargs)
        self.distance = distance
        self.teacher_dim = teacher_dim
        self.student_dim = student_dim
        self.projection = None
        if teacher_dim is not None:
            self.projection = DistillationProjection(
                student_dim, teacher_dim, name=f"{self.name}_projection"
            )

    def call(self, y_true, y_pred):
        self._check_y_pred(y_pred)
        keys = [key for key in _KEYS if key in y_pred]
        if not isinstance(y_true, dict) or [k for k in _KEYS if k in y_true] != keys:
            got = sorted(y_true) if isinstance(y_true, dict) else type(y_true).__name__
            raise ValueError(
                "EmbeddingDistillationLoss needs `y_true` to be a dict of teacher "
                f"embeddings with the keys of `y_pred` {keys}; got {got}."
            )
        total = 0.0
        for key in keys:
            student = y_pred[key]
            if key == "negatives" and student.shape[1] == 0:
                continue
            if self.projection is not None:
                student = self.projection(student)
            total = total + embedding_distillation(
                student, y_true[key], distance=self.distance
            )
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "distance": self.distance,
                "teacher_dim": self.teacher_dim,
                "student_dim": self.student_dim,
            }
        )
        return config
