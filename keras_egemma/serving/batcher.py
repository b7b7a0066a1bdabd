"""Dynamic batching: texts from concurrent requests share forward passes.

Texts wait in per-length buckets (the lengths `encode` pads to). While the
model runs a batch, texts accumulate; when it is free, a bucket holding a full
batch (its rows times its length reach the token budget, or `max_batch_size`
rows) runs at once. A partial batch runs only once arrivals have stopped:

- no text has joined the queue, and no request has come in or been answered,
  for `max_wait` seconds, and no request is being read or answered (its texts,
  or its client's next ones, are on the way);
- and, within one pass time of the last forward pass, as many callers wait as
  waited when that pass ended: the callers it answered are expected back
  (a closed-loop client sends its next text as soon as its answer arrives).

So a partial batch does not run while texts still stream in, which would leave
the rest of them waiting a whole batch, and which, with closed-loop clients,
splits them into ever smaller batches. Once the model is free, its oldest text
waits at most as long as the last forward pass took (or `max_wait`, if
longer): waiting longer could not pay off. Among ready buckets the one with the oldest text goes first.
Tokenising and every model call happen in one worker thread (Keras models are
not safe to call from several threads at once), so the event loop only hands
work over and is never blocked by the model.
"""

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import time

import keras
import numpy as np

from keras_egemma.layers.matryoshka import matryoshka_truncate
from keras_egemma.models.batching import bucket_length
from keras_egemma.models.batching import embed_token_ids
from keras_egemma.models.preprocessor import clean_text
from keras_egemma.serving.errors import APIError
from keras_egemma.serving.errors import Overloaded


@dataclasses.dataclass(frozen=True)
class EmbeddingResult:
    """One text's embedding (numpy float32 `(dim,)`), its token count
    (special tokens and prompt included) and whether it was truncated."""

    embedding: np.ndarray
    tokens: int
    truncated: bool


@dataclasses.dataclass
class _Call:
    unanswered: int  # texts of one `embed` call without a result yet


@dataclasses.dataclass
class _Item:
    text: str
    dim: int
    future: asyncio.Future
    arrived: float
    call: _Call
    token_ids: list = None
    truncated: bool = False


class DynamicBatcher:
    """Batches texts from concurrent callers into forward passes of `model`.

    Args:
        model: an `EmbeddingGemma` with a preprocessor.
        max_batch_tokens: padded tokens per forward pass (rows x bucket length).
        max_batch_size: rows per forward pass.
        max_wait: seconds without arrivals after which a partial batch
            runs (a lone text waits this long).
        max_queue: texts accepted but not yet embedded; beyond it `embed`
            raises `Overloaded` (503 with `Retry-After`).
        retry_after: seconds the 503 asks clients to wait.
        metrics: a `ServerMetrics`, or `None`.

    `embed(texts, dim)` gives what `model.encode(texts, dim=dim)` gives
    (prompts are added by the caller, as `encode`'s `format_texts` does). A
    server wraps each request in `with batcher.request():`, so that partial
    batches wait for the texts of requests still being read or answered.

    Example:
    ```python
    batcher = DynamicBatcher(model)
    await batcher.start()
    results = await batcher.embed(["task: search result | query: red planet"], dim=256)
    await batcher.stop()
    ```
    """

    def __init__(
        self,
        model,
        max_batch_tokens=8192,
        max_batch_size=32,
        max_wait=0.005,
        max_queue=4096,
        retry_after=1,
        metrics=None,
    ):
        for name, value in (
            ("max_batch_tokens", max_batch_tokens),
            ("max_batch_size", max_batch_size),
            ("max_queue", max_queue),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if not max_wait >= 0:
            raise ValueError(f"`max_wait` must be >= 0 seconds, got {max_wait!r}.")
        if model.preprocessor is None:
            raise ValueError(
                "The model has no preprocessor, so it cannot read text; load it with `from_preset`."
            )
        self.model = model
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.metrics = metrics
        # The one thread that touches the model (and its tokenizer).
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="keras-egemma-model"
        )
        self.queued = 0
        self._open_requests = 0  # inside `request()`
        self._waiting_calls = 0  # `embed` calls with texts not yet answered
        self._last_event = time.monotonic()  # last arrival, request or answer
        self._pass_seconds = 0.0  # the last forward pass: its duration,
        self._pass_end = 0.0  # when it ended,
        self._expected = 0  # and the `embed` calls waiting then
        self._new = []
        self._buckets = collections.defaultdict(collections.deque)
        self._wakeup = None
        self._task = None

    # --- Public -------------------------------------------------------------

    async def start(self):
        """Starts the batching loop on the running event loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self):
        """Stops the loop once nothing is queued, then the worker thread."""
        while self.queued and not self._task.done():
            await asyncio.sleep(0.01)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.executor.shutdown(wait=True)

    @contextlib.contextmanager
    def request(self):
        """Marks a request being read, embedded or answered.

        While a request is inside it but not waiting in `embed` (its body is
        being read, or its answer written), partial batches wait for it.
        """
        self._open_requests += 1
        self._event()
        try:
            yield
        finally:
            self._open_requests -= 1
            self._event()

    async def embed(self, texts, dim=None):
        """Embeds prompt-formatted texts; returns one `EmbeddingResult` each.

        Raises `Overloaded` when the queue cannot take `len(texts)` more.
        """
        if self._task is None or self._task.done():
            raise RuntimeError("The batcher is not running: call `await batcher.start()`.")
        if len(texts) > self.max_queue:
            raise APIError(
                413,
                f"{len(texts)} texts in one request; the queue holds "
                f"{self.max_queue}. Send fewer texts per request.",
                "input",
                "too_many_inputs",
            )
        if self.queued + len(texts) > self.max_queue:
            raise Overloaded(self.queued, self.max_queue, self.retry_after)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        call = _Call(len(texts))
        items = [_Item(text, dim, loop.create_future(), now, call) for text in texts]
        self.queued += len(items)
        self._new.extend(items)
        self._event()
        self._waiting_calls += 1
        try:
            return await asyncio.gather(*(item.future for item in items))
        finally:
            if call.unanswered:  # it failed or went away before all its answers
                call.unanswered = 0
                self._waiting_calls -= 1
            # A caller that went away leaves its texts behind: drop them.
            for item in items:
                item.future.cancel()

    def _event(self):
        self._last_event = time.monotonic()
        if self._wakeup is not None:
            self._wakeup.set()

    def _answer(self, item, result=None, error=None):
        if item.future.done():  # its caller went away
            return
        if error is None:
            item.future.set_result(result)
        else:
            item.future.set_exception(error)
        item.call.unanswered -= 1
        if not item.call.unanswered:
            # Its request is being answered now: partial batches wait for it.
            self._waiting_calls -= 1
            self._event()

    # --- Worker-thread work -------------------------------------------------

    def _tokenize(self, texts):
        preprocessor = self.model.preprocessor
        token_ids = preprocessor.tokenize_texts(texts)
        full = preprocessor.sequence_length
        truncated = []
        for text, ids in zip(texts, token_ids):
            # Only a text that fills the window can have been cut: count its
            # tokens before truncation.
            cut = (
                len(ids) == full
                and len(preprocessor.tokenizer.tokenize([clean_text(text)])[0]) > full - 2
            )
            truncated.append(cut)
        return token_ids, truncated

    def _forward(self, token_ids, dims):
        preprocessor = self.model.preprocessor
        embeddings = embed_token_ids(
            self.model,
            token_ids,
            pad_id=preprocessor.tokenizer.pad_token_id,
            max_length=preprocessor.sequence_length,
            batch_size=self.max_batch_size,
            verbose=False,
        ).astype("float32")
        rows = list(embeddings)
        for dim in set(dims) - {None}:
            chosen = [i for i, d in enumerate(dims) if d == dim]
            cut = keras.ops.convert_to_numpy(matryoshka_truncate(embeddings[chosen], dim))
            for i, row in zip(chosen, cut.astype("float32")):
                rows[i] = row
        return rows

    # --- The loop -----------------------------------------------------------

    def _fail(self, items, error):
        # A failure of the tokenizer or the model goes to its callers (each
        # answers 500 with it); the loop goes on.
        self.queued -= len(items)
        for item in items:
            self._answer(item, error=error)

    def _rows(self, length):
        # A power of two within the token budget: batches are padded to one.
        fit = max(1, self.max_batch_tokens // length)
        return min(self.max_batch_size, 1 << (fit.bit_length() - 1))

    def _drop_abandoned(self):
        for length, bucket in list(self._buckets.items()):
            live = collections.deque(item for item in bucket if not item.future.done())
            self.queued -= len(bucket) - len(live)
            if live:
                self._buckets[length] = live
            else:
                del self._buckets[length]

    def _next_batch(self, now):
        """`(length, items)` to run now (the model is free), or `(None,
        seconds to wait)`: `None` to wait for the next arrival or answer."""
        self._drop_abandoned()
        limit = max(self.max_wait, self._pass_seconds)
        # Requests being read or answered: their (next) texts are on the way.
        coming = self._open_requests > self._waiting_calls
        if self._waiting_calls < self._expected:  # callers just answered may be back
            coming = coming or now < self._pass_end + limit
        quiet = None if coming else self._last_event + self.max_wait
        ready, wait = [], None
        for length, bucket in self._buckets.items():
            # Waiting counts from when the model was free for this text.
            due = max(bucket[0].arrived, self._pass_end) + limit
            if quiet is not None:
                due = min(due, quiet)
            if len(bucket) >= self._rows(length) or due <= now:
                ready.append((bucket[0].arrived, length))
            else:
                wait = due - now if wait is None else min(wait, due - now)
        if not ready:
            return None, wait
        _, length = min(ready)
        bucket = self._buckets[length]
        items = [bucket.popleft() for _ in range(min(len(bucket), self._rows(length)))]
        if not bucket:
            del self._buckets[length]
        return length, items

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            if self._new:
                items, self._new = self._new, []
                live = [item for item in items if not item.future.done()]
                self.queued -= len(items) - len(live)
                if live:
                    try:
                        token_ids, truncated = await loop.run_in_executor(
                            self.executor, self._tokenize, [item.text for item in live]
                        )
                    except Exception as error:
                        self._fail(live, error)
                        continue
                    max_length = self.model.preprocessor.sequence_length
                    for item, ids, cut in zip(live, token_ids, truncated):
                        item.token_ids, item.truncated = ids, cut
                        self._buckets[bucket_length(len(ids), max_length)].append(item)
            length, items = self._next_batch(time.monotonic())
            if length is None:
                self._wakeup.clear()
                if self._new:
                    continue
                try:
                    await asyncio.wait_for(self._wakeup.wait(), items)
                except asyncio.TimeoutError:
                    pass
                continue
            await self._run_batch(loop, length, items)

    async def _run_batch(self, loop, length, items):
        started = time.perf_counter()
        try:
            rows = await loop.run_in_executor(
                self.executor,
                self._forward,
                [item.token_ids for item in items],
                [item.dim for item in items],
            )
        except Exception as error:
            self._fail(items, error)
            return
        self._pass_seconds = time.perf_counter() - started
        self._pass_end, self._expected = time.monotonic(), self._waiting_calls
        self.queued -= len(items)
        for item, row in zip(items, rows):
            self._answer(item, EmbeddingResult(row, len(item.token_ids), item.truncated))
        if self.metrics is not None:
            self.metrics.observe_batch(len(items), len(items) * length, self._pass_seconds)
