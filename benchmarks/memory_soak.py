"""Memory soak: `encode` over many texts must keep resident memory flat.

The full-size version of `integration/test_memory_soak.py` (issue 6): embed
`--short` short texts (default 100,000) and then `--long` texts of
`--long-length` tokens (default 1,000 of 2,048) in chunks, with
`gc.collect()` and the process's resident memory (VmRSS) recorded after
every chunk. The first `--warmup-chunks` chunks of each phase compile every
batch shape and let the allocator settle; over the rest, the slope of RSS
against texts embedded (least squares, MB per 1,000 texts) should be ~0: a
leak of one batch's activations, outputs or compiled function per batch
shows up as a steady climb. On JAX the number of live device arrays is
recorded too (it must not grow either).

The bundled `embeddinggemma_mini` preset pads and truncates to 512 tokens.
Its network has no position table (RoPE), so it runs at any length: when
`--long-length` is above the preset's `sequence_length`, the preprocessor's
limit is raised to `--long-length` for this run (and the output says so), so
the long phase really runs 2,048-token batches. The embeddings past the
trained length are of unknown quality; memory and compute are what is
measured. `--sequence-length N` sets the limit explicitly instead (texts
longer than N are truncated to N).

Prints a table and writes JSON (default `results/memory_soak.json`).

    KERAS_BACKEND=jax python benchmarks/memory_soak.py [--preset embeddinggemma_mini]
        [--short 100000] [--long 1000] [--long-length 2048] [--batch-size 32]
        [--short-chunk 5000] [--long-chunk 50] [--warmup-chunks 2]
        [--sequence-length N] [--output results/memory_soak.json]
"""

import argparse
import gc
import os
import platform
import subprocess
import time
import warnings

# The target is the JAX backend; KERAS_BACKEND still picks another.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from provenance import provenance  # noqa: E402
from provenance import write_result  # noqa: E402

WORDS = (
    "the a of to in and is for on with as by at from that this it be are was "
    "list dict string file module class function method value type error import "
    "return loop index key object number print open read write path system time "
    "data model query search result document planet river music history science"
).split()


def rss_mb(field="VmRSS"):
    """`VmRSS` (now) or `VmHWM` (peak) of this process, in MB (10^6 bytes)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"{field} not in /proc/self/status")


def settled_rss_mb(timeout=3.0, interval=0.2, tolerance=1.0):
    """RSS once it stops moving: XLA frees a call's temporaries (1.6 GB for
    32 x 2048 tokens) on its own threads, a moment after `encode` returns, so
    an immediate reading is sometimes taken before they are given back."""
    last = rss_mb()
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        time.sleep(interval)
        now = rss_mb()
        if abs(now - last) <= tolerance:
            return now
        last = now
    return last


def short_texts(start, count):
    """Texts `start .. start+count`: queries of 2 to 25 words, all distinct."""
    out = []
    for i in range(start, start + count):
        n = 2 + (i * 7919) % 24
        words = [WORDS[(i * 31 + j * 17) % len(WORDS)] for j in range(n)]
        out.append(f"{i}: " + " ".join(words) + ("?" if i % 3 else "."))
    return out


def long_texts(start, count, tokens):
    """Texts longer than `tokens` tokens (each cut to the limit by `encode`)."""
    out = []
    for i in range(start, start + count):
        words = [f"{WORDS[(i + j * 13) % len(WORDS)]}{(i * j) % 97}" for j in range(tokens)]
        out.append(f"document {i}. " + " ".join(words))
    return out


def live_arrays():
    """The number of live JAX arrays (None on other backends)."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    return len(jax.live_arrays())


def run_phase(model, name, total, chunk, make, task, batch_size, progress, done_before):
    """Embeds `total` texts in chunks; returns one record per chunk."""
    records = []
    embedded = 0
    while embedded < total:
        count = min(chunk, total - embedded)
        texts = make(embedded, count)
        begin = time.perf_counter()
        out = model.encode(texts, task=task, batch_size=batch_size, verbose=False)
        seconds = time.perf_counter() - begin
        if not np.isfinite(out).all():
            raise RuntimeError(f"{name}: non-finite embeddings in chunk {len(records)}")
        del texts, out
        gc.collect()
        embedded += count
        immediate = rss_mb()
        records.append({
            "texts": embedded,
            "rss_mb": settled_rss_mb(),
            "rss_immediate_mb": immediate,
            "seconds": seconds,
            "live_arrays": live_arrays(),
        })
        progress.update(done_before + embedded, [("rss_mb", records[-1]["rss_mb"])])
    return records


