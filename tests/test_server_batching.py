"""The dynamic batcher's dispatch policy (keras_egemma.serving.DynamicBatcher).

A fake model (fixed-length token ids, a forward pass that sleeps) makes the
policy observable without Keras: closed-loop clients, whose next texts come
back spread out after each answer, get full batches; a lone text runs after
`max_wait` of quiet; a full batch runs at once; texts of requests still being
read or answered, and callers just answered, are waited for, at most one pass.
"""

import asyncio
import time
import types

import numpy as np
import pytest

from keras_egemma.models.batching import bucket_length
from keras_egemma.serving.batcher import DynamicBatcher
from keras_egemma.serving.batcher import _Call
from keras_egemma.serving.batcher import _Item

TOKENS = 60  # padded to 64, as the load script's ~64-token texts
WIDTH = 8


def fake_batcher(row_seconds=0.0, **kwargs):
    """A batcher whose model tokenizes every text to `TOKENS` ids and whose
    forward pass sleeps 0.1 s + `row_seconds` per row (rows padded to a power
    of two, as `encode` pads them); `batcher.sizes` lists the batches."""
    preprocessor = types.SimpleNamespace(sequence_length=2048)
    batcher = DynamicBatcher(types.SimpleNamespace(preprocessor=preprocessor), **kwargs)
    batcher.sizes = []

    def tokenize(texts):
        # A text "... N" gets ids N: its embedding (all N) shows whose it is.
        return [[int(text.split()[-1])] * TOKENS for text in texts], [False] * len(texts)

    def forward(token_ids, dims):
        if row_seconds:
            time.sleep(0.1 + row_seconds * (1 << (len(token_ids) - 1).bit_length()))
        batcher.sizes.append(len(token_ids))
        return [np.full(WIDTH, float(ids[0]), "float32") for ids in token_ids]

    batcher._tokenize, batcher._forward = tokenize, forward
    return batcher


class _Pending:
    def done(self):
        return False


def queue(batcher, count, arrived):
    """Puts the tokenized texts of `count` one-text requests in the queue."""
    length = bucket_length(TOKENS, 2048)
    for _ in range(count):
        item = _Item("t", None, _Pending(), arrived, _Call(1), [1] * TOKENS)
        batcher._buckets[length].append(item)
        batcher._open_requests += 1
        batcher._waiting_calls += 1
        batcher.queued += 1
    batcher._last_event = arrived


def answer(batcher, items):
    """What answering `items` does to the counts (their requests are done)."""
    batcher._open_requests -= len(items)
    batcher._waiting_calls -= len(items)
    batcher.queued -= len(items)


def test_the_default_budget_takes_32_rows_of_64_tokens():
    batcher = fake_batcher()
    assert batcher.max_batch_tokens == 8192 and batcher.max_batch_size == 32
    for tokens in (16, 64, 65, 128, 256):
        assert batcher._rows(bucket_length(tokens, 2048)) == 32, tokens
    assert batcher._rows(512) == 16


def test_a_lone_text_runs_after_max_wait_and_a_full_batch_at_once():
    batcher = fake_batcher(max_wait=0.005)
    queue(batcher, 1, arrived=100.0)
    length, wait = batcher._next_batch(100.004)
    assert length is None and wait == pytest.approx(0.001)
    length, items = batcher._next_batch(100.0051)
    assert length == 64 and len(items) == 1

    batcher = fake_batcher(max_wait=0.005)
    queue(batcher, 40, arrived=100.0)
    length, items = batcher._next_batch(100.0)  # no wait: a full batch
    assert len(items) == 32
    length, wait = batcher._next_batch(100.0)  # the 8 left wait for quiet
    assert length is None and wait == pytest.approx(0.005)
    assert len(batcher._next_batch(100.0051)[1]) == 8


def test_a_partial_batch_waits_for_requests_in_flight_and_callers_just_answered():
    batcher = fake_batcher(max_wait=0.005)
    batcher._pass_seconds = 0.5  # the last forward pass took 0.5 s ...
    batcher._pass_end = 100.0  # ... and ended at 100 s,
    batcher._expected = 32  # when 32 callers waited (it answered 20 of them).
    queue(batcher, 12, arrived=99.8)  # 12 arrived during that pass
    # The answered callers may come back: wait, at most one pass after it.
    length, wait = batcher._next_batch(100.1)
    assert length is None and wait == pytest.approx(0.4)
    length, items = batcher._next_batch(100.5)
    assert len(items) == 12

    # Once as many callers wait as then, quiet is enough ...
    batcher = fake_batcher(max_wait=0.005)
    batcher._pass_seconds, batcher._pass_end, batcher._expected = 0.5, 100.0, 4
    queue(batcher, 4, arrived=100.01)
    assert batcher._next_batch(100.0149)[0] is None
    length, items = batcher._next_batch(100.0151)
    assert len(items) == 4
    answer(batcher, items)
    # ... unless a request is being read or answered: its texts are coming.
    queue(batcher, 4, arrived=100.02)
    with batcher.request():
        assert batcher._next_batch(100.1)[0] is None
        assert len(batcher._next_batch(100.521)[1]) == 4  # one pass at most


def test_32_closed_loop_clients_get_full_batches():
    # Each client sends its next text soon after its answer: half of them
    # 0 to 30 ms after it (2 ms apart), the others 120 ms later, so quiet alone
    # (5 ms without arrivals) would cut a batch of 16; a pass of 32 takes 0.42 s.
    pass_seconds, clients, rounds = 0.42, 32, 5
    batcher = fake_batcher(0.01, max_wait=0.005)

    async def client(c):
        for r in range(rounds):
            with batcher.request():
                await asyncio.sleep(0.001)  # the request is read
                (result,) = await batcher.embed([f"text {100 * c + r}"])
                assert result.tokens == TOKENS
                np.testing.assert_array_equal(result.embedding, [100 * c + r] * WIDTH)
                await asyncio.sleep(0.001)  # the answer is written
            await asyncio.sleep(0.002 * (c % 16) + 0.12 * (c >= 16))

    async def run():
        await batcher.start()
        await asyncio.gather(*(client(c) for c in range(clients)))
        lone_started = time.monotonic()
        await asyncio.sleep(2 * pass_seconds)  # the clients are gone
        await batcher.embed(["lone 1"])
        lone = time.monotonic() - lone_started - 2 * pass_seconds
        await batcher.stop()
        return lone

    lone = asyncio.run(run())
    assert sum(batcher.sizes) == clients * rounds + 1 and batcher.queued == 0
    # After the first two batches (the clients start together but their
    # texts trickle in), at least 90% of texts run in batches of >= 24 rows.
    later = batcher.sizes[2:-1]
    assert sum(size for size in later if size >= 24) >= 0.9 * sum(later), batcher.sizes
    assert batcher.sizes[-1] == 1
    # The lone text waited for quiet (5 ms), not for the clients gone (one
    # pass, 0.42 s), then ran (0.11 s).
    assert lone < 0.3, lone
