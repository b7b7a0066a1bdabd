"""Corpus embedding on Apache Beam against `encode`: issue 25's 10,000-text run.

Writes `--texts` texts (1 to 200 words cut from the bundled sample corpus at
seeded random places, every other one with a title) as JSONL shards, embeds
them with `keras-egemma embed --runner DirectRunner` in multi-process mode
(`--workers` worker processes, each loading the model once), then checks the
Parquet shards written: every id exactly once, and each embedding equal to
`EmbeddingGemma.encode_document` of the same rows in this process (largest
absolute difference, bound 1e-6). Wall time of the pipeline (worker start,
model loads and compilation included) goes in the JSON; timings need a quiet
machine. Needs the beam extra. Exits 1 if a check fails.

    KERAS_BACKEND=jax python benchmarks/beam_embed.py [--texts 10000] [--workers 2]
        [--preset embeddinggemma_mini] [--output results/beam_embed.json]
"""

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from provenance import provenance
from provenance import write_result

import keras_egemma as eg
from keras_egemma.data import SAMPLE_CORPUS

BOUND = 1e-6


def make_rows(count, seed=0):
    with open(SAMPLE_CORPUS, encoding="utf-8") as f:
        words = " ".join(json.loads(line)["text"] for line in f).split()
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        start = rng.randrange(len(words))
        text = " ".join(words[start : start + rng.randint(1, 200)])
        rows.append({"id": f"text-{i}", "text": text, "title": f"Title {i}" if i % 2 else None})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--preset", default="embeddinggemma_mini")
    parser.add_argument("--output", default="results/beam_embed.json")
    args = parser.parse_args()
    rows = make_rows(args.texts)
    with tempfile.TemporaryDirectory() as folder:
        for s in range(args.shards):
            with open(os.path.join(folder, f"part-{s}.jsonl"), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows[s :: args.shards])
        prefix = os.path.join(folder, "out", "embeddings")
        command = [
            sys.executable, "-m", "keras_egemma", "embed", "--runner", "DirectRunner",
            "--input", os.path.join(folder, "*.jsonl"), "--output", prefix,
            "--task", "document", "--preset", args.preset,
            f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing",
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        files = sorted(glob.glob(prefix + "-*.parquet"))
        table = pa.concat_tables([pq.read_table(path) for path in files])
    ids = table.column("id").to_pylist()
    embeddings = np.array(table.column("embedding").to_pylist(), "float32")
    model = eg.EmbeddingGemma.from_preset(args.preset)
    reference = model.encode_document(
        [row["text"] for row in rows], titles=[row["title"] for row in rows], verbose=False
    )
    position = {row_id: i for i, row_id in enumerate(ids)}
    ids_ok = len(ids) == len(set(ids)) == len(rows) and set(ids) == {r["id"] for r in rows}
    difference = None
    if ids_ok:
        got = embeddings[[position[row["id"]] for row in rows]]
        difference = float(np.abs(got - reference).max())
    result = {
        **provenance(env=("KERAS_BACKEND", "OMP_NUM_THREADS")),
        "backend": keras.backend.backend(),
        "preset": args.preset,
        "texts": args.texts,
        "workers": args.workers,
        "input_shards": args.shards,
        "output_shards": len(files),
        "every_id_once": ids_ok,
        "max_abs_difference_to_encode": difference,
        "bound": BOUND,
        "pipeline_seconds": round(seconds, 1),
        "texts_per_second": round(args.texts / seconds, 1),
    }
    print(json.dumps(result, indent=2))
    write_result(result, args.output)
    return 0 if ids_ok and difference <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
