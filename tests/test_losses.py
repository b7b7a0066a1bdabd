"""Losses against plain-numpy versions of the paper's eq. (2)-(5), per backend.

The references below are written from the equations (loops over i, j in
float64), not from keras_egemma.losses.
"""

import keras
import numpy as np
import pytest

from keras_egemma import losses as L

TAU, ALPHA = 0.05, 5.0


# ----------------------------------------------------------------------------
# numpy references
# ----------------------------------------------------------------------------


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_nce(q, p, n=None, tau=TAU, alpha=ALPHA, dup=None, include_pos=False, n_for_w=None):
    """Eq. (2) with the mask of eq. (3); `dup[i, j]` marks q_i = q_j or
    p_i = p_j. `n_for_w` (default `n`) is where the hardness weights are
    taken, to hold w constant for a finite-difference gradient."""
    q, p = unit(q), unit(p)
    batch = len(q)
    n_for_w = n if n_for_w is None else n_for_w
    total = 0.0
    for i in range(batch):
        numerator = np.exp(q[i] @ p[i] / tau)
        denominator = 0.0
        if n is not None:
            for k in range(n.shape[1]):
                w = np.exp(alpha * (q[i] @ unit(n_for_w[i, k])))
                denominator += w * np.exp(q[i] @ unit(n[i, k]) / tau)
        for j in range(batch):
            if j == i:
                true_negative = include_pos  # eq. (3) literally: q_i = q_i -> 0
            else:
                true_negative = dup is None or not dup[i, j]
            denominator += true_negative * np.exp(q[i] @ p[j] / tau)
        # Empty denominator: the row has nothing to contrast with (convention).
        total += 0.0 if denominator == 0 else -np.log(numerator / denominator)
    return total / batch


def np_dup(query_keys, positive_keys):
    batch = len(query_keys)
    return np.array(
        [
            [i != j and (query_keys[i] == query_keys[j] or positive_keys[i] == positive_keys[j])
             for j in range(batch)]
            for i in range(batch)
        ]
    )


def np_spread_out(q, p):
    """Eq. (4) on normalised embeddings."""
    def term(x):
        x = unit(x)
        batch = len(x)
        pairs = [(x[i] @ x[j]) ** 2 for i in range(batch) for j in range(batch) if i != j]
        return sum(pairs) / (batch * (batch - 1))

    return term(q) + term(p)


def np_distance(s, t, distance):
    s, t = unit(s), unit(t)
    if distance == "l2":
        d = np.linalg.norm(s - t, axis=-1)
    elif distance == "cosine":
        d = 1.0 - np.sum(s * t, axis=-1)
    else:
        d = np.mean((s - t) ** 2, axis=-1)
    return d.mean()


def batch(seed, b=6, d=16, k=1):
    # Few distinct shapes: eager JAX compiles every op once per shape.
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, d)).astype("float32")
    p = (q + rng.normal(size=(b, d))).astype("float32")
    n = (q[:, None] + 1.5 * rng.normal(size=(b, k, d))).astype("float32")
    return q, p, n


def value(x):
    return float(keras.ops.convert_to_numpy(x))


