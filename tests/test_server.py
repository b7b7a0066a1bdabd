"""The HTTP server (keras_egemma.serving): OpenAI-shaped /v1/embeddings.

Responses equal `model.encode` (<= 1e-6) under 32 concurrent clients, in
process (httpx over ASGI) and through uvicorn over TCP; bad requests get a 4xx
JSON error and the server keeps serving; a full queue gives 503 with
Retry-After and recovers; SIGTERM lets requests in flight finish, then exits.
"""

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import httpx
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma.serving import Limits
from keras_egemma.serving import create_app
from keras_egemma.serving import served_dimensions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = (
    "the river bends past an old mill where children fish for trout while their "
    "parents read about modules classes and exceptions in the python reference"
).split()
PRESET = "embeddinggemma_mini"
MINI_DIMENSIONS = (384, 256, 128, 64)  # what it is trained for (docs/bundled_model.md)


TASKS = ("query", "document", "STS", "Clustering")


def text(i):
    """A text of 7 to 11 words, different for each `i`: with any of `TASKS`'
    prompts it is 17 to 32 tokens long, so every batch is padded to 32 tokens
    and few shapes are compiled."""
    return " ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(7 + i % 5))


@pytest.fixture(scope="module")
def model():
    return eg.EmbeddingGemma.from_preset(PRESET)


@contextlib.asynccontextmanager
async def in_process(app, headers=None):
    """A client of `app` in this process, with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://server", headers=headers, timeout=60
        ) as client:
            yield client


def concurrent_requests(count=32):
    """`count` requests mixing single strings and lists, prompts and sizes."""
    requests = []
    for i in range(count):
        texts = [text(i * 3 + k) for k in range(1 + i % 2)]
        task = TASKS[i % 4]
        if i % 3 == 0:  # a string, not a list
            texts = texts[:1]
        payload = {"input": texts[0] if i % 3 == 0 else texts, "input_type": task}
        dim = (None, 256, 128, 64)[(i // 4) % 4]
        if dim:
            payload["dimensions"] = dim
        requests.append((payload, texts, task, dim))
    return requests


def check_equal_to_encode(model, requests, responses):
    for (payload, texts, task, dim), response in zip(requests, responses):
        assert response.status_code == 200, response.text
        body = response.json()
        assert [row["index"] for row in body["data"]] == list(range(len(texts)))
        got = np.array([row["embedding"] for row in body["data"]], "float32")
        expected = model.encode(texts, task=task, dim=dim, verbose=False)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def metric(metrics_text, name):
    """The value of one sample in Prometheus text (0 when absent)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics_text, re.M)
    return float(match.group(1)) if match else 0.0


def test_32_concurrent_clients_get_encode_s_embeddings(model):
    # Batches of up to 8 rows, padded to 1, 2, 4 or 8 (the shapes every test
    # here compiles: encode's too, with batch_size=8 for more texts).
    app = create_app(model, model_name=PRESET, max_batch_size=8, dimensions=MINI_DIMENSIONS)
    requests = concurrent_requests()

    async def run():
        async with in_process(app) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/embeddings", json=payload) for payload, *_ in requests)
            )
            return responses, (await client.get("/metrics")).text

    responses, metrics = asyncio.run(run())
    check_equal_to_encode(model, requests, responses)
    texts = sum(len(texts) for _, texts, _, _ in requests)
    assert metric(metrics, "keras_egemma_texts_total") == texts
    # Texts of different requests shared forward passes.
    assert metric(metrics, "keras_egemma_batch_size_count") < len(requests)
    assert metric(metrics, 'keras_egemma_requests_total{status="200"}') == len(requests)
    assert metric(metrics, "keras_egemma_queue_depth") == 0
    body = responses[1].json()
    assert body["model"] == PRESET and body["object"] == "list"
    # encode_document is the "document" input type.
    document = next(r for r in requests if r[2] == "document")
    np.testing.assert_allclose(
        [row["embedding"] for row in responses[requests.index(document)].json()["data"]],
        model.encode_document(document[1], dim=document[3], verbose=False),
        atol=1e-6,
    )


