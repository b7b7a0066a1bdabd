"""Size on disk, model memory, speed and fidelity of each quantization mode.

    python benchmarks/quantization_fidelity.py [--preset embeddinggemma_mini] [--out results/quantization_fidelity.json]

Saves the preset as float32 and after `quantize(mode)` for each mode, then
loads each in a fresh process (`keras_egemma.evaluation.footprint`): model
memory is the peak RSS above the process with Keras and the tokenizer
loaded, speed the second pass over the documents. Fidelity compares each
mode's embeddings with float32's on the real texts of `fidelity_texts.py`
(338: the sample corpus' queries and titled documents, and general English
sentences): minimum and mean cosine, and top-10 agreement (the mean overlap
of each corpus query's 10 best documents with float32's). The default, the
bundled model, takes a few minutes on two CPU cores; the JSON goes to
docs/results/ and `python docs/render.py` puts it in docs/quantization.md.
"""

import argparse
import glob
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

import keras_egemma as eg  # noqa: E402
from keras_egemma.evaluation.footprint import measure_in_fresh_process  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fidelity_texts import ENGLISH_SENTENCES  # noqa: E402
from fidelity_texts import fidelity_texts  # noqa: E402
from provenance import provenance  # noqa: E402
from provenance import write_result  # noqa: E402

FORMATS = ["float32", "int8", "int4", "mixed", "mixed_per_channel"]


def weights_bytes(preset):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(preset, "*weights*")))


def top10(queries, documents):
    return np.argsort(-(queries @ documents.T), axis=1)[:, :10]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="embeddinggemma_mini")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="results/quantization_fidelity.json")
    parser.add_argument("--note", default="", help="e.g. whether the machine was shared")
    args = parser.parse_args(argv)

    queries, titles, documents = fidelity_texts()
    corpus_queries = len(queries) - len(ENGLISH_SENTENCES)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for fmt in FORMATS:
            model = eg.EmbeddingGemma.from_preset(args.preset)
            if fmt != "float32":
                model.quantize(fmt)
            path = os.path.join(work, fmt)
            model.save_to_preset(path)
            del model
            print(f"measuring {fmt} ...", flush=True)
            measured = measure_in_fresh_process(
                path, documents, queries, titles=titles, batch_size=args.batch_size
            )
            results[fmt] = {
                "weights_bytes": weights_bytes(path),
                "model_memory_bytes": measured["model_memory_bytes"],
                "sentences_per_s": measured["sentences_per_s"],
                "queries": measured["query_embeddings"],
                "documents": measured["document_embeddings"],
            }
    # Copied out first: the loop below takes the embeddings out of each result.
    reference = {key: results["float32"][key] for key in ("queries", "documents")}
    reference_top = top10(reference["queries"][:corpus_queries], reference["documents"])
    for fmt, r in results.items():
        q, d = r.pop("queries"), r.pop("documents")
        cosines = np.concatenate(
            [
                np.sum(q * reference["queries"], axis=1),
                np.sum(d * reference["documents"], axis=1),
            ]
        )
        ours = top10(q[:corpus_queries], d)
        r["cosine_min"] = float(cosines.min())
        r["cosine_mean"] = float(cosines.mean())
        r["top10_overlap"] = float(
            np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ours, reference_top)])
        )
        print(
            f"{fmt:18s} {r['weights_bytes'] / 1e6:6.2f} MB "
            f"{r['model_memory_bytes'] / 2**20:6.0f} MiB {r['sentences_per_s']:6.1f}/s "
            f"cosine min {r['cosine_min']:.5f} mean {r['cosine_mean']:.5f} "
            f"top-10 {r['top10_overlap']:.3f}"
        )
    data = provenance(env=("KERAS_BACKEND",))
    data.update(
        note=args.note,
        preset=args.preset,
        backend=os.environ["KERAS_BACKEND"],
        texts=len(queries) + len(documents),
        batch_size=args.batch_size,
        results=results,
    )
    write_result(data, args.out)


if __name__ == "__main__":
    main()
