"""Running the app under uvicorn, with a graceful drain on SIGTERM / Ctrl-C.

On SIGTERM (or SIGINT) uvicorn stops accepting connections, closes idle
ones, and lets requests in flight finish (up to `drain_timeout` seconds);
then the app's lifespan ends, which stops the batcher once its queue is
empty, and the process exits.
"""


def serve(app, host="127.0.0.1", port=8080, *, drain_timeout=30.0, log_level="info"):
    """Serves `app` until SIGTERM / SIGINT, then drains and returns.

    Args:
        app: an ASGI app, e.g. from `create_app`.
        host: address to listen on (`127.0.0.1`: this machine only).
        port: TCP port.
        drain_timeout: seconds requests in flight get to finish after
            SIGTERM; those still running then are cancelled.
        log_level: uvicorn's log level (`"info"`, `"warning"`, ...).

    Example:
    ```python
    serve(create_app(model), port=8080)
    ```
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        timeout_graceful_shutdown=drain_timeout,
    )
    uvicorn.Server(config).run()
