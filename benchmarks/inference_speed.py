"""Inference speed and memory: keras_egemma per backend vs sentence-transformers.

Builds the full published configuration (24 layers, 768 wide, 262144-token
embedding table, window 512, 3072 projection) with random weights (no
download; the test-suite builder), converts it once to a keras_egemma preset,
and measures in one run, each library in its own fresh process:

- throughput (sentences/s, tokens/s) at 128, 512 and 2048 tokens with batches
  of 32, 8 and 2, timed through the public `encode` (tokenisation included,
  as in sentence-transformers' `encode`); the first call of each shape is a
  warm-up (it compiles); with each shape, the process' peak RSS while
  encoding it (the high-water mark is reset before each shape);
- memory of a process that loads the model and embeds one batch of 32 x 128
  tokens: its peak RSS whole, and above its RSS after imports and tokenizer
  load (the "model memory");
- time to first embedding: `from_preset` (or `SentenceTransformer(...)`) plus
  the first `encode` of one query.

With `--quantized int8,int4,mixed` the preset is also quantized
(`EmbeddingGemma.quantize`) and each quantized preset is measured the same
way, with its weights' size on disk.

`--model embeddinggemma2` measures EmbeddingGemma 2's published text
configuration instead (`embedding_gemma2_published.py`: 24 layers, hidden 512,
sliding radius 512, 262144-token table, projection to 768; transformers'
random initialisation), at 512, 2048 and 8192 tokens with batches of 8, 2 and
1, against sentence-transformers on the same folder (transformers'
`EmbeddingGemma2TextModel` with its default attention implementation, which
the JSON records); its JSON goes to results/inference_speed_embeddinggemma2.json.

Prints a table and writes JSON.

    python benchmarks/inference_speed.py [--model embeddinggemma|embeddinggemma2]
        [--backends jax,tensorflow,torch] [--dtypes float32,bfloat16]
        [--quantized int8,int4,mixed] [--shapes 128x32,512x8,2048x2] [--repeats 3]
        [--skip-speed] [--skip-memory] [--checkpoint DIR] [--output results/inference_speed.json]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from provenance import provenance
from provenance import write_result

HERE = os.path.dirname(os.path.abspath(__file__))
# Per model: the default shapes (LENGTHxBATCH) and output file.
MODELS = {
    "embeddinggemma": ("128x32,512x8,2048x2", "inference_speed.json"),
    "embeddinggemma2": ("512x8,2048x2,8192x1", "inference_speed_embeddinggemma2.json"),
}
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def make_texts(count, tokens, seed=0):
    """`count` texts, each longer than `tokens` tokens (both libraries truncate
    to exactly `tokens`, special tokens included)."""
    return [
        " ".join(WORDS[(i * 7 + j + seed) % len(WORDS)] + str(j % 10) for j in range(tokens))
        for i in range(count)
    ]


def rss_bytes(field):
    """`VmRSS` (now) or `VmHWM` (peak) of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss():
    """Resets this process' `VmHWM` to its current RSS (Linux 4.0+)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# --- Workers (each runs in its own process) ---------------------------------


def keras_model(preset, dtype):
    import keras_egemma as eg

    # A quantized preset carries its own dtype policies.
    float_dtype = dtype if dtype in ("float32", "bfloat16") else None
    return eg.EmbeddingGemma.from_preset(preset, dtype=float_dtype)


def keras_encode(model, texts, length, batch):
    import warnings

    model.preprocessor.sequence_length = length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the texts are truncated on purpose
        return model.encode(texts, batch_size=batch, verbose=False)


def st_model(checkpoint, dtype):
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(checkpoint, device="cpu", local_files_only=True)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    return model.eval()


def st_encode(model, texts, length, batch):
    model.max_seq_length = length
    return model.encode(texts, batch_size=batch, convert_to_numpy=True)


LIBRARIES = {"keras_egemma": (keras_model, keras_encode), "sentence_transformers": (
    st_model, st_encode)}


def worker_speed(library, source, dtype, shapes, repeats):
    load, encode = LIBRARIES[library]
    start = time.perf_counter()
    model = load(source, dtype)
    loaded = time.perf_counter()
    encode(model, ["Which planet is known as the Red Planet?"], 128, 1)
    first = time.perf_counter()
    rows = {}
    for length, batch in shapes:
        reset_peak_rss()
        texts = make_texts(batch, length)
        encode(model, texts, length, batch)  # warm-up: compiles this shape
        times = []
        for r in range(repeats):
            texts = make_texts(batch, length, seed=r + 1)
            t = time.perf_counter()
            encode(model, texts, length, batch)
            times.append(time.perf_counter() - t)
        best = min(times)
        rows[f"{length}x{batch}"] = {
            "seconds_per_batch": best,
            "sentences_per_s": batch / best,
            "tokens_per_s": batch * length / best,
            "peak_rss_bytes": rss_bytes("VmHWM"),
        }
    result = {
        "load_s": loaded - start,
        "time_to_first_embedding_s": first - start,
        "throughput": rows,
    }
    if library == "sentence_transformers":
        result["attention_implementation"] = model[0].auto_model.config._attn_implementation
    return result


def worker_memory(library, source, dtype):
    load, encode = LIBRARIES[library]
    if library == "keras_egemma":
        import keras_egemma as eg

        eg.EmbeddingGemmaPreprocessor.from_preset(source)
    else:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source)
    baseline = rss_bytes("VmRSS")
    model = load(source, dtype)
    after_load = rss_bytes("VmRSS")
    encode(model, make_texts(32, 128), 128, 32)
    peak = rss_bytes("VmHWM")
    return {
        "baseline_rss_bytes": baseline,
        "rss_after_load_bytes": after_load,
        "peak_rss_bytes": peak,
        "model_memory_bytes": peak - baseline,
    }


def run_worker(args, backend, *worker_args):
    env = dict(os.environ, KERAS_BACKEND=backend or "jax", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(worker_args)],
        env=env, capture_output=True, text=True,
    )
    if out.returncode:
        raise RuntimeError(f"worker {worker_args[:3]} ({backend}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- Driver -----------------------------------------------------------------


def build_checkpoint(path, model):
    if model == "embeddinggemma2":
        from embedding_gemma2_published import PUBLISHED_VOCAB_SIZE
        from embedding_gemma2_published import build_published_checkpoint

        # Speed does not depend on the values; these are the ones its docs describe.
        return build_published_checkpoint(path, weights="transformers",
                                          vocab_size=PUBLISHED_VOCAB_SIZE)
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import reference_checkpoints as rc

    return rc.build_sentence_transformers_checkpoint(
        path, num_layers=24, hidden_size=768, intermediate_size=1152, num_attention_heads=3,
        num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
        projection_intermediate_dim=3072, embedding_dim=768, vocab_size=262144,
    )


CONVERT = """
import sys, keras_egemma as eg
model = eg.EmbeddingGemma.from_preset(sys.argv[1])
if len(sys.argv) > 3:
    model.quantize(sys.argv[3])