def test_batches_keep_to_the_token_budget(model):
    # 64 tokens: 2 rows of texts padded to 32.
    app = create_app(model, max_batch_tokens=64, max_wait=0.05)
    texts = [text(i) for i in range(8)]

    async def run():
        async with in_process(app) as client:
            responses = await asyncio.gather(
                *(
                    client.post("/v1/embeddings", json={"input": t, "input_type": "query"})
                    for t in texts
                )
            )
            return responses, (await client.get("/metrics")).text

    responses, metrics = asyncio.run(run())
    got = [response.json()["data"][0]["embedding"] for response in responses]
    np.testing.assert_allclose(got, model.encode(texts, task="query", batch_size=8), atol=1e-6)
    batches = metric(metrics, "keras_egemma_batch_size_count")
    assert batches >= 4
    assert metric(metrics, 'keras_egemma_batch_size_bucket{le="2.0"}') == batches
    assert metric(metrics, 'keras_egemma_batch_tokens_bucket{le="64.0"}') == batches


def test_base64_usage_truncation_models_and_health(model):
    app = create_app(model, model_name="mini", default_input_type="query")
    long_text = " ".join(text(i) for i in range(5))
    texts = [text(0), long_text]

    async def run():
        async with in_process(app) as client:
            plain = await client.post("/v1/embeddings", json={"input": texts, "model": "mini"})
            packed = await client.post(
                "/v1/embeddings", json={"input": texts, "encoding_format": "base64"}
            )
            return (plain, packed, await client.get("/v1/models"), await client.get("/health"))

    # A 32-token window truncates the long text (and keeps the shapes compiled).
    window = model.preprocessor.sequence_length
    model.preprocessor.sequence_length = 32
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the long text is truncated on purpose
            expected = model.encode(texts, task="query", verbose=False)
            plain, packed, models, health = asyncio.run(run())
        formatted = model.preprocessor.format_texts(texts, task="query")
        lengths = [len(ids) for ids in model.preprocessor.tokenize_texts(formatted)]
    finally:
        model.preprocessor.sequence_length = window
    rows = plain.json()["data"]
    np.testing.assert_allclose([row["embedding"] for row in rows], expected, atol=1e-6)
    decoded = [
        np.frombuffer(base64.b64decode(row["embedding"]), "<f4") for row in packed.json()["data"]
    ]
    np.testing.assert_array_equal(decoded, [row["embedding"] for row in rows])
    assert [row["truncated"] for row in rows] == [False, True]
    assert lengths[1] == 32 and lengths[0] < 32
    assert plain.json()["usage"] == {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)}
    served = models.json()["data"][0]["dimensions"]
    assert models.json()["data"][0]["id"] == "mini"
    assert served[0] == 384 and set(served) <= set(MINI_DIMENSIONS)
    assert health.status_code == 200 and health.json()["status"] == "ok"


BAD_REQUESTS = [
    # (what, request arguments, status, error code)
    (
        "no API key",
        {"json": {"input": "a"}, "headers": {"Authorization": ""}},
        401,
        "invalid_api_key",
    ),
    (
        "wrong API key",
        {"json": {"input": "a"}, "headers": {"Authorization": "Bearer nope"}},
        401,
        "invalid_api_key",
    ),
    ("malformed JSON", {"content": b'{"input": "a",'}, 400, "invalid_json"),
    ("not an object", {"json": ["a"]}, 400, "invalid_json"),
    ("no input", {"json": {"model": "mini"}}, 400, "missing_input"),
    ("empty list", {"json": {"input": []}}, 400, "empty_input"),
    ("empty string", {"json": {"input": ""}}, 400, "empty_input"),
    ("a number", {"json": {"input": 5}}, 400, "invalid_type"),
    ("a number in the list", {"json": {"input": ["a", 3]}}, 400, "invalid_type"),
    ("token ids", {"json": {"input": [[1, 2, 3]]}}, 400, "invalid_type"),
    ("1,000,000 characters", {"json": {"input": "a" * 1_000_000}}, 413, "input_too_long"),
    ("too many inputs", {"json": {"input": ["a"] * 9}}, 413, "too_many_inputs"),
    ("body too large", {"content": b" " * 3_000_001}, 413, "request_too_large"),
    ("dimensions 1000", {"json": {"input": "a", "dimensions": 1000}}, 400, "invalid_value"),
    ("dimensions as text", {"json": {"input": "a", "dimensions": "256"}}, 400, "invalid_value"),
    ("dimensions 100", {"json": {"input": "a", "dimensions": 100}}, 400, "invalid_value"),
    ("encoding hex", {"json": {"input": "a", "encoding_format": "hex"}}, 400, "invalid_value"),
    (
        "unknown input type",
        {"json": {"input": "a", "input_type": "poem"}},
        400,
        "unknown_input_type",
    ),
    ("input type a number", {"json": {"input": "a", "input_type": 3}}, 400, "invalid_type"),
    ("unknown field", {"json": {"input": "a", "temperature": 1}}, 400, "unknown_field"),
    (
        "another model",
        {"json": {"input": "a", "model": "text-embedding-3-small"}},
        404,
        "model_not_found",
    ),
    ("wrong method", {"method": "GET"}, 405, "no_route"),
    ("unknown path", {"url": "/v1/embedding"}, 404, "no_route"),
]


