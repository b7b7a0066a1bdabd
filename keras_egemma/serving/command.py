"""`keras-egemma serve`: its options and what it runs.

`add_serve_arguments(parser)` adds the options (all but the command line's
global `--preset` and `--backend`), and `run_serve(args, out)` runs it;
`python -m keras_egemma.serving` runs it alone. Nothing here imports the web
stack until the server starts, so the command line works without the `serve`
extra.
"""

import argparse
import os
import sys

DEFAULT_PRESET = "embeddinggemma_mini"
API_KEY_VARIABLE = "KERAS_EGEMMA_API_KEY"
SERVE_HELP = (
    "Serve the model over HTTP: an OpenAI-compatible /v1/embeddings endpoint with dynamic batching."
)


def add_serve_arguments(parser):
    """Adds the serve options (not `--preset`) to an `argparse` parser."""
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="Weights and compute precision (default: the preset's).",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to listen on (default 127.0.0.1: this machine only; "
        "0.0.0.0 for every interface).",
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080).")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_VARIABLE),
        help="Require `Authorization: Bearer KEY` on /v1/* (default: "
        f"${API_KEY_VARIABLE}, else no key).",
    )
    parser.add_argument(
        "--model-name",
        default=None,
        help="Model name in responses and requests (default: the preset's name).",
    )
    parser.add_argument(
        "--dimensions",
        type=int,
        nargs="+",
        default=None,
        help="Matryoshka sizes a request may ask for (default: the full size "
        "and 768/512/256/128 below it).",
    )
    parser.add_argument(
        "--default-input-type",
        default=None,
        help="Prompt name for requests without `input_type`, e.g. query or "
        "document (default: no prompt).",
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=8192,
        help="Padded tokens per forward pass (default 8192).",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=32, help="Texts per forward pass (default 32)."
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="A partial batch runs once no text has arrived and no request has been "
        "read or answered for this long (default 5 ms); a full batch runs at once.",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=4096,
        help="Texts waiting before requests get 503 (default 4096).",
    )
    parser.add_argument(
        "--max-inputs", type=int, default=2048, help="Texts per request (default 2048)."
    )
    parser.add_argument(
        "--max-input-chars", type=int, default=100_000, help="Characters per text (default 100000)."
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="Seconds requests in flight get to finish after SIGTERM (default 30).",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default info).",
    )


def _model_name(preset):
    return os.path.basename(preset.rstrip("/\\")) or preset


def run_serve(args, out=None):
    """Loads the model, then serves it until SIGTERM / Ctrl-C (see `serve`)."""
    for name in (
        "port",
        "max_batch_tokens",
        "max_batch_size",
        "max_queue",
        "max_inputs",
        "max_input_chars",
    ):
        if getattr(args, name) < (0 if name == "port" else 1):
            raise ValueError(
                f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}."
            )
    try:
        from keras_egemma.serving.app import create_app
        from keras_egemma.serving.schemas import Limits
        from keras_egemma.serving.server import serve
    except ImportError as e:
        raise SystemExit(
            f"error: serving needs the `serve` extra ({e}): pip install 'keras-egemma[serve]'"
        ) from None
    import keras_egemma as eg
    from keras_egemma import _quiet

    with _quiet.native_logs_dropped():
        model = eg.EmbeddingGemma.from_preset(args.preset, dtype=args.dtype)
    app = create_app(
        model,
        model_name=args.model_name or _model_name(args.preset),
        api_key=args.api_key,
        dimensions=args.dimensions,
        default_input_type=args.default_input_type,
        limits=Limits(max_inputs=args.max_inputs, max_input_chars=args.max_input_chars),
        max_batch_tokens=args.max_batch_tokens,
        max_batch_size=args.max_batch_size,
        max_wait=args.max_wait_ms / 1000,
        max_queue=args.max_queue,
    )
    serve(
        app,
        host=args.host,
        port=args.port,
        drain_timeout=args.drain_timeout,
        log_level=args.log_level,
    )


def main(argv=None):
    """`python -m keras_egemma.serving [options]`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m keras_egemma.serving", description=SERVE_HELP)
    parser.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help=f"Preset name, folder or handle (default: {DEFAULT_PRESET}).",
    )
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_serve(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0
