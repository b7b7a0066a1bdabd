"""The paper's training objective as one callable: NCE + spread-out (both
under MRL) + embedding distillation when teacher embeddings are given."""

from keras_egemma.losses.distillation import EmbeddingDistillationLoss
from keras_egemma.losses.matryoshka import MatryoshkaLoss
from keras_egemma.losses.nce import NCELoss
from keras_egemma.losses.spread_out import SpreadOutLoss


class EmbeddingGemmaObjective:
    """`L = w_C * MRL(L_C) + w_S * MRL(L_S) + w_D * L_D` (paper section 2.2).

    MRL sums a loss over re-normalised prefixes of the embeddings (768, 512,
    256, 128 for the published model; sizes above the embedding size are
    dropped) with equal weights. The paper weighs the three losses uniformly;
    the weights here default to 1.

    Args:
        embedding_dim: the model's embedding size.
        mrl_dims: Matryoshka sizes, or `None` for the full size only.
        temperature, hardness_alpha, include_positive_in_denominator: see
            `keras_egemma.losses.nce`.
        nce_weight, spread_out_weight, distillation_weight: term weights.
        distillation_distance: `"l2"`, `"cosine"` or `"mse"`.
        teacher_dim: the teacher's embedding size when it differs from
            `embedding_dim`: a learnable projection (`.distillation.projection`)
            maps student embeddings to it.

    Calling it with `(y, y_pred)` returns `(total, {term name: value})`.
    """

    def __init__(
        self,
        embedding_dim,
        mrl_dims=(768, 512, 256, 128),
        temperature=0.05,
        hardness_alpha=5.0,
        include_positive_in_denominator=False,
        nce_weight=1.0,
        spread_out_weight=1.0,
        distillation_weight=1.0,
        distillation_distance="l2",
        teacher_dim=None,
    ):
        dims = sorted({d for d in (mrl_dims or ()) if d <= embedding_dim} | {embedding_dim},
                      reverse=True)
        self.nce = MatryoshkaLoss(
            NCELoss(
                temperature=temperature,
                hardness_alpha=hardness_alpha,
                include_positive_in_denominator=include_positive_in_denominator,
            ),
            dims=dims,
        )
        self.spread_out = MatryoshkaLoss(SpreadOutLoss(), dims=dims)
        projected = teacher_dim is not None and teacher_dim != embedding_dim
        self.distillation = EmbeddingDistillationLoss(
            distance=distillation_distance,
            student_dim=embedding_dim if projected else None,
            teacher_dim=teacher_dim if projected else None,
        )
        self.weights = {
            "nce": float(nce_weight),
            "spread_out": float(spread_out_weight),
            "distillation": float(distillation_weight),
        }

    def __call__(self, y, y_pred):
        y = y or {}
        ids = {k: y[k] for k in ("query_ids", "positive_ids") if k in y}
        terms = {
            "nce": self.nce(ids or None, y_pred),
            "spread_out": self.spread_out(None, y_pred),
        }
        if "teacher" in y:
            terms["distillation"] = self.distillation(y["teacher"], y_pred)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms
