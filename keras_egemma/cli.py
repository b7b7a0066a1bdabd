"""Command line: `keras-egemma` / `python -m keras_egemma`.

    keras-egemma search "How do I import a module?"            # bundled sample corpus
    keras-egemma search "query" --corpus ./docs --top-k 5
    keras-egemma search "query" --corpus ./docs --precision binary --rescore-multiplier 4
    keras-egemma search "query" --corpus ./docs --index docs.index   # built once, then loaded
    keras-egemma embed "first text" "second text" --task query
    keras-egemma embed "a text" --prompt "task: classification | query: "
    keras-egemma embed --file corpus.txt --task document --dim 256 --output emb.npy
    keras-egemma embed --runner DirectRunner --input 'corpus/*.jsonl' --output out/emb --task document
    keras-egemma evaluate ./my_dataset --dim 128 --output metrics.json
    keras-egemma bench --lengths 16 64 256
    keras-egemma bench --backend torch --dtype bfloat16
    keras-egemma convert ./embeddinggemma-300m ./my_preset
    keras-egemma convert ./my_preset ./my-embeddinggemma --to sentence-transformers
    keras-egemma convert ./my_preset ./my_keras_hub_preset --to keras-hub
    keras-egemma convert ./my_preset ./embeddinggemma-q8_0.gguf --to gguf --type q8_0
    keras-egemma serve --preset ./my_preset --port 8080 --api-key KEY

The global options (`--backend`, `--preset`) go before or after the command.
Keras reads its backend at import (and importing this package imports
Keras), so a `--backend` other than the loaded one re-runs the command in a
fresh interpreter with `KERAS_BACKEND` set.

A command is registered in `COMMANDS` (name -> `Command`): its arguments,
the function running it and whether it loads `--preset`.
"""

import argparse
import atexit
import contextlib
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from typing import Callable

from keras_egemma.io.atomic_saving import save_file_atomically
from keras_egemma.serving.command import SERVE_HELP
from keras_egemma.serving.command import add_serve_arguments
from keras_egemma.serving.command import run_serve

DEFAULT_PRESET = "embeddinggemma_mini"
# Files a corpus folder may hold besides text: skipped silently.
HIDDEN_PREFIXES = (".", "__")
# --backend: the package it imports, and how to install it (as README.md says).
BACKENDS = {
    "jax": ("jax", 'pip install -e ".[jax]"'),
    "tensorflow": ("tensorflow", "pip install -e ."),
    "torch": ("torch", 'pip install torch==2.13.0 && pip install -e ".[torch]"'),
}


# --- Reading input -----------------------------------------------------------