def test_bad_requests_get_4xx_json_errors_and_the_server_keeps_serving(model):
    key = {"Authorization": "Bearer secret"}
    app = create_app(
        model,
        model_name="mini",
        api_key="secret",
        limits=Limits(max_inputs=8, max_request_bytes=3_000_000),
    )

    async def run():
        async with in_process(app, headers=key) as client:
            answers = []
            for _, arguments, _, _ in BAD_REQUESTS:
                arguments = dict(arguments)
                answers.append(
                    await client.request(
                        arguments.pop("method", "POST"),
                        arguments.pop("url", "/v1/embeddings"),
                        **arguments,
                    )
                )
            good = await client.post(
                "/v1/embeddings", json={"input": [text(1), text(2)], "input_type": "STS"}
            )
            unauthorised_models = await client.get("/v1/models", headers={"Authorization": ""})
            return answers, good, unauthorised_models

    answers, good, unauthorised_models = asyncio.run(run())
    for (what, _, status, code), response in zip(BAD_REQUESTS, answers):
        assert response.status_code == status, (what, response.text)
        error = response.json()["error"]
        assert error["code"] == code, (what, error)
        assert len(error["message"]) > 20, (what, error)
    assert answers[0].headers["WWW-Authenticate"] == "Bearer"
    assert "1000" in answers[BAD_REQUESTS.index(BAD_REQUESTS[13])].json()["error"]["message"]
    assert good.status_code == 200
    np.testing.assert_allclose(
        [row["embedding"] for row in good.json()["data"]],
        model.encode([text(1), text(2)], task="STS", verbose=False),
        atol=1e-6,
    )
    assert unauthorised_models.status_code == 401


def test_a_full_queue_answers_503_and_recovers(model):
    app = create_app(model, max_queue=4, retry_after=2)
    gate = threading.Event()

    async def run():
        async with in_process(app) as client:
            batcher = app.state.batcher
            # Occupy the model's worker thread, so accepted texts stay queued.
            blocked = batcher.executor.submit(gate.wait, 60)
            first = asyncio.create_task(
                client.post(
                    "/v1/embeddings",
                    json={"input": [text(i) for i in range(4)], "input_type": "query"},
                )
            )
            deadline = time.monotonic() + 30
            while batcher.queued < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            refused = await client.post(
                "/v1/embeddings", json={"input": text(4), "input_type": "query"}
            )
            health = await client.get("/health")
            gate.set()
            blocked.result()
            return (
                refused,
                health,
                await first,
                await client.post("/v1/embeddings", json={"input": text(4), "input_type": "query"}),
            )

    refused, health, first, later = asyncio.run(run())
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "2"
    assert refused.json()["error"]["code"] == "queue_full"
    assert health.status_code == 200 and health.json()["queue_depth"] == 4
    assert first.status_code == 200 and later.status_code == 200
    np.testing.assert_allclose(
        later.json()["data"][0]["embedding"],
        model.encode(text(4), task="query", verbose=False),
        atol=1e-6,
    )


