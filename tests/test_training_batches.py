"""Batches `fit` trains on: padded to the batch's longest text, partial last
batches kept, and a loss that stops being a number stops training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_egemma as eg
from keras_egemma.training import NonFiniteLossError
from keras_egemma.training import StopOnNonFiniteLoss
from keras_egemma.training import as_training_dataset


def examples(n, words=3):
    filler = " ".join(["word"] * words)
    return [
        {"query": f"question {i} {filler}", "positive": f"answer {i}",
         "negative": f"another answer {i} {filler}"}
        for i in range(n)
    ]


@pytest.fixture()
def model():
    keras.utils.set_random_seed(0)
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.compile()
    return model


def _first_batch(model, data, padding):
    ds = as_training_dataset(data, model.preprocessor, batch_size=4, sequence_length=96,
                             padding=padding)
    x, y = next(iter(ds))
    return keras.tree.map_structure(lambda t: t.numpy(), (x, y))


def _loss(model, x, y):
    total, _ = model.objective(y, model(x, training=False))
    return float(keras.ops.convert_to_numpy(total))


def test_padding_to_the_longest_text_gives_the_fixed_padding_loss(model):
    data = examples(4, words=9)
    x_longest, y_longest = _first_batch(model, data, "longest")
    x_fixed, y_fixed = _first_batch(model, data, "max_length")
    longest = max(int(group["padding_mask"].sum(-1).max()) for group in x_fixed.values())
    width = x_longest["query"]["token_ids"].shape[-1]
    # One bucket for the whole batch (queries, positives and negatives).
    assert {group["token_ids"].shape[-1] for group in x_longest.values()} == {width}
    assert longest <= width < 96 and width in (16, 32, 64)
    assert x_fixed["query"]["token_ids"].shape[-1] == 96
    assert x_longest["negatives"]["token_ids"].shape == (4, 1, width)
    for name, group in x_longest.items():
        for key, value in group.items():
            np.testing.assert_array_equal(value, x_fixed[name][key][..., :width])
        assert x_fixed[name]["padding_mask"][..., width:].sum() == 0
    np.testing.assert_allclose(
        _loss(model, x_longest, y_longest), _loss(model, x_fixed, y_fixed), rtol=0, atol=1e-5
    )


def test_bad_padding_is_refused(model):
    with pytest.raises(ValueError, match="`padding` must be one of"):
        as_training_dataset(examples(4), model.preprocessor, batch_size=2, padding="short")


class _BatchSizes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def test_partial_last_batch_is_trained_on(model):
    sizes = [
        int(x["query"]["token_ids"].shape[0])
        for x, _ in as_training_dataset(examples(10), model.preprocessor, batch_size=4)
    ]
    assert sizes == [4, 4, 2]
    counter = _BatchSizes()
    model.fit(examples(10), batch_size=4, verbose=0, callbacks=[counter])
    assert counter.steps == 3


def test_single_example_left_over_is_left_out_with_a_message(model, capfd):
    with pytest.warns(UserWarning, match="single example, which is left out"):
        ds = as_training_dataset(examples(9), model.preprocessor, batch_size=4)
    assert [int(x["query"]["token_ids"].shape[0]) for x, _ in ds] == [4, 4]
    # A generator's length is known only at its end: the message comes then.
    ds = as_training_dataset(lambda: iter(examples(9)), model.preprocessor, batch_size=4)
    assert [int(x["query"]["token_ids"].shape[0]) for x, _ in ds] == [4, 4]
    assert "single example, which is left out" in capfd.readouterr().err


def test_distributed_batches_stay_full_with_a_warning(model, monkeypatch):
    from keras_egemma.training import data as training_data

    monkeypatch.setattr(training_data, "_splits_batches", lambda: True)
    with pytest.warns(UserWarning, match="The last 2 of 10 training examples are left out"):
        ds = as_training_dataset(examples(10), model.preprocessor, batch_size=4)
    assert [int(x["query"]["token_ids"].shape[0]) for x, _ in ds] == [4, 4]


def test_gradient_caching_trains_on_full_batches_only(model):
    model.compile(gradient_cache_chunk_size=2)
    counter = _BatchSizes()
    with pytest.warns(UserWarning, match="gradient caching needs full batches of 4"):
        model.fit(examples(10), batch_size=4, verbose=0, callbacks=[counter])
    assert counter.steps == 2


def test_a_nan_loss_stops_training_naming_the_step():
    keras.utils.set_random_seed(0)
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.compile(spread_out_weight=float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 1 \(epoch 1, batch 1\)"):
        model.fit(examples(8), batch_size=4, verbose=0)


def test_stop_on_non_finite_loss_counts_steps_across_epochs():
    callback = StopOnNonFiniteLoss()
    callback.on_train_begin()
    for epoch in range(2):
        callback.on_epoch_begin(epoch)
        for batch in range(3):
            callback.on_train_batch_end(batch, {"loss": 0.5})
    callback.on_epoch_begin(2)
    with pytest.raises(NonFiniteLossError, match=r"inf at step 7 \(epoch 3, batch 1\)"):
        callback.on_train_batch_end(0, {"loss": np.float32(np.inf)})


def test_dataset_input_keeps_its_partial_batch(model):
    data = tf.data.Dataset.from_tensor_slices({
        "query": [e["query"] for e in examples(6)],
        "positive": [e["positive"] for e in examples(6)],
    })
    sizes = [int(x["query"]["token_ids"].shape[0])
             for x, _ in as_training_dataset(data, model.preprocessor, batch_size=4)]
    assert sizes == [4, 2]


def test_compile_gives_pytorch_the_fused_adam_step():
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.compile(optimizer=keras.optimizers.AdamW(1e-4))
    fused = "_parallel_update_step" in vars(model.optimizer)
    assert fused is (keras.backend.backend() == "torch")


def test_fit_traces_its_step_once_per_batch_shape(model):
    """TensorFlow traces a step that creates the optimizer's variables twice;
    `fit` builds them first. JAX traces once per shape, PyTorch runs eagerly."""
    calls = []
    step = model.train_step

    def counting_step(*args):
        calls.append(1)
        return step(*args)

    model.train_step = counting_step
    model.fit(examples(12), batch_size=4, sequence_length=32, verbose=0, shuffle=False)
    assert len(calls) == (3 if keras.backend.backend() == "torch" else 1)