def summarize(records, rss_before, warmup_chunks):
    """RSS at start/end, slope after warm-up (MB per 1,000 texts), max."""
    steady = records[warmup_chunks:]
    summary = {
        "texts": records[-1]["texts"],
        "chunks": len(records),
        "rss_start_mb": rss_before,
        "rss_after_warmup_mb": records[warmup_chunks - 1]["rss_mb"] if warmup_chunks else rss_before,
        "rss_end_mb": records[-1]["rss_mb"],
        "rss_max_mb": max(r["rss_mb"] for r in records),
        "seconds": sum(r["seconds"] for r in records),
        "slope_mb_per_1000_texts": None,
        "live_arrays_after_warmup": records[max(warmup_chunks - 1, 0)]["live_arrays"],
        "live_arrays_end": records[-1]["live_arrays"],
    }
    summary["growth_after_warmup_mb"] = summary["rss_end_mb"] - summary["rss_after_warmup_mb"]
    summary["texts_per_s"] = summary["texts"] / summary["seconds"]
    if len(steady) >= 2:
        x = np.array([r["texts"] for r in steady], dtype="float64")
        y = np.array([r["rss_mb"] for r in steady], dtype="float64")
        summary["slope_mb_per_1000_texts"] = float(np.polyfit(x, y, 1)[0] * 1000)
    return summary


def print_table(phases):
    header = (
        "| phase | texts | RSS start | RSS after warm-up | RSS end | max RSS "
        "| slope after warm-up | live JAX arrays (warm-up -> end) | texts/s |"
    )
    print(header)
    print("|---" * 9 + "|")
    for name, s in phases.items():
        slope = s["slope_mb_per_1000_texts"]
        slope = "n/a (too few chunks)" if slope is None else f"{slope:+.3f} MB / 1000 texts"
        arrays = (
            "n/a" if s["live_arrays_end"] is None
            else f"{s['live_arrays_after_warmup']} -> {s['live_arrays_end']}"
        )
        print(
            f"| {name} | {s['texts']:,} | {s['rss_start_mb']:.0f} MB "
            f"| {s['rss_after_warmup_mb']:.0f} MB | {s['rss_end_mb']:.0f} MB "
            f"| {s['rss_max_mb']:.0f} MB | {slope} | {arrays} | {s['texts_per_s']:.0f} |"
        )