def _read_text_file(path):
    """A file's text; refuses binary files (NUL bytes or not UTF-8)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        if b"\x00" in data:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"{path} is not a UTF-8 text file; a corpus holds only text files "
            "(remove it, or pass the text files themselves)."
        ) from None


def _paragraphs(text):
    blocks = [" ".join(block.split()) for block in text.replace("\r\n", "\n").split("\n\n")]
    return [block for block in blocks if block]


def _file_documents(path, shown_as):
    """`(title, text, source)` documents of one file."""
    if path.endswith(".jsonl"):
        from keras_egemma.evaluation.datasets import read_jsonl

        documents = []
        for number, row in read_jsonl(path):
            if not isinstance(row.get("text"), str):
                raise ValueError(f'{path}, line {number}: needs a string "text".')
            documents.append((row.get("title") or None, row["text"], f"{shown_as}:{number}"))
        return documents
    text = _read_text_file(path)
    return [
        (None, paragraph, f"{shown_as} #{i + 1}") for i, paragraph in enumerate(_paragraphs(text))
    ]


def _read_corpus(corpus):
    """Documents of a folder (recursively, sorted) or of one file."""
    from keras_egemma.data import SAMPLE_CORPUS

    corpus = SAMPLE_CORPUS if corpus is None else corpus
    if os.path.isdir(corpus):
        documents = []
        for root, folders, files in os.walk(corpus):
            folders[:] = sorted(d for d in folders if not d.startswith(HIDDEN_PREFIXES))
            for name in sorted(files):
                if not name.startswith(HIDDEN_PREFIXES):
                    path = os.path.join(root, name)
                    documents += _file_documents(path, os.path.relpath(path, corpus))
    elif os.path.isfile(corpus):
        documents = _file_documents(corpus, os.path.basename(corpus))
    else:
        raise FileNotFoundError(f"No such file or folder: {corpus!r} (--corpus).")
    if not documents:
        raise ValueError(f"No documents in {corpus!r}: it holds no non-empty text.")
    return documents


def _read_texts(args):
    texts = list(args.texts)
    if args.file:
        texts += [line for line in _read_text_file(args.file).splitlines() if line.strip()]
    if not texts:
        raise ValueError("Nothing to embed: pass texts as arguments or --file with text lines.")
    return texts


# --- Writing output ----------------------------------------------------------


def _write_embeddings(path, texts, embeddings):
    import numpy as np

    if path.endswith(".npy"):

        def write(staging):
            with open(staging, "wb") as f:
                np.save(f, embeddings)
    elif path.endswith(".jsonl"):

        def write(staging):
            with open(staging, "w", encoding="utf-8") as f:
                for text, vector in zip(texts, embeddings):
                    f.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
    else:
        raise ValueError(f"--output must end in .npy or .jsonl, got {path!r}.")
    save_file_atomically(write, path)


# --- Options shared by commands ----------------------------------------------


def _model_options(parser, dim=True):
    parser.add_argument("--batch-size", type=int, default=32, help="Texts per forward pass.")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="Weights and compute precision (default: the preset's, float32 for the "
        "published model). bfloat16 is fastest with the torch backend on CPUs with "
        "bf16 instructions.",
    )
    if dim:
        parser.add_argument(
            "--dim",
            type=int,
            default=None,
            help="Matryoshka size (default: the model's full size).",
        )


def _prompt_option(parser, replaces):
    parser.add_argument(
        "--prompt",
        default=None,
        metavar="TEXT",
        help=f"A prefix of your own for each text, instead of {replaces}.",
    )


def _load(preset, dtype=None):
    import keras_egemma as eg
    from keras_egemma import _quiet

    # tensorflow-text's SentencePiece logs a line to stderr as the tokenizer loads.
    with _quiet.native_logs_dropped():
        return eg.EmbeddingGemma.from_preset(preset, dtype=dtype)


def _check_dim(model, dim):
    """Refuses a bad `--dim` before any text is embedded, naming the
    model's own sizes."""
    if dim is not None:
        from keras_egemma.layers.matryoshka import check_matryoshka_dim

        check_matryoshka_dim(dim, model.embedding_dim, model.matryoshka_dims)


def _positive(name, value):
    if value < 1:
        raise ValueError(f"--{name} must be a positive integer, got {value}.")


# --- Commands ----------------------------------------------------------------


def _search_arguments(parser):
    parser.add_argument("queries", nargs="+", help="One or more queries.")
    parser.add_argument(
        "--corpus",
        default=None,
        help="A folder (every text file in it, recursively; each paragraph a document), a "
        "text file (each paragraph a document) or a .jsonl file of "
        '{"title": ..., "text": ...} (default: the bundled Python reference sample).',
    )
    parser.add_argument("--top-k", type=int, default=5, help="Results per query (default 5).")
    parser.add_argument(
        "--precision",
        choices=["float32", "int8", "uint8", "binary", "ubinary"],
        default="float32",
        help="Compress the document embeddings and search them exactly: int8/uint8 one "
        "byte a dimension (ranges from the corpus), binary/ubinary one bit (default float32).",
    )
    parser.add_argument(
        "--rescore-multiplier",
        type=int,
        default=4,
        metavar="N",
        help="With --precision binary/ubinary: keep N x top-k candidates and re-rank them "
        "with the float query (0: no rescoring; default 4).",
    )
    parser.add_argument(
        "--index",
        default=None,
        metavar="PATH",
        help="Search an approximate nearest-neighbour index (FAISS HNSW, cosine) of the "
        "corpus at PATH: built and saved there when PATH does not exist, loaded otherwise "
        "(it must match the preset, --dim and corpus). Needs the index extra.",
    )
    _prompt_option(parser, "the query prompt (documents keep the document prompt)")
    _model_options(parser)


def _embed_documents(model, documents, args):
    print(f"Indexing {len(documents)} documents with {args.preset}...", file=sys.stderr)
    return model.encode_document(
        [text for _, text, _ in documents],
        titles=[title for title, _, _ in documents],
        dim=args.dim,
        batch_size=args.batch_size,
    )


