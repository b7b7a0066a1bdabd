"""`keras-egemma embed --runner NAME`: the corpus embedded by a Beam pipeline.

The command line's own options are read by its parser; every other option
(`--project`, `--region`, `--temp_location`, `--direct_num_workers`, ...)
is a Beam pipeline option and goes to Beam unchanged, with `--runner`, so
the same command runs on the DirectRunner, Dataflow, Flink or Spark.
"""

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from keras_egemma.beam.model_handler import EmbeddingGemmaModelHandler
from keras_egemma.beam.pipeline import build_pipeline


def split_pipeline_options(argv, unknown, texts):
    """The Beam pipeline options in `argv`, in order, and the texts left.

    `unknown` holds the options the command line's parser did not know; the
    value of one given as `--name value` (not `--name=value`) is taken by the
    parser as a text to embed, so it is moved back after its option.

    Returns:
        `(pipeline_args, texts)`: the options for Beam, and the positional
        arguments that are not values of one (texts, which `--runner`
        does not take).
    """
    pipeline_args, texts, pending = [], list(texts), list(unknown)
    for i, token in enumerate(argv):
        if not pending or token != pending[0]:
            continue
        pending.pop(0)
        pipeline_args.append(token)
        value = argv[i + 1] if i + 1 < len(argv) else None
        takes_value = token.startswith("--") and "=" not in token
        if takes_value and value is not None and not value.startswith("-") and value in texts:
            texts.remove(value)
            pipeline_args.append(value)
    return pipeline_args, texts


def run_embed_pipeline(args, out):
    """Runs `embed --runner`: reads `args.input`, writes `args.output` shards."""
    pipeline_args, texts = split_pipeline_options(args.argv, args.unknown, args.texts)
    if texts or args.file:
        raise ValueError(
            "embed --runner reads its texts from --input shards; texts as arguments and "
            "--file do not apply (a Beam option's value? write it as --name=value)."
        )
    if not args.input or not args.output:
        raise ValueError(
            "embed --runner needs --input (JSONL or Parquet shards, a file pattern) and "
            "--output (the prefix of the Parquet shards to write)."
        )
    handler = EmbeddingGemmaModelHandler(
        args.preset,
        task=args.task,
        prompt=args.prompt,
        dim=args.dim,
        dtype=args.dtype,
        batch_size=args.batch_size,
        share_model_across_processes=args.share_model,
    )
    options = PipelineOptions(["--runner", args.runner, *pipeline_args])
    print(f"Embedding {args.input} with {args.preset} on {args.runner}...", file=sys.stderr)
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, args.input, args.output, handler)
    print(f"Wrote the embeddings to {args.output}-*.parquet", file=out)
