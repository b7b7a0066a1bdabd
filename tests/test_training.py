"""`EmbeddingGemma.fit` with the paper's objective on the active backend."""

import random

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_egemma as eg
from keras_egemma.training import as_training_dataset
from keras_egemma.training import single_source_batches

SYLLABLES = ["ka", "lo", "mi", "tu", "ren", "sa", "vo", "pi", "dex", "qu", "zor", "fa", "nel"]
PLACES = ["Paris", "Lagos", "Lima", "Oslo", "Quito", "Hanoi", "Cairo", "Perth", "Dakar", "Riga"]
JOBS = ["baker", "pilot", "nurse", "farmer", "judge", "poet", "chemist", "sailor"]


def synthetic_retrieval(n, seed):
    """(query, positive) pairs whose match is a made-up name both contain."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
        out.append({
            "query": f"Where does {name} work?",
            "positive": f"{name} is a {rng.choice(JOBS)} in {rng.choice(PLACES)}.",
            "negative": f"{name[::-1].capitalize()} is a {rng.choice(JOBS)} in {rng.choice(PLACES)}.",
        })
    return out


def recall_at_1(model, examples):
    q = model.encode_query([e["query"] for e in examples], verbose=False)
    d = model.encode_document([e["positive"] for e in examples], verbose=False)
    return float(np.mean(np.argmax(q @ d.T, axis=1) == np.arange(len(examples))))


def fresh_model():
    keras.utils.set_random_seed(0)
    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")


def test_fit_lowers_loss_and_raises_held_out_recall():
    model = fresh_model()
    train, held_out = synthetic_retrieval(640, seed=1), synthetic_retrieval(100, seed=2)
    before = recall_at_1(model, held_out)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), mrl_dims=(128, 64))
    history = model.fit(train, batch_size=16, epochs=3, sequence_length=24, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 3 and losses[-1] < losses[0] - 1.0, losses
    assert set(history.history) >= {"loss", "nce", "spread_out"}
    after = recall_at_1(model, held_out)
    assert after > max(0.6, before + 0.3), (before, after)


def test_data_forms_give_the_same_batches():
    model = fresh_model()
    examples = synthetic_retrieval(8, seed=3)

    def first_batch(data, batch_size=4):
        ds = as_training_dataset(data, model.preprocessor, batch_size=batch_size,
                                 sequence_length=24)
        x, y = next(iter(ds))
        return {k: v["token_ids"].numpy() for k, v in x.items()}, y["query_ids"].numpy()

    reference = first_batch(examples)
    as_tf = tf.data.Dataset.from_tensor_slices({
        "query": [e["query"] for e in examples],
        "positive": [e["positive"] for e in examples],
        "negative": [[e["negative"]] for e in examples],
    })
    for data in (lambda: iter(examples), iter(examples), as_tf, as_tf.batch(4)):
        got = first_batch(data)
        for key in reference[0]:
            np.testing.assert_array_equal(got[0][key], reference[0][key])
        np.testing.assert_array_equal(got[1], reference[1])
    tokens, _ = reference
    assert tokens["negatives"].shape == (4, 1, 24)
    expected = model.preprocessor.tokenize_texts(
        ["task: search result | query: " + examples[0]["query"]])[0]
    assert tokens["query"][0, : len(expected)].tolist() == expected


def test_duplicate_texts_get_equal_ids():
    model = fresh_model()
    examples = [{"query": "same question", "positive": f"answer {i}"} for i in range(4)]
    _, y = next(iter(as_training_dataset(examples, model.preprocessor, batch_size=4,
                                          sequence_length=16)))
    ids = y["query_ids"].numpy()
    assert (ids == ids[0]).all()
    assert len(set(y["positive_ids"].numpy().tolist())) == 4


def test_distillation_from_teacher_embeddings():
    model = fresh_model()
    rng = np.random.default_rng(0)
    examples = [
        dict(e, teacher={"query": rng.normal(size=128), "positive": rng.normal(size=128),
                         "negative": rng.normal(size=(1, 128))})
        for e in synthetic_retrieval(64, seed=4)
    ]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), mrl_dims=None)
    history = model.fit(examples, batch_size=8, epochs=3, sequence_length=24, verbose=0)
    distill = history.history["distillation"]
    assert distill[-1] < distill[0]


def test_distillation_through_a_projection_to_a_larger_teacher():
    model = fresh_model()
    rng = np.random.default_rng(1)
    examples = [
        dict(e, teacher={"query": rng.normal(size=256), "positive": rng.normal(size=256),
                         "negative": rng.normal(size=(1, 256))})
        for e in synthetic_retrieval(32, seed=8)
    ]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), mrl_dims=None, teacher_dim=256)
    kernel = model.distillation_projection.trainable_weights[0]
    start = keras.ops.convert_to_numpy(kernel).copy()
    history = model.fit(examples, batch_size=8, epochs=3, sequence_length=16, verbose=0)
    assert history.history["distillation"][-1] < history.history["distillation"][0]
    assert not np.allclose(keras.ops.convert_to_numpy(kernel), start)
    assert model.encode_query(["q"]).shape == (1, 128)


def test_validation_data_and_resume_from_backup(tmp_path):
    train, val = synthetic_retrieval(64, seed=5), synthetic_retrieval(16, seed=6)

    def run(callbacks, epochs=2):
        model = fresh_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), mrl_dims=None)
        return model.fit(train, batch_size=8, epochs=epochs, sequence_length=16,
                         shuffle=False, validation_data=val, callbacks=callbacks, verbose=0)

    straight = run([])
    assert "val_loss" in straight.history

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise RuntimeError("interrupted")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        run([backup, Interrupt()])
    resumed = run([keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    np.testing.assert_allclose(resumed.history["loss"][-1], straight.history["loss"][-1],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "examples, match",
    [
        ([{"query": "q"}], "Training example 0: missing 'positive'"),
        ([{"query": "q", "positive": "p"}, {"query": 3, "positive": "p"}],
         "Training example 1: 'query' must be a string"),
        ([{"query": "q", "positive": "p", "negative": ["a"]},
          {"query": "q2", "positive": "p2", "negative": ["a", "b"]}],
         "Training example 1: has 2 negatives"),
        ([{"query": "q", "positive": "p", "teacher": {"query": [1.0, np.nan], "positive": [1.0, 0.0]}}],
         "Training example 0: teacher 'query' embedding contains NaN"),
        ([{"query": "q", "positive": "p", "teacher": {"query": [1.0, 0.0], "positive": [1.0, 0.0]}},
          {"query": "q", "positive": "p", "teacher": {"query": [1.0], "positive": [1.0, 0.0]}}],
         r"Training example 1: teacher 'query' has shape \(1,\), expected \(2,\)"),
        ([], "training data is empty"),
    ],
)
def test_bad_training_data(examples, match):
    model = fresh_model()
    with pytest.raises(ValueError, match=match):
        model.fit(examples, batch_size=2, sequence_length=16, verbose=0)


def test_bad_batch_size_and_teacher_size():
    model = fresh_model()
    examples = synthetic_retrieval(4, seed=7)
    with pytest.raises(ValueError, match="batch_size.*>= 2"):
        model.fit(examples, batch_size=1, verbose=0)
    with pytest.raises(ValueError, match="y` must be None"):
        model.fit(examples, y=np.zeros(4), batch_size=2, verbose=0)
    wrong = [dict(e, teacher={"query": np.ones(64), "positive": np.ones(64), "negative": np.ones((1, 64))})
             for e in examples]
    with pytest.raises(ValueError, match="64.*128|128.*64"):
        model.fit(wrong, batch_size=2, sequence_length=16, verbose=0)


def test_single_source_batches():
    sources = {
        "a": [{"query": f"a{i % 5}", "positive": f"pa{i}"} for i in range(40)],
        "b": [{"query": f"b{i}", "positive": f"pb{i % 3}"} for i in range(40)],
    }
    flat = single_source_batches(sources, batch_size=3, seed=0)
    assert len(flat) % 3 == 0 and flat
    for start in range(0, len(flat), 3):
        batch = flat[start : start + 3]
        assert len({e["query"][0] for e in batch}) == 1
        assert len({e["query"] for e in batch}) == 3
        assert len({e["positive"] for e in batch}) == 3
    with pytest.raises(ValueError, match="lower `batch_size`"):
        single_source_batches({"c": [{"query": "x", "positive": "y"}] * 10}, batch_size=2)


def test_soup_is_the_parameter_mean(tmp_path):
    a = fresh_model()
    b = fresh_model()
    for variable in b.weights:
        variable.assign(variable + 0.5)
    b.save_to_preset(str(tmp_path / "b"))
    souped = eg.soup([a, str(tmp_path / "b")])
    for wa, wb, ws in zip(a.weights, b.weights, souped.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ws),
            (keras.ops.convert_to_numpy(wa) + keras.ops.convert_to_numpy(wb)) / 2, atol=1e-6)
    assert souped.encode_query(["hello"]).shape == (1, 128)


def test_soup_refuses_different_configs():
    a = fresh_model()
    backbone = eg.EmbeddingGemmaBackbone.from_config(
        dict(a.backbone.get_config(), num_layers=5, layer_types=None))
    b = eg.EmbeddingGemma(backbone, a.preprocessor, projection_units=(512, 128))
    with pytest.raises(ValueError, match="backbone.layer_types|backbone.num_layers"):
        eg.soup([a, b])
    with pytest.raises(ValueError, match="at least one"):
        eg.soup([])


def test_prompts_per_source_dataset():
    model = fresh_model()
    sources = {
        "retrieval": [{"query": f"q{i}", "positive": f"p{i}", "negative": f"n{i}"}
                      for i in range(4)],
        "sts": [{"query": f"s{i}", "positive": f"t{i}", "negative": f"u{i}"} for i in range(4)],
    }
    tasks = {"retrieval": ("query", "document"), "sts": ("STS", "STS")}
    flat = single_source_batches(sources, batch_size=4, tasks=tasks)
    ds = as_training_dataset(flat, model.preprocessor, batch_size=4, sequence_length=24)
    prompt = model.preprocessor.prompt_for
    for b, (x, _) in enumerate(ds):
        for row, example in enumerate(flat[4 * b : 4 * b + 4]):
            source = "sts" if example["query"].startswith("s") else "retrieval"
            query_task, document_task = tasks[source]
            for key, text, task in (
                ("query", example["query"], query_task),
                ("negatives", example["negative"], document_task),
            ):
                expected = model.preprocessor.tokenize_texts([prompt(task) + text])[0]
                ids = x[key]["token_ids"].numpy()[row].reshape(-1, 24)[0]
                assert ids[: len(expected)].tolist() == expected, (source, key)
    with pytest.raises(ValueError, match="unknown sources"):
        single_source_batches(sources, batch_size=4, tasks={"nli": ("STS", "STS")})


def test_keras_file_keeps_the_objective_and_optimizer(tmp_path):
    model = fresh_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), temperature=0.1, mrl_dims=(128, 32))
    model.fit(synthetic_retrieval(16, seed=9), batch_size=8, sequence_length=16, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.objective.nce.loss.temperature == 0.1
    assert list(loaded.objective.nce.dims) == [128, 32]
    assert float(loaded.optimizer.learning_rate) == pytest.approx(1e-3)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
