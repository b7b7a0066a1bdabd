"""Memory of loading and embedding, from every layout, on every backend.

Builds the full published configuration (24 layers, 768 wide, 262,144-token
embedding table, 3072 projection) with random weights as a Hugging Face /
sentence-transformers folder (the test-suite builder), converts it to this
library's preset and to a KerasHub preset, then, one fresh process per
backend x layout, loads the model with `EmbeddingGemma.from_preset` and embeds
32 texts of 128 tokens. Alongside, sentence-transformers loads the same
Hugging Face folder and embeds the same texts.

Each process records, above its RSS after imports and the tokenizer (the
baseline):

- `load_peak`: the peak RSS while loading (`VmHWM` after `from_preset`);
- `after_load`: the RSS once loaded (what the weights hold);
- `embed_peak`: the peak RSS while embedding (`VmHWM`, reset with
  `/proc/self/clear_refs` after loading);
- `peak`: the larger of the two peaks, the figure the issue compares.

Memory, unlike time, is measured faithfully on a loaded machine. Prints a
table and writes JSON (default `results/loading_memory.json`).

    python benchmarks/loading_memory.py [--backends jax,tensorflow,torch]
        [--layouts keras_egemma,huggingface,keras_hub] [--checkpoint HF_DIR]
        [--skip-reference] [--output results/loading_memory.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from inference_speed import build_checkpoint
from inference_speed import make_texts
from inference_speed import rss_bytes
from provenance import provenance
from provenance import write_result

LAYOUTS = ("keras_egemma", "huggingface", "keras_hub")
BATCH, LENGTH = 32, 128


def reset_peak():
    """Sets `VmHWM` to the current RSS (Linux `clear_refs`, value 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# --- Worker (one per process) -------------------------------------------------


def tokenizer_file(folder):
    """The SentencePiece model of any of the three layouts."""
    for name in ("tokenizer.model", os.path.join("assets", "tokenizer", "vocabulary.spm")):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"{folder} has no SentencePiece model")


def worker(library, source):
    texts = make_texts(BATCH, LENGTH)
    if library == "keras_egemma":
        import warnings

        import keras_egemma as eg

        eg.EmbeddingGemmaTokenizer(proto=tokenizer_file(source))
        baseline = rss_bytes("VmRSS")
        reset_peak()
        model = eg.EmbeddingGemma.from_preset(source)
        load_peak = rss_bytes("VmHWM")
        after_load = rss_bytes("VmRSS")
        reset_peak()
        model.preprocessor.sequence_length = LENGTH
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the texts are truncated on purpose
            model.encode(texts, batch_size=BATCH, verbose=False)
    else:
        from sentence_transformers import SentenceTransformer
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source)
        baseline = rss_bytes("VmRSS")
        reset_peak()
        model = SentenceTransformer(source, device="cpu", local_files_only=True).eval()
        load_peak = rss_bytes("VmHWM")
        after_load = rss_bytes("VmRSS")
        reset_peak()
        model.max_seq_length = LENGTH
        model.encode(texts, batch_size=BATCH, convert_to_numpy=True)
    embed_peak = rss_bytes("VmHWM")
    return {
        "baseline_rss_bytes": baseline,
        "load_peak_bytes": load_peak - baseline,
        "after_load_bytes": after_load - baseline,
        "embed_peak_bytes": embed_peak - baseline,
        "peak_bytes": max(load_peak, embed_peak) - baseline,
    }


def run_worker(backend, library, source):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps([library, source])],
        env=env, capture_output=True, text=True,
    )
    if out.returncode:
        raise RuntimeError(f"worker {library} ({backend}) on {source} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- Driver -----------------------------------------------------------------

CONVERT = """
import sys, keras_egemma as eg
from keras_egemma.convert.keras_hub_preset_writing import save_keras_hub_preset
model = eg.EmbeddingGemma.from_preset(sys.argv[1])
model.save_to_preset(sys.argv[2])
save_keras_hub_preset(model, sys.argv[3])
"""


def build_layouts(checkpoint, tmp):
    """{layout: folder} for the three layouts of one set of weights."""
    if checkpoint is None:
        checkpoint = build_checkpoint(os.path.join(tmp, "huggingface"))
    folders = {"huggingface": checkpoint, "keras_egemma": os.path.join(tmp, "keras_egemma"),
               "keras_hub": os.path.join(tmp, "keras_hub")}
    subprocess.run(
        [sys.executable, "-c", CONVERT, checkpoint, folders["keras_egemma"], folders["keras_hub"]],
        check=True, capture_output=True,
        env=dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3"),
    )
    return folders


def gib(n):
    return n / 2**30


def print_table(result):
    print(f"\n{result['machine']}\nGiB above the RSS after imports + tokenizer:")
    print(f"{'':44s}{'load peak':>10s}{'loaded':>10s}{'embed peak':>11s}{'peak':>8s}")
    for run in result["runs"]:
        name = f"{run['library']} ({run['backend']}, {run['layout']})"
        print(f"{name:44s}{gib(run['load_peak_bytes']):10.2f}{gib(run['after_load_bytes']):10.2f}"
              f"{gib(run['embed_peak_bytes']):11.2f}{gib(run['peak_bytes']):8.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--checkpoint", help="an existing full-size Hugging Face folder "
                        "(built by this script when omitted)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--output", default=os.path.join("results", "loading_memory.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = build_layouts(args.checkpoint, tmp)
        jobs = [("keras_egemma", backend, layout) for backend in args.backends.split(",")
                for layout in args.layouts.split(",")]
        if not args.skip_reference:
            jobs.append(("sentence_transformers", "torch", "huggingface"))
        for library, backend, layout in jobs:
            print(f"measuring {library} ({backend}, {layout}) ...", flush=True)
            runs.append({"library": library, "backend": backend, "layout": layout,
                         **run_worker(backend, library, folders[layout])})

    result = {
        **provenance(),  # command, date (UTC), machine, commit
        "texts": {"count": BATCH, "tokens": LENGTH},
        "runs": runs,
    }
    print_table(result)
    write_result(result, args.output)


if __name__ == "__main__":
    main()