def _corpus_index(model, documents, args):
    """The `--index` of the corpus: loaded (and checked against the preset,
    size, document prompt and corpus) if the file exists, else built and saved."""
    import hashlib

    from keras_egemma.search import EmbeddingIndex

    dim = args.dim or model.embedding_dim
    prompt = model.preprocessor.prompt_for("document")
    corpus_sha256 = hashlib.sha256(json.dumps(documents).encode("utf-8")).hexdigest()
    if os.path.exists(args.index):
        index = EmbeddingIndex.load(args.index)
        index.check_compatible(
            model=args.preset, dim=dim, prompt=prompt, source=f"The index {args.index}"
        )
        if index.get_config()["metadata"].get("corpus_sha256") != corpus_sha256:
            raise ValueError(
                f"The index {args.index} was built from another corpus than this one "
                f"({len(documents)} documents): pass the --corpus it was built from, or remove "
                "the file to build it again."
            )
        print(f"Loaded the index {args.index} ({len(index)} documents).", file=sys.stderr)
        return index
    index = EmbeddingIndex.build(
        _embed_documents(model, documents, args),
        ids=[source for _, _, source in documents],
        model=args.preset,
        prompt=prompt,
        metadata={"corpus": args.corpus or "bundled sample", "corpus_sha256": corpus_sha256},
    )
    index.save(args.index)
    print(f"Saved the index to {args.index}.", file=sys.stderr)
    return index


def _search(args, out):
    _positive("top-k", args.top_k)
    _positive("batch-size", args.batch_size)
    if args.rescore_multiplier < 0:
        raise ValueError(f"--rescore-multiplier must be 0 or more, got {args.rescore_multiplier}.")
    if args.index is not None:
        if args.precision != "float32":
            raise ValueError(
                "--precision applies to exact search; an --index holds float32 vectors."
            )
        if not _is_installed("faiss"):
            raise ValueError(
                "--index needs FAISS, which is not installed. Install it with: "
                'pip install -e ".[index]"'
            )
    from keras_egemma.quantization.embedding_quantization import quantization_ranges
    from keras_egemma.quantization.embedding_quantization import quantize_embeddings
    from keras_egemma.search import semantic_search

    documents = _read_corpus(args.corpus)
    model = _load(args.preset, args.dtype)
    _check_dim(model, args.dim)
    index = _corpus_index(model, documents, args) if args.index else None
    if index is None:
        embeddings = _embed_documents(model, documents, args)
        # int8 / uint8 ranges from the corpus itself (it is all there is).
        ranges = quantization_ranges(embeddings) if args.precision in ("int8", "uint8") else None
        codes = quantize_embeddings(embeddings, args.precision, ranges=ranges)
    query_prompt = {"task": "query"} if args.prompt is None else {"prompt": args.prompt}
    queries = model.encode(
        args.queries, dim=args.dim, batch_size=args.batch_size, verbose=False, **query_prompt
    )
    if index is not None:
        scores, ids = index.search(queries, args.top_k)
        position = {source: i for i, (_, _, source) in enumerate(documents)}
        indices = [[position[source] for source in row] for row in ids]
    else:
        scores, indices = semantic_search(
            queries,
            codes,
            args.top_k,
            precision=args.precision,
            ranges=ranges,
            rescore=args.rescore_multiplier > 0,
            rescore_multiplier=max(args.rescore_multiplier, 1),
        )
    for query, row, row_indices in zip(args.queries, scores, indices):
        print(f"\nquery: {query}", file=out)
        for rank, (score, i) in enumerate(zip(row, row_indices), 1):
            title, text, source = documents[i]
            label = f"{title} ({source})" if title else source
            snippet = text if len(text) <= 160 else text[:157] + "..."
            print(f"  {rank}. {score:.3f}  {label}\n       {snippet}", file=out)


def _embed_arguments(parser):
    parser.add_argument("texts", nargs="*", help="Texts to embed.")
    parser.add_argument("--file", help="A UTF-8 text file with one text per line.")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument(
        "--task",
        default=None,
        help="Prompt name: query, document, STS, Clustering, ... (default: none).",
    )
    _prompt_option(prompt, "a --task prompt")
    parser.add_argument(
        "--output",
        help="Write embeddings to .npy or .jsonl (with --runner: the prefix of the Parquet shards).",
    )
    parser.add_argument(
        "--runner",
        default=None,
        metavar="NAME",
        help="Embed --input shards in an Apache Beam pipeline on this runner (DirectRunner, "
        "DataflowRunner, FlinkRunner, SparkRunner); other options go to Beam unchanged. "
        "Needs the beam extra (docs/beam.md).",
    )
    parser.add_argument(
        "--input",
        default=None,
        metavar="PATTERN",
        help='With --runner: JSONL or Parquet shards of {"id", "text"[, "title"]} rows.',
    )
    parser.add_argument(
        "--share-model",
        action="store_true",
        help="With --runner: one model per worker machine, shared by its processes.",
    )
    _model_options(parser)


