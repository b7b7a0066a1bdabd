"""`training.owned_buffers.take_ownership`: after it, a donated JAX step writes
every loaded weight in place (the first step of `fit` then holds no second copy
of the model), and the values are unchanged."""

import keras
import numpy as np

import keras_egemma as eg
from keras_egemma.training import model_training
from keras_egemma.training.owned_buffers import take_ownership


def _updated_in_place(variable):
    """Whether a donated jitted step returns its result in the variable's own buffer."""
    import jax

    step = jax.jit(lambda value: value * 1, donate_argnums=0)
    value = variable.value
    pointer = value.unsafe_buffer_pointer()
    result = step(value)
    variable.assign(result)
    return result.unsafe_buffer_pointer() == pointer


def test_loaded_weights_become_the_runtimes_own():
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    before = [keras.ops.convert_to_numpy(v) for v in model.weights]
    if keras.backend.backend() == "jax":
        # Loaded as read: the table is the array the loader read, not XLA's.
        assert not _updated_in_place(model.backbone.token_embedding.embeddings)
    take_ownership(model.weights)
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    if keras.backend.backend() == "jax":
        assert all(_updated_in_place(v) for v in model.weights)


def test_fit_takes_ownership_first(monkeypatch):
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.compile(mrl_dims=(64,))
    taken = []
    monkeypatch.setattr(model_training, "take_ownership", taken.append)
    examples = [{"query": f"q {i}", "positive": f"p {i}"} for i in range(4)]
    model.fit(examples, batch_size=4, epochs=1, sequence_length=8, verbose=0)
    assert taken and {id(v) for v in taken[0]} == {id(v) for v in model.weights}