def code_state(package_dir):
    """(commit, uncommitted changes under the package) of the code measured."""
    def git(*args):
        try:
            return subprocess.run(
                ["git", "-C", package_dir, *args], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    return git("rev-parse", "HEAD"), git("status", "--porcelain", "--", ".")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="embeddinggemma_mini")
    parser.add_argument("--short", type=int, default=100_000, help="short texts to embed")
    parser.add_argument("--long", type=int, default=1000, help="long texts to embed")
    parser.add_argument("--long-length", type=int, default=2048,
                        help="tokens per long text (special tokens included)")
    parser.add_argument("--sequence-length", type=int, default=None,
                        help="the preprocessor's limit (default: the preset's, raised to "
                             "--long-length if below it)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--short-chunk", type=int, default=5000)
    parser.add_argument("--long-chunk", type=int, default=50)
    parser.add_argument("--warmup-chunks", type=int, default=2,
                        help="chunks per phase left out of the slope")
    parser.add_argument("--output", default=os.path.join("results", "memory_soak.json"))
    args = parser.parse_args()

    import keras

    import keras_egemma as eg

    rss_at_start = rss_mb()
    model = eg.EmbeddingGemma.from_preset(args.preset)
    preset_length = model.preprocessor.sequence_length
    notes = []
    if args.sequence_length is not None:
        model.preprocessor.sequence_length = args.sequence_length
    elif preset_length < args.long_length:
        model.preprocessor.sequence_length = args.long_length
        notes.append(
            f"{args.preset}'s sequence_length is {preset_length}; raised to "
            f"{args.long_length} for this run so that the long texts run at "
            f"{args.long_length} tokens (the network has no position table; "
            "embeddings past the trained length are of unknown quality, memory "
            "and compute are what is measured)."
        )
    sequence_length = model.preprocessor.sequence_length
    long_length = min(args.long_length, sequence_length)
    if long_length < args.long_length:
        notes.append(
            f"--sequence-length {sequence_length} is below --long-length "
            f"{args.long_length}: the long texts are truncated to {long_length} tokens."
        )
    # Check the long texts do fill `long_length` tokens once prompted and cut.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = model.preprocessor.format_texts(long_texts(0, 4, args.long_length),
                                                 task="document")
        lengths = [len(ids) for ids in model.preprocessor.tokenize_texts(sample)]
    if min(lengths) != long_length:
        raise RuntimeError(f"long texts give {lengths} tokens, not {long_length}")
    commit, changes = code_state(os.path.dirname(os.path.abspath(eg.__file__)))
    print(f"keras_egemma from {os.path.dirname(eg.__file__)} at commit {commit}"
          + (f", with uncommitted changes:\n{changes}" if changes else ""))
    print(f"backend {keras.backend.backend()}, preset {args.preset}, batch size "
          f"{args.batch_size}, sequence_length {sequence_length}; long texts are "
          f"{long_length} tokens (prompt and <bos>/<eos> included)")
    for note in notes:
        print("Note:", note)
    rss_loaded = rss_mb()

    total = args.short + args.long
    progress = keras.utils.Progbar(total, unit_name="text", stateful_metrics=["rss_mb"])
    phases, chunks = {}, {}
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long texts' truncation warning
        if args.short:
            before = rss_mb()
            chunks["short"] = run_phase(
                model, "short", args.short, args.short_chunk, short_texts, "query",
                args.batch_size, progress, 0,
            )
            phases["short"] = summarize(chunks["short"], before, args.warmup_chunks)
        if args.long:
            before = rss_mb()
            chunks[f"long ({long_length} tokens)"] = run_phase(
                model, "long", args.long, args.long_chunk,
                lambda start, count: long_texts(start, count, args.long_length),
                "document", args.batch_size, progress, args.short,
            )
            phases[f"long ({long_length} tokens)"] = summarize(
                chunks[f"long ({long_length} tokens)"], before, args.warmup_chunks
            )
    wall = time.perf_counter() - started
    peak = rss_mb("VmHWM")

    print()
    for note in notes:
        print("Note:", note)
    print(f"RSS after imports {rss_at_start:.0f} MB, after loading {rss_loaded:.0f} MB, "
          f"peak (VmHWM) {peak:.0f} MB; {wall / 60:.1f} min in all. MB = 10^6 bytes; "
          f"slope: least squares over the chunks after the first {args.warmup_chunks} "
          "of each phase.")
    print_table(phases)

    commit, changes = code_state(os.path.dirname(os.path.abspath(eg.__file__)))
    result = {
        **provenance(env=("KERAS_BACKEND",)),  # command, date (UTC), machine
        "keras_egemma_path": os.path.dirname(os.path.abspath(eg.__file__)),
        "commit": commit,
        "uncommitted_changes": changes,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "keras_egemma": eg.__version__,
        "python": platform.python_version(),
        "args": vars(args),
        "preset_sequence_length": preset_length,
        "sequence_length": sequence_length,
        "long_text_tokens": long_length,
        "notes": notes,
        "rss_after_imports_mb": rss_at_start,
        "rss_after_loading_mb": rss_loaded,
        "peak_rss_mb": peak,
        "wall_seconds": wall,
        "phases": phases,
        "chunks": chunks,
    }
    if keras.backend.backend() == "jax":
        import jax

        result["jax"] = jax.__version__
    write_result(result, args.output)


if __name__ == "__main__":
    main()