def _embed(args, out):
    import numpy as np

    _positive("batch-size", args.batch_size)
    if args.runner:
        if not _is_installed("apache_beam"):
            raise ValueError(
                'embed --runner needs Apache Beam. Install it with: pip install -e ".[beam]"'
            )
        from keras_egemma.beam.command import run_embed_pipeline

        return run_embed_pipeline(args, out)
    if args.input or args.share_model:
        raise ValueError("--input and --share-model apply to embed --runner only.")
    texts = _read_texts(args)
    model = _load(args.preset, args.dtype)
    _check_dim(model, args.dim)
    embeddings = model.encode(
        texts, task=args.task, prompt=args.prompt, dim=args.dim, batch_size=args.batch_size
    )
    if args.output:
        _write_embeddings(args.output, texts, embeddings)
        print(
            f"Wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.output}",
            file=out,
        )
        return
    prompt = f"prompt {args.prompt!r}" if args.prompt is not None else f"task {args.task}"
    print(
        f"{len(texts)} embeddings of size {embeddings.shape[1]} (preset {args.preset}, {prompt})",
        file=out,
    )
    shown = min(len(texts), 8)
    similarity = model.similarity(embeddings[:shown], embeddings[:shown])
    with np.printoptions(precision=3, suppress=True):
        for i in range(shown):
            print(f"  [{i}] {texts[i][:60]!r}: first values {embeddings[i, :4]}", file=out)
        print("cosine similarity:", file=out)
        print(similarity, file=out)


def _evaluate_arguments(parser):
    parser.add_argument(
        "dataset",
        help="A folder with corpus.jsonl + queries.jsonl + qrels.tsv (BEIR layout) "
        "and/or sts.jsonl; see keras_egemma.evaluation.datasets.",
    )
    parser.add_argument("--output", help="Also write the metrics to this .json file.")
    _model_options(parser)


def _evaluate(args, out):
    from keras_egemma.evaluation import datasets
    from keras_egemma.evaluation import evaluate_retrieval
    from keras_egemma.evaluation import evaluate_sts

    _positive("batch-size", args.batch_size)
    if not os.path.isdir(args.dataset):
        raise FileNotFoundError(f"No such folder: {args.dataset!r} (the dataset).")
    has_sts = os.path.isfile(os.path.join(args.dataset, "sts.jsonl"))
    has_retrieval = os.path.isfile(os.path.join(args.dataset, "corpus.jsonl"))
    if not (has_sts or has_retrieval):
        raise FileNotFoundError(
            f"{args.dataset} has neither corpus.jsonl (+ queries.jsonl, qrels.tsv) nor "
            "sts.jsonl; see keras_egemma.evaluation.datasets for the format."
        )
    # Read (and so validate) everything before loading the model.
    retrieval = datasets.load_retrieval_dataset(args.dataset) if has_retrieval else None
    sts = datasets.load_sts_dataset(args.dataset) if has_sts else None
    model = _load(args.preset, args.dtype)
    _check_dim(model, args.dim)
    common = dict(dim=args.dim, batch_size=args.batch_size, verbose="auto")
    results = {"preset": args.preset, "dim": args.dim or model.embedding_dim}
    if retrieval:
        results["retrieval"] = evaluate_retrieval(model, *retrieval, **common)
    if sts:
        results["sts"] = evaluate_sts(model, *sts, **common)
    print(f"{args.dataset} with {args.preset} at {results['dim']} dimensions", file=out)
    for kind in ("retrieval", "sts"):
        for name, value in results.get(kind, {}).items():
            print(
                f"  {kind:9} {name:10} {value if isinstance(value, int) else f'{value:.4f}'}",
                file=out,
            )
    if args.output:

        def write(staging):
            with open(staging, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)

        save_file_atomically(write, args.output)
        print(f"Wrote {args.output}", file=out)


def _bench_arguments(parser):
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=[16, 64, 256],
        help="Text lengths in tokens (default: 16 64 256).",
    )
    parser.add_argument("--num-texts", type=int, default=64, help="Texts per length (default 64).")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="Timed passes per length; the best is reported (default 3).",
    )
    _model_options(parser, dim=False)


