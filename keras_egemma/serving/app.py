"""The ASGI app: OpenAI-compatible `POST /v1/embeddings` on Starlette.

Routes: `POST /v1/embeddings`, `GET /v1/models` (both behind the API key
when one is set), `GET /health`, `GET /metrics` (Prometheus text).
"""

import asyncio
import contextlib
import hmac
import logging

import keras
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import Route

from keras_egemma.layers.matryoshka import MATRYOSHKA_DIMS
from keras_egemma.serving.batcher import DynamicBatcher
from keras_egemma.serving.errors import APIError
from keras_egemma.serving.metrics import ServerMetrics
from keras_egemma.serving.schemas import Limits
from keras_egemma.serving.schemas import embedding_response
from keras_egemma.serving.schemas import parse_embedding_request

_logger = logging.getLogger("keras_egemma.serving")


def served_dimensions(model, dimensions=None):
    """The Matryoshka sizes a request may ask for, largest first.

    Args:
        model: an `EmbeddingGemma`.
        dimensions: sizes to serve, or `None` for the full size and the
            sizes the model is trained for (`model.matryoshka_dims` when it
            records them, else the published 768, 512, 256, 128 below it).

    Example:
    ```python
    served_dimensions(model)   # (768, 512, 256, 128) for the published model
    ```
    """
    full = model.embedding_dim
    if dimensions is None:
        trained = getattr(model, "matryoshka_dims", None) or MATRYOSHKA_DIMS
        dimensions = {d for d in trained if d < full} | {full}
    dimensions = sorted(set(dimensions), reverse=True)
    for dim in dimensions:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= full:
            raise ValueError(
                f"Served dimensions must be integers in (0, {full}] (this model's "
                f"embedding size), got {dim!r}."
            )
    return tuple(dimensions)


def _error_response(error):
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _read_body(request, limit):
    declared = request.headers.get("content-length", "")
    too_large = APIError(
        413,
        f"The request body is over {limit:,} bytes; send fewer or shorter texts per request.",
        code="request_too_large",
    )
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    model,
    *,
    model_name="embeddinggemma",
    api_key=None,
    dimensions=None,
    default_input_type=None,
    limits=None,
    max_batch_tokens=8192,
    max_batch_size=32,
    max_wait=0.005,
    max_queue=4096,
    retry_after=1,
):
    """An ASGI app serving `model` over OpenAI's embeddings API.

    Args:
        model: an `EmbeddingGemma` with a preprocessor.
        model_name: the name in responses; a request's `model` must be it
            (or left out).
        api_key: when set, `/v1/*` needs `Authorization: Bearer <api_key>`
            (401 otherwise); `/health` and `/metrics` stay open.
        dimensions: Matryoshka sizes served (see `served_dimensions`).
        default_input_type: prompt name used when a request has no
            `input_type` (`None`: no prompt, as `model.encode`).
        limits: a `Limits` (texts per request, characters per text, body).
        max_batch_tokens, max_batch_size, max_wait, max_queue, retry_after:
            the `DynamicBatcher`'s settings.

    Returns:
        A Starlette app; its batcher starts and drains with the app's
        lifespan (uvicorn runs it), and is `app.state.batcher`.

    Example:
    ```python
    import uvicorn
    app = create_app(eg.EmbeddingGemma.from_preset("embeddinggemma_mini"))
    uvicorn.run(app, host="127.0.0.1", port=8080)
    ```
    """
    limits = limits or Limits()
    dimensions = served_dimensions(model, dimensions)
    if default_input_type is not None:
        model.preprocessor.prompt_for(default_input_type)  # refuses an unknown name
    metrics = ServerMetrics()
    batcher = DynamicBatcher(
        model,
        max_batch_tokens=max_batch_tokens,
        max_batch_size=max_batch_size,
        max_wait=max_wait,
        max_queue=max_queue,
        retry_after=retry_after,
        metrics=metrics,
    )
    metrics.queue_depth.set_function(lambda: batcher.queued)
    expected_authorization = None if api_key is None else f"Bearer {api_key}".encode()

    def check_api_key(request):
        if expected_authorization is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected_authorization):
            raise APIError(
                401,
                "Missing or wrong API key: send `Authorization: Bearer <key>`.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def formatted_texts(request):
        task = request.input_type or default_input_type
        try:
            return model.preprocessor.format_texts(request.texts, task=task)
        except ValueError as e:
            raise APIError(400, str(e), "input_type", "unknown_input_type") from None

    async def embeddings(request):
        status = 500
        metrics.in_flight.inc()
        try:
            with metrics.latency.time(), batcher.request():
                check_api_key(request)
                body = await _read_body(request, limits.max_request_bytes)
                parsed = parse_embedding_request(
                    body, model_name=model_name, dimensions=dimensions, limits=limits
                )
                results = await batcher.embed(formatted_texts(parsed), parsed.dimensions)
                content = await asyncio.to_thread(
                    embedding_response,
                    results,
                    model_name=model_name,
                    encoding_format=parsed.encoding_format,
                )
                metrics.texts.inc(len(results))
                metrics.tokens.inc(sum(result.tokens for result in results))
                status = 200
                return Response(content, media_type="application/json")
        except APIError as error:
            status = error.status
            return _error_response(error)
        except Exception as error:
            # The tokenizer or the model failed: logged, answered, and the server goes on.
            _logger.exception("Embedding a request failed")
            return _error_response(
                APIError(
                    500,
                    f"The model failed on this request: {type(error).__name__}: {error}",
                    code="internal_error",
                )
            )
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(status=str(status)).inc()

    async def models(request):
        try:
            check_api_key(request)
        except APIError as error:
            return _error_response(error)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": model_name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "keras-egemma",
                        "dimensions": list(dimensions),
                    }
                ],
            }
        )

    async def health(request):
        return JSONResponse(
            {
                "status": "ok",
                "model": model_name,
                "backend": keras.backend.backend(),
                "queue_depth": batcher.queued,
            }
        )

    async def prometheus(request):
        return Response(metrics.render(), media_type=ServerMetrics.CONTENT_TYPE)

    async def http_error(request, exc):
        return _error_response(
            APIError(
                exc.status_code,
                f"{exc.detail}: {request.method} {request.url.path}.",
                code="no_route",
            )
        )

    async def server_error(request, exc):
        return _error_response(
            APIError(500, f"The server failed: {type(exc).__name__}: {exc}", code="internal_error")
        )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.metrics = metrics
    return app
