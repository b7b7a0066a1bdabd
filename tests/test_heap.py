"""`training.heap.freed_memory_kept`: a large block freed inside the context is reused
without page faults, and glibc's behaviour comes back afterwards (Linux, glibc)."""

import ctypes
import resource

import keras
import numpy as np
import pytest

from keras_egemma.training import heap
from keras_egemma.training.heap import freed_memory_kept

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="mallopt is glibc's")

BLOCK = 64 * 2**20
PAGES = BLOCK // resource.getpagesize()


def _faults_of_a_reused_block():
    """Page faults while touching a large block allocated right after an equal one was freed."""
    libc = heap._glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    first = libc.malloc(BLOCK)
    ctypes.memset(first, 1, BLOCK)
    libc.free(first)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = libc.malloc(BLOCK)
    ctypes.memset(second, 1, BLOCK)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(second)
    return faults


def test_freed_memory_is_reused_inside_and_given_back_after():
    assert _faults_of_a_reused_block() > PAGES // 2
    with freed_memory_kept():
        with freed_memory_kept():
            _faults_of_a_reused_block()
        # Still kept after the inner context ends.
        assert _faults_of_a_reused_block() < PAGES // 20
    assert _faults_of_a_reused_block() > PAGES // 2


def test_fit_keeps_freed_memory_on_pytorch_and_jax(monkeypatch):
    import keras_egemma as eg
    from keras_egemma.training import model_training

    entered = []
    real = model_training.freed_memory_kept

    def recording():
        entered.append(True)
        return real()

    monkeypatch.setattr(model_training, "freed_memory_kept", recording)
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_mini")
    model.compile(optimizer=keras.optimizers.SGD(1e-4))
    examples = [{"query": f"q {i}", "positive": f"p {i}"} for i in range(4)]
    history = model.fit(examples, batch_size=4, epochs=1, sequence_length=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert entered == ([] if keras.backend.backend() == "tensorflow" else [True])