def _bench_texts(model, length, count):
    """`count` different texts of exactly `length` tokens (with <bos>/<eos>)."""
    from pydoc_data.topics import topics

    tokenizer = model.preprocessor.tokenizer
    words = " ".join(topics[name] for name in sorted(topics)).split()
    ids = [int(i) for i in tokenizer.tokenize(" ".join(words[: 4 * (length + count)]))]
    texts = []
    for i in range(count):
        # Decode a window of ids, then re-tokenise: the decoded text may
        # tokenise a little differently, so trim word by word to the budget.
        text = tokenizer.detokenize(ids[i : i + length - 2])
        text = text if isinstance(text, str) else text.numpy().decode("utf-8")
        while len(model.preprocessor.tokenize_texts([text])[0]) > length:
            text = text[: text.rstrip().rfind(" ")]
        texts.append(text)
    return texts


def _bench(args, out):
    import time

    import keras

    from keras_egemma.models.progress import progress_bar

    for name in ("num-texts", "batch-size", "repeats"):
        _positive(name, getattr(args, name.replace("-", "_")))
    for length in args.lengths:
        _positive("lengths", length)
    model = _load(args.preset, args.dtype)
    limit = model.preprocessor.sequence_length
    if max(args.lengths) > limit:
        raise ValueError(
            f"--lengths must be at most {args.preset}'s sequence length ({limit} tokens), "
            f"got {max(args.lengths)}."
        )
    rows = []
    progress = progress_bar(len(args.lengths), "bench", "length")
    for length in args.lengths:
        texts = _bench_texts(model, length, args.num_texts)
        tokens = sum(len(ids) for ids in model.preprocessor.tokenize_texts(texts))
        model.encode(texts, batch_size=args.batch_size, verbose=False)  # compiles
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.encode(texts, batch_size=args.batch_size, verbose=False)
            best = min(best, time.perf_counter() - start)
        rows.append((length, args.num_texts / best, tokens / best))
        progress.update(1)
    progress.close()
    dtype = keras.backend.standardize_dtype(model.backbone.compute_dtype)
    print(
        f"{args.preset} on {keras.backend.backend()}, {dtype}, batch size {args.batch_size}, "
        f"{args.num_texts} texts per length, best of {args.repeats}",
        file=out,
    )
    print(f"  {'tokens/text':>11} {'sentences/s':>12} {'tokens/s':>10}", file=out)
    for length, sentences, tokens in rows:
        print(f"  {length:>11} {sentences:>12.1f} {tokens:>10.0f}", file=out)


# `convert --to`: what the output is called, and the model method writing it.
CONVERT_TARGETS = {
    "preset": ("a keras_egemma preset", "save_to_preset"),
    "sentence-transformers": ("a sentence-transformers folder", "save_to_sentence_transformers"),
    "keras-hub": ("a KerasHub Gemma3Backbone preset", "save_to_keras_hub"),
    "gguf": ("a GGUF file", "save_to_gguf"),
}


def _convert_arguments(parser):
    parser.add_argument("source", help="Checkpoint folder, name or handle.")
    parser.add_argument("destination", help="Folder (or, with --to gguf, file) to write.")
    parser.add_argument(
        "--to",
        choices=list(CONVERT_TARGETS),
        default="preset",
        help="Output format: a keras_egemma preset (default), a sentence-transformers / "
        "Hugging Face folder, a KerasHub Gemma3Backbone preset, or a GGUF file (llama.cpp, "
        "Ollama).",
    )
    parser.add_argument(
        "--type",
        choices=["f32", "f16", "q8_0"],
        default=None,
        help="GGUF tensor type for --to gguf (default f16).",
    )
    parser.add_argument(
        "--dequantize",
        action="store_true",
        help="Export a quantized model's weights as the floats its layers compute with "
        "(formats other than a preset hold float weights).",
    )


def _convert(args, out):
    name, method = CONVERT_TARGETS[args.to]
    if args.type is not None and args.to != "gguf":
        raise ValueError(f"--type applies to --to gguf only, not --to {args.to}.")
    if args.dequantize and args.to == "preset":
        raise ValueError("--dequantize applies to exports (--to), not to a preset.")
    options = {} if args.type is None else {"file_type": args.type}
    if args.dequantize:
        options["dequantize"] = True
    model = _load(args.source)
    getattr(model, method)(args.destination, **options)
    print(f"Saved {args.source} as {name} in {args.destination}", file=out)


