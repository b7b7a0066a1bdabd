"""Load test of `keras-egemma serve` on loopback: dynamic batching against `encode`.

Builds the published configuration with random weights (as
inference_speed.py does: no download), then per backend starts one server
process, which

- makes `--texts` different texts of up to `--tokens` tokens (special
  tokens included, no prompt; 62 to 64 for the default), compiles every batch shape the server will use
  (1, 2, 4, ... 32 rows of that length), and times `model.encode` on all of
  them in batches of 32 (best of `--repeats`): the reference throughput;
- then serves the model on 127.0.0.1 (a free port) with the default batching
  settings (`create_app`, uvicorn).

This script is the client, in its own process (httpx, asyncio, one
keep-alive connection per client, reused for all its requests, so no
connection set-up is timed): for 1, 8 and 32 concurrent clients, each sending
one text per request and its next request when the answer arrives, it sends a
fixed number of requests (`--requests`, split over the clients, after one
warm-up request per client), stopping early after `--max-seconds` per level.
It records each request's latency (p50, p99), the texts per second over the
level, and, from the server's /metrics, the forward passes the level ran and
their mean texts (warm-up included); then stops the server with SIGTERM.
Loopback only; bounded in requests and time.

    python benchmarks/serve_load.py [--backends jax] [--clients 1,8,32]
        [--requests 32,128,256] [--tokens 64] [--texts 256] [--repeats 2]
        [--preset DIR | --checkpoint DIR] [--max-seconds 300] [--note TEXT]
        [--output results/serve_load.json]
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from inference_speed import build_checkpoint
from inference_speed import convert
from inference_speed import make_texts
from provenance import provenance
from provenance import write_result


def texts_of_length(model, count, tokens):
    """`count` different texts of at most `tokens` tokens (`<bos>`/`<eos>`
    included), each cut word by word from a longer one; and their lengths."""
    texts, lengths = [], []
    for candidate in make_texts(count, tokens, seed=1):
        words = candidate.split()
        while len(model.preprocessor.tokenize_texts([" ".join(words)])[0]) > tokens:
            words.pop()
        texts.append(" ".join(words))
        lengths.append(len(model.preprocessor.tokenize_texts([texts[-1]])[0]))
    return texts, lengths


# --- The server process --------------------------------------------------------


def serve_worker(preset, port, count, tokens, repeats):
    import keras

    import keras_egemma as eg
    from keras_egemma.serving import create_app
    from keras_egemma.serving import serve

    model = eg.EmbeddingGemma.from_preset(preset)
    texts, lengths = texts_of_length(model, count, tokens)
    rows = 1
    while rows <= 32:  # the shapes a batch of these texts can take
        model.encode(texts[:rows], batch_size=32, verbose=False)
        rows *= 2
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.encode(texts, batch_size=32, verbose=False)
        best = min(best, time.perf_counter() - start)
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "texts": texts,
                "tokens_per_text": [min(lengths), float(np.mean(lengths)), max(lengths)],
                "encode_texts_per_s": count / best,
                "encode_seconds": best,
            }
        ),
        flush=True,
    )
    serve(create_app(model, model_name="embeddinggemma"), port=port, log_level="warning")


# --- The client ----------------------------------------------------------------


async def run_level(base, texts, clients, requests, max_seconds):
    import httpx

    latencies, errors = [], 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as http:

        async def post(text):
            response = await http.post("/v1/embeddings", json={"input": text})
            return response.status_code == 200 and len(response.json()["data"]) == 1

        await asyncio.gather(*(post(texts[c % len(texts)]) for c in range(clients)))
        start = time.perf_counter()
        deadline = start + max_seconds
        per_client = [requests // clients + (c < requests % clients) for c in range(clients)]

        async def client(c):
            nonlocal errors
            for r in range(per_client[c]):
                if time.perf_counter() > deadline:
                    return
                sent = time.perf_counter()
                ok = await post(texts[(c * 7919 + r) % len(texts)])
                latencies.append(time.perf_counter() - sent)
                errors += not ok

        await asyncio.gather(*(client(c) for c in range(clients)))
        seconds = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "seconds": seconds,
        "texts_per_s": len(latencies) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def batch_counts(base):
    """(forward passes, texts in them) so far, from the server's /metrics."""
    import httpx

    text = httpx.get(f"{base}/metrics", timeout=30).text
    counts = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("keras_egemma_batch_size_count", "keras_egemma_batch_size_sum"):
            counts[name] = float(value)
    return counts["keras_egemma_batch_size_count"], counts["keras_egemma_batch_size_sum"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_backend(args, backend, preset):
    port = free_port()
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    worker = ["serve", preset, port, args.texts, args.tokens, args.repeats]
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(worker)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        if not line:
            raise RuntimeError(f"the {backend} server process failed (exit {server.wait()})")
        reference = json.loads(line)
        base = f"http://127.0.0.1:{port}"
        import httpx

        for _ in range(600):
            try:
                httpx.get(f"{base}/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        levels = []
        for clients, requests in zip(args.clients, args.requests):
            print(f"{backend}: {clients} clients, {requests} requests ...", flush=True)
            passes, texts = batch_counts(base)
            level = asyncio.run(
                run_level(base, reference["texts"], clients, requests, args.max_seconds)
            )
            after = batch_counts(base)
            level["forward_passes"] = int(after[0] - passes)
            level["texts_per_pass"] = (after[1] - texts) / max(after[0] - passes, 1)
            levels.append(level)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    for level in levels:
        level["of_encode"] = level["texts_per_s"] / reference["encode_texts_per_s"]
    return {
        "tokens_per_text": reference["tokens_per_text"],
        "encode_texts_per_s": reference["encode_texts_per_s"],
        "encode_seconds": reference["encode_seconds"],
        "levels": levels,
    }


def print_table(result):
    print(
        f"\n{result['machine']}; {result['config']['tokens']} tokens per text, one text per request"
    )
    print(
        f"{'backend':12s}{'clients':>8s}{'requests':>9s}{'texts/s':>9s}{'of encode':>10s}"
        f"{'p50 ms':>9s}{'p99 ms':>9s}{'errors':>7s}{'batch':>7s}"
    )
    for backend, run in result["runs"].items():
        print(f"{backend:12s}{'encode':>8s}{'':9s}{run['encode_texts_per_s']:9.1f}")
        for level in run["levels"]:
            print(
                f"{'':12s}{level['clients']:8d}{level['requests']:9d}"
                f"{level['texts_per_s']:9.1f}{level['of_encode']:10.0%}"
                f"{level['p50_ms']:9.0f}{level['p99_ms']:9.0f}{level['errors']:7d}"
                f"{level['texts_per_pass']:7.1f}"
            )


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="jax")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument(
        "--requests",
        default="32,128,256",
        help="requests per level, one number per --clients entry",
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=300,
        help="stop sending new requests of a level after this long",
    )
    parser.add_argument(
        "--preset",
        help="a preset folder or name to serve (default: the "
        "published configuration with random weights, built here)",
    )
    parser.add_argument(
        "--checkpoint",
        help="an existing full-size checkpoint folder from "
        "inference_speed.py's builder (built here when omitted)",
    )
    parser.add_argument("--note", default="", help="a sentence to keep with the figures")
    parser.add_argument("--output", default=os.path.join("results", "serve_load.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = json.loads(args.worker)
        serve_worker(*rest)
        return
    args.clients = [int(c) for c in args.clients.split(",")]
    args.requests = [int(r) for r in args.requests.split(",")]
    if len(args.requests) != len(args.clients):
        parser.error("--requests needs one number per --clients entry")
    load_before = load_average()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        preset = args.preset
        if preset is None:
            preset = os.path.join(tmp, "preset")
            checkpoint = args.checkpoint or build_checkpoint(os.path.join(tmp, "checkpoint"))
            convert(checkpoint, preset)
        for backend in args.backends.split(","):
            runs[backend] = measure_backend(args, backend, preset)
    result = {
        **provenance(),  # command, date (UTC), machine, commit
        "config": {k: v for k, v in vars(args).items() if k != "worker"},
        "model": f"`{args.preset}`"
        if args.preset
        else "the published configuration, random weights",
        "load_average": {"before": load_before, "after": load_average()},
        "note": args.note,
        "runs": runs,
    }
    print_table(result)
    write_result(result, args.output)


if __name__ == "__main__":
    main()