def test_a_failing_model_answers_500_and_the_server_goes_on(model, monkeypatch):
    app = create_app(model, max_queue=4)
    batcher = app.state.batcher
    forward, failures = batcher._forward, []

    def fail_once(*args):
        if not failures:
            failures.append(1)
            raise MemoryError("no memory for this batch")
        return forward(*args)

    monkeypatch.setattr(batcher, "_forward", fail_once)
    payload = {"input": text(4), "input_type": "query"}

    async def run():
        async with in_process(app) as client:
            return [
                await client.post("/v1/embeddings", json=payload),
                await client.post("/v1/embeddings", json={"input": [text(0)] * 5}),
                await client.post("/v1/embeddings", json=payload),
            ]

    failed, too_many, later = asyncio.run(run())
    assert failed.status_code == 500
    assert "no memory for this batch" in failed.json()["error"]["message"]
    assert too_many.status_code == 413 and "queue holds 4" in too_many.json()["error"]["message"]
    assert later.status_code == 200 and batcher.queued == 0


def test_settings_are_checked(model):
    assert served_dimensions(model, [64, 384, 128]) == (384, 128, 64)
    with pytest.raises(ValueError, match="embedding size"):
        served_dimensions(model, [1000])
    with pytest.raises(ValueError, match="Unknown task"):
        create_app(model, default_input_type="poem")
    with pytest.raises(ValueError, match="max_queue"):
        create_app(model, max_queue=0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uvicorn_over_tcp_then_sigterm_drains_requests_in_flight(model):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # A long batching wait keeps requests in flight long enough to signal, and
    # puts the 32 clients' texts in one forward pass (one shape to compile).
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keras_egemma.serving",
            "--preset",
            PRESET,
            "--port",
            str(port),
            "--dimensions",
            *map(str, MINI_DIMENSIONS),
            "--max-wait-ms",
            "2500",
            "--max-batch-size",
            "128",
            "--drain-timeout",
            "600",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600  # a loaded machine imports slowly
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the server did not start in 600 s"
            time.sleep(0.2)
        requests = concurrent_requests()
        # 4 requests of 16 texts: one batch of 64 rows, as the 32 clients' 48 texts.
        drained = [[text(100 + 16 * r + k) for k in range(16)] for r in range(4)]

        async def run():
            async with httpx.AsyncClient(base_url=base, timeout=600) as client:
                responses = await asyncio.gather(
                    *(client.post("/v1/embeddings", json=payload) for payload, *_ in requests)
                )
            # Fresh connections: a client's idle keep-alive ones close on SIGTERM.
            async with httpx.AsyncClient(base_url=base, timeout=600) as client:
                in_flight = [
                    asyncio.create_task(
                        client.post("/v1/embeddings", json={"input": t, "input_type": "query"})
                    )
                    for t in drained
                ]
                async with httpx.AsyncClient(base_url=base, timeout=10) as monitor:
                    waiting, deadline = 0, time.monotonic() + 30
                    while waiting < len(drained) and time.monotonic() < deadline:
                        metrics = (await monitor.get("/metrics")).text
                        waiting = metric(metrics, "keras_egemma_requests_in_flight")
                process.send_signal(signal.SIGTERM)
                unanswered_at_signal = sum(not task.done() for task in in_flight)
                await asyncio.sleep(0.3)
                refused = None
                try:
                    async with httpx.AsyncClient(timeout=5) as late:
                        await late.get(f"{base}/health")
                except httpx.TransportError as error:
                    refused = error
                return (responses, await asyncio.gather(*in_flight), unanswered_at_signal, refused)

        responses, finished, unanswered_at_signal, refused = asyncio.run(run())
        check_equal_to_encode(model, requests, responses)
        assert unanswered_at_signal == len(drained)
        assert isinstance(refused, httpx.ConnectError), "still accepting after SIGTERM"
        for texts, response in zip(drained, finished):
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(
                [row["embedding"] for row in response.json()["data"]],
                model.encode(texts, task="query", batch_size=8, verbose=False),
                atol=1e-6,
            )
        _, stderr = process.communicate(timeout=600)
        assert process.returncode in (0, -signal.SIGTERM), stderr[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
