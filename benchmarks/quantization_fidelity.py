"""Size on disk, model memory, speed and fidelity of each quantization mode.

    python benchmarks/quantization_fidelity.py [--preset embeddinggemma_mini |
        --embeddinggemma2 [--weights conditioned|transformers]]
        [--formats float32,int8,int4,mixed,mixed_per_channel] [--out results/quantization_fidelity.json]
        [--shared-machine]

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

`--embeddinggemma2` measures EmbeddingGemma 2's published text configuration
with random weights instead (`embedding_gemma2_published.py`: 24 layers, hidden
512, 262144-token table; built offline, seed 0), writing
results/quantization_fidelity_embeddinggemma2.json by default. `--weights
conditioned` (default) scales the q/k norms so that attention scores have unit
variance, which keeps the network's float32 rounding at rounding size;
`--weights transformers` (transformers' init, norms one) is chaotic: there
bfloat16 alone is at cosine ~0.7 to float32, so no quantization bound holds.
Random weights have none of a trained model's outliers, so these figures speak
to the quantized layers' arithmetic on these shapes, not to a trained model's
quality.
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
WEIGHTS_NAMES = {"conditioned": "conditioned: q/k norms scaled to unit-variance scores",
                 "transformers": "transformers' initialisation"}


def weights_bytes(preset):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(preset, "*weights*")))


def top10(queries, documents):
    return np.argsort(-(queries @ documents.T), axis=1)[:, :10]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="embeddinggemma_mini")
    parser.add_argument("--embeddinggemma2", action="store_true",
                        help="EmbeddingGemma 2's published text configuration, random weights")
    parser.add_argument("--weights", choices=("conditioned", "transformers"),
                        default="conditioned",
                        help="--embeddinggemma2's random weights (embedding_gemma2_published.py)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help="comma-separated; float32 (the reference) is always measured")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", help="default: results/quantization_fidelity.json, or "
                        "results/quantization_fidelity_embeddinggemma2.json")
    parser.add_argument("--note", default="", help="e.g. whether the machine was shared")
    parser.add_argument("--shared-machine", action="store_true",
                        help="other work ran alongside: speeds are recorded, and the "
                             "rendered table leaves them out")
    args = parser.parse_args(argv)
    formats = ["float32"] + [f for f in args.formats.split(",") if f and f != "float32"]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        parser.error(f"unknown formats {unknown}; choose from {', '.join(FORMATS)}")
    name = "quantization_fidelity_embeddinggemma2" if args.embeddinggemma2 else (
        "quantization_fidelity")
    args.out = args.out or f"results/{name}.json"

    queries, titles, documents = fidelity_texts()
    corpus_queries = len(queries) - len(ENGLISH_SENTENCES)
    results = {}
    model_name = None
    with tempfile.TemporaryDirectory() as work:
        source = args.preset
        if args.embeddinggemma2:
            from embedding_gemma2_published import PUBLISHED_VOCAB_SIZE
            from embedding_gemma2_published import build_published_checkpoint

            source = build_published_checkpoint(
                os.path.join(work, "embeddinggemma2"), weights=args.weights,
                vocab_size=PUBLISHED_VOCAB_SIZE)
            model_name = ("EmbeddingGemma 2's published text configuration with random weights "
                          f"({WEIGHTS_NAMES[args.weights]}, seed 0)")
        for fmt in formats:
            model = eg.EmbeddingGemma.from_preset(source)
            if fmt != "float32":
                model.quantize(fmt)
            path = os.path.join(work, fmt)
            model.save_to_preset(path)
            del model
            print(f"measuring {fmt} ...", flush=True)
            measured = measure_in_fresh_process(
                path, documents, queries, titles=titles, batch_size=args.batch_size
            )
            q, d = measured["query_embeddings"], measured["document_embeddings"]
            if fmt == "float32":  # the reference (measured first)
                reference = {"queries": q, "documents": d}
                reference_top = top10(q[:corpus_queries], d)
            cosines = np.concatenate(
                [np.sum(q * reference["queries"], axis=1),
                 np.sum(d * reference["documents"], axis=1)]
            )
            ours = top10(q[:corpus_queries], d)
            r = results[fmt] = {
                "weights_bytes": weights_bytes(path),
                "model_memory_bytes": measured["model_memory_bytes"],
                "sentences_per_s": measured["sentences_per_s"],
                "cosine_min": float(cosines.min()),
                "cosine_mean": float(cosines.mean()),
                "top10_overlap": float(
                    np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ours, reference_top)])
                ),
            }
            # Printed as each mode is measured, so that a long run shows its figures early.
            print(
                f"{fmt:18s} {r['weights_bytes'] / 1e6:6.2f} MB "
                f"{r['model_memory_bytes'] / 2**20:6.0f} MiB {r['sentences_per_s']:6.1f}/s "
                f"cosine min {r['cosine_min']:.5f} mean {r['cosine_mean']:.5f} "
                f"top-10 {r['top10_overlap']:.3f}", flush=True,
            )
    data = provenance(env=("KERAS_BACKEND",))
    data.update(
        note=args.note,
        shared_machine=args.shared_machine,
        preset=None if args.embeddinggemma2 else args.preset,
        model=model_name,
        backend=os.environ["KERAS_BACKEND"],
        texts=len(queries) + len(documents),
        batch_size=args.batch_size,
        results=results,
    )
    write_result(data, args.out)


if __name__ == "__main__":
    main()
