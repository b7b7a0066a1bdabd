"""Contrastive (NCE) loss with in-batch negatives: EmbeddingGemma eq. (2)-(3)."""

import hashlib

import keras
import numpy as np
from keras import ops

from keras_egemma.layers.l2_normalization import l2_normalize
from keras_egemma.losses.base import EmbeddingLoss


def text_ids(texts):
    """Stable 63-bit ids of texts, for `duplicate_mask_from_ids`.

    Equal texts get equal ids in every process and on every machine (unlike
    Python's salted `hash`), so ids can be computed in the data pipeline.
    Texts are compared exactly: normalise them first if near-duplicates
    (case, whitespace) should count as duplicates.

    Under JAX without `jax_enable_x64`, int64 ids become int32 (the low 32
    bits) when converted to tensors: equal texts still get equal ids, and a
    chance collision (about B^2 / 2^33 per batch) only drops one negative.

    Args:
        texts: sequence of `str`.

    Returns:
        `(len(texts),)` `np.int64` array of non-negative ids.

    Example:
    ```python
    text_ids(["a cat", "a dog", "a cat"])   # first and last ids are equal
    ```
    """
    if isinstance(texts, str):
        raise TypeError("`text_ids` takes a list of texts, not one string.")
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little"
            )
            >> 1
            for text in texts
        ],
        dtype=np.int64,
    )


def _off_diagonal(batch_size):
    index = ops.arange(batch_size)
    return ops.not_equal(index[:, None], index[None, :])


def duplicate_mask_from_ids(query_ids, positive_ids):
    """The duplicate pairs that eq. (3) masks out, from ids of the input texts.

    Eq. (3): `1_TN(i, j) = 0 if q_i = q_j or p_i^+ = p_j^+, 1 otherwise`.
    Duplicates are found from ids of the texts (see `text_ids`) or dataset
    ids, never from float equality of embeddings. The diagonal is always
    False: whether the positive pair itself stays in the denominator is
    `nce`'s `include_positive_in_denominator`.

    Args:
        query_ids: `(B,)` int ids of the queries, or None to use only
            `positive_ids`.
        positive_ids: `(B,)` int ids of the positive passages, or None to
            use only `query_ids`.

    Returns:
        `(B, B)` bool tensor, True at `(i, j)`, `i != j`, where
        `query_ids[i] == query_ids[j]` or `positive_ids[i] == positive_ids[j]`.

    Example:
    ```python
    mask = duplicate_mask_from_ids(text_ids(queries), text_ids(passages))
    ```
    """
    ids = [ops.convert_to_tensor(x) for x in (query_ids, positive_ids) if x is not None]
    if not ids:
        raise ValueError("`duplicate_mask_from_ids` needs query_ids or positive_ids.")
    same = None
    for x in ids:
        equal = ops.equal(x[:, None], x[None, :])
        same = equal if same is None else ops.logical_or(same, equal)
    return ops.logical_and(same, _off_diagonal(ops.shape(ids[0])[0]))


