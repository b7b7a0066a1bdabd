"""Numerics on the active backend: padding, reduced precision, determinism.

Cases tried, and what each gets:

| case | result |
|---|---|
| rows padded far past every sliding window (3 real tokens, window 4, 61 pads) | finite everywhere; real rows equal the unpadded run (<= 1e-6) |
| a row with no real token at all (padding mask all zero; only by calling the model on ids) | finite: the zero vector |
| a training step on heavily padded rows | finite loss and weights |
| a training step on a batch holding a row with no real token | finite loss and weights (the L2 norm's floor sits under its square root, so the zero vector's gradient is finite) |
| bfloat16 batches whose short rows pad past the window | finite |
| bfloat16 inference | cosine >= 0.997 to the float32 sentence-transformers reference (measured 0.99993) |
| `dtype="float16"`, `"mixed_float16"`, a float16 `DTypePolicy`, or a global `mixed_float16` policy | `ValueError`: activations reach ~8e5; use float32 or bfloat16 |
| the same seed, twice in a process or in a new process | bit-identical weights and embeddings |
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import reference_checkpoints as rc

import keras_egemma as eg

TEXTS = [
    "Which planet is known as the Red Planet?",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "x",
    "The quick brown fox jumps over the lazy dog. " * 10,
]


def small_model(dtype=None):
    """Sliding window 4 around a full layer: most padded positions see only padding."""
    keras.utils.set_random_seed(1)
    backbone = eg.EmbeddingGemmaBackbone(
        vocabulary_size=64, num_layers=3, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=32, intermediate_dim=48, head_dim=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], dtype=dtype,
    )
    return eg.EmbeddingGemma(backbone, projection_units=(64, 32))


def run(model, batch):
    """One compiled call (JAX compiles a whole graph faster than it runs one eagerly)."""
    return keras.ops.convert_to_numpy(keras.Model.predict_on_batch(model, batch)).astype("float32")


def padded_batch(length=64):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 64, (3, length)).astype("int32")
    mask = np.zeros((3, length), "int32")
    mask[0, :3] = 1      # 3 real tokens, then padding far beyond the window
    mask[2, :] = 1       # row 1 stays all padding
    ids[mask == 0] = 0
    return {"token_ids": ids, "padding_mask": mask}


def test_padding_beyond_the_window_and_empty_rows_stay_finite():
    model = small_model()
    batch = padded_batch()
    assert np.isfinite(run(model.backbone, batch)).all()
    out = run(model, batch)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_allclose(np.linalg.norm(out[[0, 2]], axis=1), 1.0, atol=1e-6)
    alone = run(model, {key: value[:1, :3] for key, value in batch.items()})
    np.testing.assert_allclose(out[0], alone[0], atol=1e-6, rtol=0)


def test_training_step_on_heavily_padded_rows_stays_finite():
    model = small_model()
    batch = padded_batch()
    x = {key: value[[0, 2]] for key, value in batch.items()}
    x["token_ids"] = np.concatenate([x["token_ids"]] * 2)
    x["padding_mask"] = np.concatenate([x["padding_mask"]] * 2)
    x["padding_mask"][2, 1:] = 0     # a row of <bos> alone
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    y = np.ones((4, 32), "float32")
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert np.isfinite(run(model, x)).all()


def test_training_step_on_a_row_without_tokens_stays_finite():
    model = small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(padded_batch(), np.ones((3, 32), "float32"), batch_size=3, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def cosines(a, b):
    a, b = a.astype("float64"), b.astype("float64")
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bfloat16_is_within_cosine_0997_of_float32(st_checkpoint):
    # Against the float32 PyTorch reference on the published layout. "x" pads
    # far past the checkpoint's 8-token window: bfloat16 rows that see only
    # padding, too.
    model = eg.EmbeddingGemma.from_preset(st_checkpoint, dtype="bfloat16")
    assert model.backbone.token_embedding.embeddings.dtype == "bfloat16"
    ours = model.encode_query(TEXTS)
    assert ours.dtype == np.float32 and np.isfinite(ours).all()
    reference = rc.reference_embeddings(st_checkpoint, TEXTS)
    assert cosines(ours, reference).min() >= 0.997


FLOAT16_ERROR = r"does not support float16.*~8e5.*Use dtype='float32' \(default\) or dtype='bfloat16'"


@pytest.mark.parametrize("dtype", ["float16", "mixed_float16", keras.DTypePolicy("float16")],
                         ids=["float16", "mixed_float16", "policy"])
def test_float16_argument_is_refused(dtype):
    with pytest.raises(ValueError, match=FLOAT16_ERROR):
        eg.EmbeddingGemma.from_preset("embeddinggemma_tiny", dtype=dtype)


def test_float16_global_policy_is_refused(st_checkpoint):
    keras.config.set_dtype_policy("mixed_float16")
    for source in ("embeddinggemma_tiny", st_checkpoint):
        with pytest.raises(ValueError, match=FLOAT16_ERROR):
            eg.EmbeddingGemma.from_preset(source)
    with pytest.raises(ValueError, match=FLOAT16_ERROR):
        eg.EmbeddingGemmaBackbone(
            vocabulary_size=10, num_layers=1, num_query_heads=1, num_key_value_heads=1,
            hidden_dim=8, intermediate_dim=8, head_dim=8,
        )


SECOND_RUN = """
import numpy as np, sys
import keras_egemma as eg
np.save(sys.argv[1], eg.EmbeddingGemma.from_preset("embeddinggemma_tiny").encode({texts!r}))
"""


def seeded_random_model(seed):
    keras.utils.set_random_seed(seed)
    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny", load_weights=False)


def test_same_seed_gives_bit_identical_embeddings(tiny_model, tmp_path):
    # Run to run: a fresh process on the same backend, started first so that
    # it runs beside the in-process checks.
    out = tmp_path / "run.npy"
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    second_run = subprocess.Popen(
        [sys.executable, "-c", SECOND_RUN.format(texts=TEXTS), str(out)], env=env,
        cwd=os.path.dirname(os.path.dirname(__file__)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    first, second = seeded_random_model(7), seeded_random_model(7)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(seeded_random_model(8).get_weights()[0], first.get_weights()[0])
    embeddings = tiny_model.encode(TEXTS)
    np.testing.assert_array_equal(tiny_model.encode(TEXTS), embeddings)
    log = second_run.communicate(timeout=300)[0]
    assert second_run.returncode == 0, log.decode(errors="replace")[-2000:]
    np.testing.assert_array_equal(np.load(out), embeddings)