def grad(fn, x):
    """Gradient of scalar `fn(tensor)` at numpy `x`, with the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.jit(jax.grad(fn))(x))  # one compile, not one per op
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = fn(t)
        return tape.gradient(y, t).numpy()
    import torch

    t = torch.tensor(x, requires_grad=True)
    fn(t).backward()
    return t.grad.numpy()


# ----------------------------------------------------------------------------
# NCE, eq. (2)-(3)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("include_pos", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_nce_matches_equation_2(k, include_pos, seed):
    q, p, n = batch(seed, k=k)
    got = L.nce(q, p, n, include_positive_in_denominator=include_pos)
    want = np_nce(q, p, n, include_pos=include_pos)
    np.testing.assert_allclose(value(got), want, rtol=1e-5, atol=1e-5)


def test_nce_without_negatives_equals_k0():
    q, p, n = batch(2, k=0)
    np.testing.assert_allclose(value(L.nce(q, p)), value(L.nce(q, p, n)), rtol=1e-6)
    np.testing.assert_allclose(value(L.nce(q, p)), np_nce(q, p), rtol=1e-5)


def test_nce_other_temperature_and_alpha():
    q, p, n = batch(3, k=3)
    got = L.nce(q, p, n, temperature=0.01, hardness_alpha=2.0)
    np.testing.assert_allclose(value(got), np_nce(q, p, n, tau=0.01, alpha=2.0), rtol=1e-5)


@pytest.mark.parametrize("k", [0, 1])
@pytest.mark.parametrize("include_pos", [False, True])
def test_nce_explicit_duplicate_mask(k, include_pos):
    q, p, n = batch(4, k=k)
    q[3], p[2] = q[0], p[1]  # real duplicates, so masking them matters
    dup = np.zeros((6, 6), bool)
    dup[0, 3] = dup[3, 0] = dup[1, 2] = dup[2, 1] = True
    dup[4, 4] = True  # the diagonal is ignored: include_pos decides it
    got = L.nce(q, p, n, duplicate_mask=dup, include_positive_in_denominator=include_pos)
    want = np_nce(q, p, n, dup=dup & ~np.eye(6, dtype=bool), include_pos=include_pos)
    np.testing.assert_allclose(value(got), want, rtol=1e-5)
    unmasked = np_nce(q, p, n, include_pos=include_pos)
    assert abs(want - unmasked) > 1e-3  # the mask changes the loss


@pytest.mark.parametrize("include_pos", [False, True])
def test_nce_loss_masks_real_duplicates_from_text_ids(include_pos):
    queries = ["who is ada", "what is keras", "who is ada", "define gemma", "jax vs torch",
               "what is jax"]
    passages = ["ada lovelace", "a deep learning api", "ada lovelace.", "a model", "a model",
                "a library"]
    rng = np.random.default_rng(5)
    table = {t: rng.normal(size=16).astype("float32") for t in set(queries + passages)}
    # Equal texts embed equally, as a real encoder would make them.
    q = np.stack([table[t] for t in queries])
    p = np.stack([table[t] for t in passages])
    n = rng.normal(size=(6, 1, 16)).astype("float32")
    y_true = {"query_ids": L.text_ids(queries), "positive_ids": L.text_ids(passages)}
    y_pred = {"query": q, "positive": p, "negatives": n}
    dup = np_dup(queries, passages)
    assert dup[0, 2] and dup[3, 4] and not dup[0, 1]

    loss = L.NCELoss(include_positive_in_denominator=include_pos)
    want = np_nce(q, p, n, dup=dup, include_pos=include_pos)
    np.testing.assert_allclose(value(loss(y_true, y_pred)), want, rtol=1e-5)
    mask = keras.ops.convert_to_numpy(L.duplicate_mask_from_ids(*y_true.values()))
    np.testing.assert_array_equal(mask, dup)

    off = L.NCELoss(mask_duplicates=False, include_positive_in_denominator=include_pos)
    want_off = np_nce(q, p, n, include_pos=include_pos)
    np.testing.assert_allclose(value(off(y_true, y_pred)), want_off, rtol=1e-5)
    np.testing.assert_allclose(value(off(None, y_pred)), want_off, rtol=1e-5)


def test_duplicate_mask_from_one_kind_of_ids():
    ids = np.array([7, 8, 7, 9])
    mask = keras.ops.convert_to_numpy(L.duplicate_mask_from_ids(ids, None))
    np.testing.assert_array_equal(mask, np_dup(ids, range(4)))


def test_ids_stay_integers():
    # 2**40 + i, i < 6, are one float32: a float cast would mask them all.
    q, p, _ = batch(6)
    ids = 2**40 + np.arange(6, dtype=np.int64)
    loss = L.NCELoss(temperature=1.0, include_positive_in_denominator=True)
    got = loss({"query_ids": ids, "positive_ids": ids}, {"query": q, "positive": p})
    want = np_nce(q, p, tau=1.0, include_pos=True)
    assert want > 1e-3  # masking the pair would give exactly 0
    np.testing.assert_allclose(value(got), want, rtol=1e-5)


def test_text_ids():
    ids = L.text_ids(["a", "b", "a", "é"])
    assert ids.dtype == np.int64 and (ids >= 0).all()
    assert ids[0] == ids[2] and len(set(ids.tolist())) == 3
    np.testing.assert_array_equal(ids, L.text_ids(["a", "b", "a", "é"]))
    with pytest.raises(TypeError):
        L.text_ids("one string")


def _nce_of_negatives(q, p, dup=None):
    return lambda negatives: L.nce(q, p, negatives, duplicate_mask=dup)


@pytest.mark.parametrize("k", [1, 3])
def test_no_gradient_through_hardness_weight(k):
    q, p, n = batch(7, b=4, d=8, k=k)
    got = grad(_nce_of_negatives(q, p), n)

    def fd(frozen_w):
        out, eps = np.zeros(n.shape), 1e-6
        n64 = n.astype(np.float64)
        for index in np.ndindex(n.shape):
            plus, minus = n64.copy(), n64.copy()
            plus[index] += eps
            minus[index] -= eps
            w_plus, w_minus = (n64, n64) if frozen_w else (plus, minus)
            out[index] = (
                np_nce(q, p, plus, n_for_w=w_plus) - np_nce(q, p, minus, n_for_w=w_minus)
            ) / (2 * eps)
        return out

    np.testing.assert_allclose(got, fd(frozen_w=True), rtol=2e-3, atol=2e-4)
    # And the test can tell: differentiating through w gives another gradient.
    assert np.abs(got - fd(frozen_w=False)).max() > 1e-2


def test_fully_masked_rows_are_finite():
    q, p, n = batch(8, k=1)
    everything = ~np.eye(6, dtype=bool)
    # Hard negatives left: the in-batch set of every row is empty.
    got = L.nce(q, p, n, duplicate_mask=everything)
    np.testing.assert_allclose(value(got), np_nce(q, p, n, dup=everything), rtol=1e-5)
    for g in (grad(_nce_of_negatives(q, p, everything), n),
              grad(lambda x: L.nce(x, p, n, duplicate_mask=everything), q),
              grad(lambda x: L.nce(q, x, n, duplicate_mask=everything), p)):
        assert np.isfinite(g).all()
    # No negatives at all: empty denominators contribute 0, finitely.
    assert value(L.nce(q, p, duplicate_mask=everything)) == 0.0
    g = grad(lambda x: L.nce(x, p, duplicate_mask=everything), q)
    assert np.isfinite(g).all() and not g.any()
    # One row emptied, the rest normal.
    partial = np.zeros((6, 6), bool)
    partial[0, 1:] = True
    got = L.nce(q, p, duplicate_mask=partial)
    np.testing.assert_allclose(value(got), np_nce(q, p, dup=partial), rtol=1e-5)
    assert np.isfinite(grad(lambda x: L.nce(x, p, duplicate_mask=partial), q)).all()


def test_nce_extreme_logits_are_finite():
    # Identical queries, positives and negatives: every logit at its maximum.
    q = np.tile(np.random.default_rng(9).normal(size=(1, 16)), (6, 1)).astype("float32")
    n = q[:, None, :].copy()
    got = L.nce(q, q, n, temperature=0.01)
    np.testing.assert_allclose(value(got), np_nce(q, q, n, tau=0.01), rtol=1e-5)
    assert np.isfinite(grad(lambda x: L.nce(x, q, n, temperature=0.01), q)).all()


def test_nce_batch_of_one():
    q, p, n = batch(10, b=1, k=1)
    with pytest.raises(ValueError, match="empty denominator"):
        L.nce(q, p)
    with pytest.raises(ValueError, match="empty denominator"):
        L.NCELoss()(None, {"query": q, "positive": p})
    np.testing.assert_allclose(value(L.nce(q, p, n)), np_nce(q, p, n), rtol=1e-5)
    assert abs(value(L.nce(q, p, include_positive_in_denominator=True))) < 1e-6


# ----------------------------------------------------------------------------
# Spread-out, eq. (4)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spread_out_matches_equation_4(seed):
    q, p, _ = batch(seed, b=6 + seed // 2)
    np.testing.assert_allclose(value(L.spread_out(q, p)), np_spread_out(q, p), rtol=1e-5)
    y_pred = {"query": q, "positive": p, "negatives": np.zeros((len(q), 1, 16))}
    np.testing.assert_allclose(
        value(L.SpreadOutLoss()(None, y_pred)), np_spread_out(q, p), rtol=1e-5
    )


def test_spread_out_batch_of_one():
    q, p, _ = batch(0, b=1)
    with pytest.raises(ValueError, match="at least 2"):
        L.spread_out(q, p)


# ----------------------------------------------------------------------------
# Distillation, eq. (5)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["l2", "cosine", "mse"])
def test_distillation_matches_equation_5(distance):
    rng = np.random.default_rng(11)
    student = {"query": rng.normal(size=(4, 8)), "positive": rng.normal(size=(4, 8)),
               "negatives": rng.normal(size=(4, 3, 8))}
    teacher = {key: x + 0.3 * rng.normal(size=x.shape) for key, x in student.items()}
    for key in student:
        got = L.embedding_distillation(student[key], teacher[key], distance=distance)
        np.testing.assert_allclose(
            value(got), np_distance(student[key], teacher[key], distance), rtol=1e-5
        )
    loss = L.EmbeddingDistillationLoss(distance=distance)
    want = sum(np_distance(student[key], teacher[key], distance) for key in student)
    np.testing.assert_allclose(value(loss(teacher, student)), want, rtol=1e-5)
    # Without hard negatives (or with k = 0), two terms.
    pair = ("query", "positive")
    want = sum(np_distance(student[key], teacher[key], distance) for key in pair)
    two = ({key: teacher[key] for key in pair}, {key: student[key] for key in pair})
    np.testing.assert_allclose(value(loss(*two)), want, rtol=1e-5)
    empty = np.zeros((4, 0, 8))
    got = loss({**two[0], "negatives": empty}, {**two[1], "negatives": empty})
    np.testing.assert_allclose(value(got), want, rtol=1e-5)


def test_distillation_l2_gradient_at_match_is_finite():
    x = np.random.default_rng(12).normal(size=(3, 8)).astype("float32")
    g = grad(lambda s: L.embedding_distillation(s, x, distance="l2"), x)
    assert np.isfinite(g).all()


def test_distillation_projection():
    rng = np.random.default_rng(13)
    student = {"query": rng.normal(size=(4, 6)), "positive": rng.normal(size=(4, 6)),
               "negatives": rng.normal(size=(4, 2, 6))}
    teacher = {key: rng.normal(size=(*x.shape[:-1], 10)) for key, x in student.items()}
    loss = L.EmbeddingDistillationLoss(distance="cosine", student_dim=6, teacher_dim=10)
    assert isinstance(loss.projection, L.DistillationProjection)
    kernel = keras.ops.convert_to_numpy(loss.projection.kernel)
    assert kernel.shape == (6, 10)
    want = sum(np_distance(student[k] @ kernel, teacher[k], "cosine") for k in student)
    np.testing.assert_allclose(value(loss(teacher, student)), want, rtol=1e-5)


def test_distillation_bad_inputs():
    s, t = np.ones((2, 4)), np.ones((2, 6))
    with pytest.raises(ValueError, match="size 4 .* size 6"):
        L.embedding_distillation(s, t)
    with pytest.raises(ValueError, match="size 4 .* size 6"):
        L.EmbeddingDistillationLoss()({"query": t, "positive": t}, {"query": s, "positive": s})
    with pytest.raises(ValueError, match="both"):
        L.EmbeddingDistillationLoss(teacher_dim=6)
    with pytest.raises(ValueError, match="distance"):
        L.EmbeddingDistillationLoss(distance="l1")
    with pytest.raises(ValueError, match="keys"):
        L.EmbeddingDistillationLoss()({"query": s, "positive": s},
                                      {"query": s, "positive": s, "negatives": s[:, None]})
    with pytest.raises(ValueError, match="'query', 'positive'"):
        L.SpreadOutLoss()(None, {"query": s})


# ----------------------------------------------------------------------------
# Matryoshka
# ----------------------------------------------------------------------------


def test_matryoshka_sums_prefix_losses():
    q, p, n = batch(14, k=3)
    queries = ["a", "b", "a", "c", "d", "e"]
    passages = ["1", "2", "3", "4", "5", "6"]
    y_true = {"query_ids": L.text_ids(queries), "positive_ids": L.text_ids(passages)}
    y_pred = {"query": q, "positive": p, "negatives": n}
    dims = (16, 8, 4)
    dup = np_dup(queries, passages)
    want = sum(np_nce(q[:, :m], p[:, :m], n[..., :m], dup=dup) for m in dims)
    got = L.MatryoshkaLoss(L.NCELoss(), dims=dims)(y_true, y_pred)
    np.testing.assert_allclose(value(got), want, rtol=1e-5)

    want = sum(np_spread_out(q[:, :m], p[:, :m]) for m in dims)
    got = L.MatryoshkaLoss(L.SpreadOutLoss(), dims=dims)(None, y_pred)
    np.testing.assert_allclose(value(got), want, rtol=1e-5)


def test_matryoshka_bad_dims():
    q, p, _ = batch(15)
    with pytest.raises(ValueError, match="exceed the size 16"):
        L.MatryoshkaLoss(L.SpreadOutLoss())(None, {"query": q, "positive": p})
    with pytest.raises(ValueError, match="positive integers"):
        L.MatryoshkaLoss(L.SpreadOutLoss(), dims=(8, 0))


# ----------------------------------------------------------------------------
# Serialisation and use in training
# ----------------------------------------------------------------------------


SERIALISABLE = [
    L.NCELoss(temperature=0.02, hardness_alpha=3.0, mask_duplicates=False,
              include_positive_in_denominator=True, name="c"),
    L.SpreadOutLoss(name="s"),
    L.EmbeddingDistillationLoss(distance="mse"),
    L.EmbeddingDistillationLoss(distance="cosine", teacher_dim=12, student_dim=8),
    L.MatryoshkaLoss(L.NCELoss(temperature=0.1), dims=(8, 4)),
    L.MatryoshkaLoss(L.SpreadOutLoss(), name="mrl_spread"),
]


@pytest.mark.parametrize("loss", SERIALISABLE, ids=lambda x: x.name)
def test_config_round_trip(loss):
    config = loss.get_config()
    again = type(loss).from_config(config)
    assert again.get_config() == config
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == config


def test_projection_config_round_trip():
    layer = L.DistillationProjection(student_dim=4, teacher_dim=6)
    layer(np.ones((2, 4)))  # records a build config, as a trained layer has
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert len(restored.weights) == 1
    assert restored.get_config() == layer.get_config()
    assert restored.compute_output_shape((2, 4)) == (2, 6)


class DualEncoder(keras.Model):
    """A toy dual encoder trained with every loss from `compute_loss`."""

    def __init__(self):
        super().__init__()
        self.encoder = keras.layers.Dense(8)
        self.contrastive = L.MatryoshkaLoss(L.NCELoss(), dims=(8, 4))
        self.spread = L.MatryoshkaLoss(L.SpreadOutLoss(), dims=(8, 4))
        self.distill = L.EmbeddingDistillationLoss(student_dim=8, teacher_dim=5)
        self.distillation_projection = self.distill.projection  # tracked

    def call(self, x):
        return {key: self.encoder(value) for key, value in x.items()}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return (self.contrastive(y["ids"], y_pred) + self.spread(None, y_pred)
                + self.distill(y["teacher"], y_pred))


def test_losses_train_inside_compute_loss():
    rng = np.random.default_rng(16)
    b = 8
    x = {"query": rng.normal(size=(b, 3)).astype("float32"),
         "positive": rng.normal(size=(b, 3)).astype("float32"),
         "negatives": rng.normal(size=(b, 2, 3)).astype("float32")}
    ids = L.text_ids([str(i % 6) for i in range(b)])  # real duplicates
    y = {"ids": {"query_ids": ids, "positive_ids": L.text_ids([str(i) for i in range(b)])},
         "teacher": {key: rng.normal(size=(*v.shape[:-1], 5)).astype("float32")
                     for key, v in x.items()}}
    model = DualEncoder()
    model(x)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = keras.ops.convert_to_numpy(model.distillation_projection.kernel).copy()
    history = model.fit(x, y, batch_size=b, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = keras.ops.convert_to_numpy(model.distillation_projection.kernel)
    assert np.abs(after - before).max() > 0