def nce(
    query,
    positive,
    negatives=None,
    *,
    temperature=0.05,
    hardness_alpha=5.0,
    duplicate_mask=None,
    include_positive_in_denominator=False,
):
    """NCE loss with in-batch negatives and weighted hard negatives, eq. (2).

    The paper's eq. (2) and (3):

        L_C = 1/B sum_{i=1}^{B} [ -log( e^{sim(q_i, p_i^+)/tau}
              / ( w_i e^{sim(q_i, p_i^-)/tau}
                  + sum_{j=1}^{B} 1_TN(i, j) e^{sim(q_i, p_j^+)/tau} ) ) ]   (2)

        1_TN(i, j) = 0 if q_i = q_j or p_i^+ = p_j^+, 1 otherwise             (3)

    with `sim` the cosine similarity and
    `w_i = exp(alpha * sg(sim(q_i, p_i^-)))` (`sg`: stop-gradient).

    Exactly these terms are computed: the in-batch terms are query `i`
    against the positives `p_j^+` of the batch only (no query-query or
    passage-passage terms, which eq. (2) does not have). With `k` hard
    negatives per query, each gets its own weight
    `w_ik = exp(alpha * sg(sim(q_i, p_ik^-)))`; `k = 1` is the paper's case,
    `k = 0` (or `negatives=None`) drops the hard-negative term.

    The positive in the denominator: read literally, eq. (3) gives
    `1_TN(i, i) = 0` (`q_i = q_i`), so the positive pair is not in the
    denominator (a decoupled contrastive loss). That is the default here,
    as the paper writes it. `include_positive_in_denominator=True` keeps
    `j = i`, the usual InfoNCE denominator; duplicates `j != i` stay masked
    either way.

    A row whose denominator is empty (no hard negatives, every in-batch term
    masked) has no negatives to contrast against; it contributes 0 (and no
    gradient) instead of eq. (2)'s infinite value. The mean still divides by
    `B`, as eq. (2) does.

    Args:
        query: `(B, d)` query embeddings (need not be normalised).
        positive: `(B, d)` positive passage embeddings.
        negatives: `(B, k, d)` hard negative embeddings, `k >= 0`, or None.
        temperature: tau in eq. (2).
        hardness_alpha: alpha in `w_i`; the paper uses 5.0. 0 gives `w_i = 1`.
        duplicate_mask: `(B, B)` bool, True at `(i, j)` to drop `p_j^+` from
            query `i`'s denominator (eq. (3)); see `duplicate_mask_from_ids`.
            The diagonal is ignored (set by `include_positive_in_denominator`).
        include_positive_in_denominator: keep `j = i` in the denominator.

    Returns:
        Scalar float32, the mean of eq. (2)'s bracket over the batch.

    Raises:
        ValueError: at trace time, when the static batch size is 1, there are
            no hard negatives and the positive is excluded: every
            denominator would be empty.

    Example:
    ```python
    q, p = np.random.rand(8, 768), np.random.rand(8, 768)
    n = np.random.rand(8, 1, 768)
    mask = duplicate_mask_from_ids(text_ids(queries), text_ids(passages))
    loss = nce(q, p, n, duplicate_mask=mask)
    ```
    """
    query = l2_normalize(query)
    positive = l2_normalize(positive)
    num_hard = 0 if negatives is None else negatives.shape[1]
    if query.shape[0] == 1 and num_hard == 0 and not include_positive_in_denominator:
        raise ValueError(
            "`nce` with a batch of 1, no hard negatives and "
            "`include_positive_in_denominator=False` has an empty denominator "
            "in eq. (2): use a larger batch, hard negatives, or "
            "`include_positive_in_denominator=True`."
        )
    batch_size = ops.shape(query)[0]

    sims = ops.matmul(query, ops.transpose(positive))  # sim(q_i, p_j^+)
    positive_logits = ops.diagonal(sims) / temperature
    logits = sims / temperature
    if duplicate_mask is None:
        keep = ops.ones_like(sims, dtype="bool")
    else:
        keep = ops.logical_not(ops.convert_to_tensor(duplicate_mask, dtype="bool"))
    # The diagonal is the positive pair: eq. (3) read literally drops it.
    off_diagonal = _off_diagonal(batch_size)
    if include_positive_in_denominator:
        keep = ops.logical_or(keep, ops.logical_not(off_diagonal))
    else:
        keep = ops.logical_and(keep, off_diagonal)

    if num_hard != 0:
        negatives = l2_normalize(negatives)
        hard_sims = ops.einsum("bd,bkd->bk", query, negatives)
        # log(w_ik e^{s/tau}) = alpha sg(s) + s/tau: no gradient through w.
        hard_logits = hard_sims / temperature + hardness_alpha * ops.stop_gradient(
            hard_sims
        )
        logits = ops.concatenate([hard_logits, logits], axis=-1)
        keep = ops.concatenate([ops.ones_like(hard_logits, dtype="bool"), keep], axis=-1)

    # Log-sum-exp over the kept entries. The shift is the row max of kept
    # entries (the row min stands in for masked ones, so it stays finite);
    # masked entries are zeroed before exp, so neither the value nor the
    # gradient can see an inf or NaN.
    floor = ops.min(logits, axis=-1, keepdims=True)
    shift = ops.stop_gradient(
        ops.max(ops.where(keep, logits, floor), axis=-1, keepdims=True)
    )
    terms = ops.where(keep, ops.exp(ops.where(keep, logits - shift, 0.0)), 0.0)
    total = ops.sum(terms, axis=-1)
    nonempty = ops.any(keep, axis=-1)
    log_denominator = ops.squeeze(shift, -1) + ops.log(ops.where(nonempty, total, 1.0))
    per_query = ops.where(nonempty, log_denominator - positive_logits, 0.0)
    return ops.mean(per_query)