@dataclasses.dataclass(frozen=True)
class Command:
    """A sub-command: `arguments(parser)` adds its own options, `run(args,
    out)` runs it (results to `out`); `loads_preset`: it takes `--preset`."""

    help: str
    arguments: Callable
    run: Callable
    loads_preset: bool = True


COMMANDS = {
    "search": Command(
        "Rank the documents of a folder or file against queries.", _search_arguments, _search
    ),
    "embed": Command("Embed texts; print a summary or write a file.", _embed_arguments, _embed),
    "evaluate": Command(
        "Retrieval (nDCG@10, MRR@10, MAP, recall@k) and STS (Spearman) metrics on a local "
        "dataset folder.",
        _evaluate_arguments,
        _evaluate,
    ),
    "bench": Command("Inference speed of model.encode on this machine.", _bench_arguments, _bench),
    "convert": Command(
        "Convert a checkpoint (any layout from_preset reads) into a preset folder, or "
        "export a model to another runtime's format.",
        _convert_arguments,
        _convert,
        loads_preset=False,
    ),
    # keras_egemma.serving: an OpenAI-compatible HTTP endpoint (the `serve` extra).
    "serve": Command(SERVE_HELP, add_serve_arguments, run_serve),
}


# --- Parsing and running -----------------------------------------------------


def _global_options(parser, preset, default):
    """`--backend` (and `--preset` where `preset`): on the main parser with
    their defaults, on each sub-command's with none, so that a value given
    after the command overrides, and one given before is kept."""
    parser.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default=default,
        help="Keras backend (default: $KERAS_BACKEND or Keras' default).",
    )
    if preset:
        parser.add_argument(
            "--preset",
            default=default,
            help=f"Preset name, folder or handle (default: {DEFAULT_PRESET}).",
        )


def _parser():
    parser = argparse.ArgumentParser(prog="keras-egemma", description=__doc__.split("\n")[0])
    _global_options(parser, preset=True, default=None)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        _global_options(sub, preset=command.loads_preset, default=argparse.SUPPRESS)
        command.arguments(sub)
    return parser


def _parse(argv):
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    # `embed --runner`: options this parser does not know are Beam's.
    if unknown and not getattr(args, "runner", None):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv, args.unknown = argv, unknown
    if COMMANDS[args.command].loads_preset:
        args.preset = args.preset or DEFAULT_PRESET
    elif args.preset is not None:
        parser.error(f"--preset does not apply to {args.command}: name the model as its SOURCE.")
    return args


def _is_installed(package):
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken install, or one blocked in sys.modules
        return False


def _run_on_backend(backend, argv):
    """Runs the command line in a fresh interpreter with `KERAS_BACKEND` set;
    returns its exit status (2 if the backend's package is not installed)."""
    package, install = BACKENDS[backend]
    if not _is_installed(package):
        print(
            f"error: --backend {backend} needs the {package} package, which is not "
            f"installed. Install it with: {install}",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.call([sys.executable, "-m", "keras_egemma", *argv], env=env)


@contextlib.contextmanager
def _warnings_as_one_line():
    """Python warnings as one `warning: message` line each, on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv=None):
    """Runs the command line; returns the exit status: 0, 1 on an error in
    the input, 2 on a usage error or a `--backend` that is not installed.

    Example:
    ```python
    from keras_egemma.cli import main
    main(["search", "How do I import a module?"])
    ```
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    import keras

    if args.backend and args.backend != keras.backend.backend():
        return _run_on_backend(args.backend, argv)
    try:
        # Results go to stdout, everything else (progress bars, library
        # output, warnings) to stderr, so `keras-egemma ... > results.txt`
        # holds only results.
        out = sys.stdout
        with contextlib.redirect_stdout(sys.stderr), _warnings_as_one_line():
            COMMANDS[args.command].run(args, out)
    except BrokenPipeError:
        # The reader of stdout has gone (`| head`): stop quietly, and send what
        # Python flushes at exit to /dev/null rather than to the closed pipe.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, OSError) as e:
        message = " ".join(str(e).split())  # one line, whatever the exception held
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


def run():
    """The `keras-egemma` command (and `python -m keras_egemma`): `main()` on
    `sys.argv`, then the process ends at once with its exit status.

    Once a command's work is done, Python's own shutdown (tearing down every
    module TensorFlow, JAX and PyTorch loaded, then their native libraries)
    took seconds more: here the exit handlers run and the standard streams
    are flushed, and the process ends without it. In-process callers use
    `main`, which returns.
    """
    status = main()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:  # not CPython: the usual shutdown
        sys.exit(status)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or a reader that has gone
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