model.save_to_preset(sys.argv[2])
"""


def convert(source, target, mode=None):
    subprocess.run([sys.executable, "-c", CONVERT, source, target] + ([mode] if mode else []),
                   check=True, capture_output=True,
                   env=dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3"))


def weights_bytes(preset):
    return sum(os.path.getsize(os.path.join(preset, name))
               for name in ("model.weights.h5", "task.weights.h5"))


def gib(n):
    return n / 2**30


def print_table(result):
    print(f"\n{result['machine']}")
    if result["sizes"]:
        print(f"\n{'weights on disk':38s}{'GB':>8s}")
        for name, size in result["sizes"].items():
            print(f"{name:38s}{size / 1e9:8.3f}")
    if result["memory"]:
        print(f"\n{'memory (load + embed 32 x 128)':38s}{'peak RSS GiB':>14s}{'model GiB':>11s}")
        for name, mem in result["memory"].items():
            print(f"{name:38s}{gib(mem['peak_rss_bytes']):14.2f}"
                  f"{gib(mem['model_memory_bytes']):11.2f}")
    if not result["runs"]:
        return
    shapes = list(next(iter(result["runs"].values()))["throughput"])
    print()
    header = f"{'':38s}" + "".join(f"{s + ' sent/s':>16s}{'tok/s':>9s}{'GiB':>6s}"
                                   for s in shapes)
    print(header + f"{'first emb s':>12s}")
    for name, run in result["runs"].items():
        cells = "".join(
            f"{run['throughput'][s]['sentences_per_s']:16.2f}"
            f"{run['throughput'][s]['tokens_per_s']:9.0f}"
            f"{gib(run['throughput'][s]['peak_rss_bytes']):6.1f}" for s in shapes
        )
        print(f"{name:38s}{cells}{run['time_to_first_embedding_s']:12.1f}")
    # Against sentence-transformers float32 (the reference), the fastest run
    # of any dtype; against each precision of sentence-transformers, the
    # fastest keras_egemma run of that precision (None: any).
    for reference_dtype, own_dtype in (("float32", None), ("float32", "float32"),
                                       ("bfloat16", "bfloat16")):
        reference = result["runs"].get(f"sentence_transformers (torch, {reference_dtype})")
        own = {n: r for n, r in result["runs"].items() if n.startswith("keras_egemma")
               and (own_dtype is None or n.endswith(f", {own_dtype})"))}
        if not reference or not own:
            continue
        print(f"\nfastest keras_egemma run ({own_dtype or 'any dtype'}) over "
              f"sentence-transformers {reference_dtype}:")
        for s in shapes:
            ours = max((r["throughput"][s]["sentences_per_s"], n) for n, r in own.items())
            print(f"  {s}: {ours[0] / reference['throughput'][s]['sentences_per_s']:.2f}x "
                  f"({ours[1]})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=list(MODELS), default="embeddinggemma",
                        help="embeddinggemma2: EmbeddingGemma 2's published text configuration")
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--dtypes", default="float32",
                        help="comma-separated: float32, bfloat16")
    parser.add_argument("--shapes", help="LENGTHxBATCH, comma-separated (default: "
                        + "; ".join(f"{m} {s}" for m, (s, _) in MODELS.items()) + ")")
    parser.add_argument("--quantized", default="",
                        help="comma-separated quantization modes to measure too: int8, int4, mixed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", help="an existing full-size checkpoint folder "
                        "(built by this script when omitted)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--output", help="default: results/inference_speed.json, or "
                        "results/inference_speed_embeddinggemma2.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, *rest = json.loads(args.worker)
        result = worker_speed(*rest) if kind == "speed" else worker_memory(*rest)
        print(json.dumps(result))
        return

    default_shapes, output = MODELS[args.model]
    args.shapes = args.shapes or default_shapes
    args.output = args.output or os.path.join("results", output)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    backends = args.backends.split(",") if args.backends else []
    dtypes = args.dtypes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or build_checkpoint(os.path.join(tmp, "checkpoint"),
                                                         args.model)
        preset = os.path.join(tmp, "preset")
        convert(checkpoint, preset)
        presets = {d: preset for d in dtypes}
        for mode in filter(None, args.quantized.split(",")):
            presets[mode] = os.path.join(tmp, f"preset_{mode}")
            convert(preset, presets[mode], mode)
        sizes = {f"keras_egemma ({d})": weights_bytes(p) for d, p in presets.items()
                 if d != "bfloat16"}
        runs, memory = {}, {}
        jobs = [("keras_egemma", b, p, d) for b in backends for d, p in presets.items()]
        if not args.skip_reference:
            jobs += [("sentence_transformers", None, checkpoint, d) for d in dtypes]
        for library, backend, source, dtype in jobs:
            name = f"{library} ({backend or 'torch'}, {dtype})"
            print(f"measuring {name} ...", flush=True)
            if not args.skip_speed:
                runs[name] = run_worker(args, backend, "speed", library, source, dtype, shapes,
                                        args.repeats)
            if not args.skip_memory and dtype != "bfloat16":
                memory[name] = run_worker(args, backend, "memory", library, source, dtype)

    import keras

    result = {
        **provenance(),  # command, date (UTC), machine, commit
        "versions": {"keras": keras.__version__, "python": platform.python_version()},
        "config": {k: v for k, v in vars(args).items() if k != "worker"},
        "runs": runs,
        "memory": memory,
        "sizes": sizes,
    }
    print_table(result)
    write_result(result, args.output)


if __name__ == "__main__":
    main()