@keras.saving.register_keras_serializable(package="keras_egemma")
class NCELoss(EmbeddingLoss):
    """EmbeddingGemma's contrastive loss, eq. (2)-(3), as a Keras loss.

    Eq. (2): `L_C = 1/B sum_i -log( e^{sim(q_i,p_i^+)/tau} /
    (w_i e^{sim(q_i,p_i^-)/tau} + sum_j 1_TN(i,j) e^{sim(q_i,p_j^+)/tau}) )`,
    with eq. (3)'s `1_TN(i, j) = 0 if q_i = q_j or p_i^+ = p_j^+`.
    See `nce` for the exact reading; by default the positive is not in the
    denominator, as eq. (3) read literally gives.

    Args:
        temperature: tau. Defaults to 0.05.
        hardness_alpha: alpha of the hardness weight. Defaults to 5.0.
        mask_duplicates: build eq. (3)'s mask from `y_true["query_ids"]` /
            `y_true["positive_ids"]` when present. Without ids nothing is
            masked (duplicates are never guessed from embeddings).
        include_positive_in_denominator: see `nce`. Defaults to False.

    Call arguments:
        y_true: None, or a dict with optional `"query_ids"` / `"positive_ids"`,
            `(B,)` int ids (e.g. `text_ids(texts)`).
        y_pred: dict with `"query"` `(B, d)`, `"positive"` `(B, d)` and
            optional `"negatives"` `(B, k, d)`.

    Returns a scalar (the batch mean).

    Example:
    ```python
    loss = NCELoss()
    value = loss(
        {"query_ids": text_ids(queries), "positive_ids": text_ids(passages)},
        {"query": q, "positive": p, "negatives": n},
    )
    ```
    """

    def __init__(
        self,
        temperature=0.05,
        hardness_alpha=5.0,
        mask_duplicates=True,
        include_positive_in_denominator=False,
        name="nce",
        **kwargs,
    ):
        if temperature <= 0:
            raise ValueError(f"`temperature` must be positive, got {temperature}.")
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)
        self.hardness_alpha = float(hardness_alpha)
        self.mask_duplicates = bool(mask_duplicates)
        self.include_positive_in_denominator = bool(include_positive_in_denominator)

    def call(self, y_true, y_pred):
        self._check_y_pred(y_pred)
        duplicate_mask = None
        if self.mask_duplicates and y_true is not None:
            query_ids = y_true.get("query_ids")
            positive_ids = y_true.get("positive_ids")
            if query_ids is not None or positive_ids is not None:
                duplicate_mask = duplicate_mask_from_ids(query_ids, positive_ids)
        return nce(
            y_pred["query"],
            y_pred["positive"],
            y_pred.get("negatives"),
            temperature=self.temperature,
            hardness_alpha=self.hardness_alpha,
            duplicate_mask=duplicate_mask,
            include_positive_in_denominator=self.include_positive_in_denominator,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "temperature": self.temperature,
                "hardness_alpha": self.hardness_alpha,
                "mask_duplicates": self.mask_duplicates,
                "include_positive_in_denominator": self.include_positive_in_denominator,
            }
        )
        return config
