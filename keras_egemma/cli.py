"""Command line: `keras-egemma` / `python -m keras_egemma`.

    keras-egemma search "How do I import a module?"            # bundled sample corpus
    keras-egemma search "query" --corpus ./docs --top-k 5
    keras-egemma embed "first text" "second text" --task query
    keras-egemma embed --file corpus.txt --task document --dim 256 --output emb.npy
    keras-egemma evaluate ./my_dataset --dim 128 --output metrics.json
    keras-egemma bench --lengths 16 64 256
    keras-egemma --backend torch bench --dtype bfloat16
    keras-egemma convert ./embeddinggemma-300m ./my_preset
    keras-egemma convert ./my_preset ./my-embeddinggemma --to sentence-transformers
    keras-egemma convert ./my_preset ./my_keras_hub_preset --to keras-hub
    keras-egemma convert ./my_preset ./embeddinggemma-q8_0.gguf --to gguf --type q8_0

Every command takes `--preset` (default: the bundled `embeddinggemma_mini`).
Keras reads its backend at import (and importing this package imports
Keras), so `--backend` re-runs the command in a fresh interpreter with
`KERAS_BACKEND` set.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import warnings

DEFAULT_PRESET = "embeddinggemma_mini"
# Files a corpus folder may hold besides text: skipped silently.
HIDDEN_PREFIXES = (".", "__")


def _parser():
    parser = argparse.ArgumentParser(prog="keras-egemma", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=["jax", "tensorflow", "torch"],
        help="Keras backend (default: $KERAS_BACKEND or Keras' default).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def model_options(command, dim=True):
        command.add_argument(
            "--preset",
            default=DEFAULT_PRESET,
            help=f"Preset name, folder or handle (default: {DEFAULT_PRESET}).",
        )
        command.add_argument("--batch-size", type=int, default=32, help="Texts per forward pass.")
        command.add_argument(
            "--dtype",
            choices=["float32", "bfloat16"],
            default=None,
            help="Weights and compute precision (default: the preset's, float32 for the "
            "published model). bfloat16 is fastest with the torch backend on CPUs with "
            "bf16 instructions.",
        )
        if dim:
            command.add_argument(
                "--dim", type=int, default=None, help="Matryoshka size (default: the full size)."
            )

    search = commands.add_parser(
        "search", help="Rank the documents of a folder or file against queries."
    )
    search.add_argument("queries", nargs="+", help="One or more queries.")
    search.add_argument(
        "--corpus",
        default=None,
        help="A folder (every text file in it, recursively; each paragraph a document), a "
        "text file (each paragraph a document) or a .jsonl file of "
        '{"title": ..., "text": ...} (default: the bundled Python reference sample).',
    )
    search.add_argument("--top-k", type=int, default=5, help="Results per query (default 5).")
    model_options(search)

    embed = commands.add_parser("embed", help="Embed texts; print a summary or write a file.")
    embed.add_argument("texts", nargs="*", help="Texts to embed.")
    embed.add_argument("--file", help="A UTF-8 text file with one text per line.")
    embed.add_argument(
        "--task",
        default=None,
        help="Prompt name: query, document, STS, Clustering, ... (default: none).",
    )
    embed.add_argument("--output", help="Write embeddings to .npy or .jsonl.")
    model_options(embed)

    evaluate = commands.add_parser(
        "evaluate",
        help="Retrieval (nDCG@10, MRR@10, MAP, recall@k) and STS (Spearman) "
        "metrics on a local dataset folder.",
    )
    evaluate.add_argument(
        "dataset",
        help="A folder with corpus.jsonl + queries.jsonl + qrels.tsv (BEIR layout) "
        "and/or sts.jsonl; see keras_egemma.evaluation.datasets.",
    )
    evaluate.add_argument("--output", help="Also write the metrics to this .json file.")
    model_options(evaluate)

    bench = commands.add_parser("bench", help="Inference speed of model.encode on this machine.")
    bench.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=[16, 64, 256],
        help="Text lengths in tokens (default: 16 64 256).",
    )
    bench.add_argument("--num-texts", type=int, default=64, help="Texts per length (default 64).")
    bench.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="Timed passes per length; the best is reported (default 3).",
    )
    model_options(bench, dim=False)

    convert = commands.add_parser(
        "convert",
        help="Convert a checkpoint (any layout from_preset reads) into a preset folder, or "
        "export a model to another runtime's format.",
    )
    convert.add_argument("source", help="Checkpoint folder, name or handle.")
    convert.add_argument("destination", help="Folder to write.")
    convert.add_argument(
        "--to",
        choices=list(CONVERT_TARGETS),
        default="preset",
        help="Output format: a keras_egemma preset (default), a sentence-transformers / "
        "Hugging Face folder, a KerasHub Gemma3Backbone preset, or a GGUF file (llama.cpp, "
        "Ollama).",
    )
    convert.add_argument(
        "--type",
        choices=["f32", "f16", "q8_0"],
        default=None,
        help="GGUF tensor type for --to gguf (default f16).",
    )
    convert.add_argument(
        "--dequantize",
        action="store_true",
        help="Export a quantized model's weights as the floats its layers compute with "
        "(formats other than a preset hold float weights).",
    )
    return parser


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


def _write_atomically(path, write):
    """Writes through a temporary file, so a failure leaves nothing behind."""
    tmp = path + ".partial"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_embeddings(path, texts, embeddings):
    import numpy as np

    if path.endswith(".npy"):

        def write(tmp):
            with open(tmp, "wb") as f:
                np.save(f, embeddings)
    elif path.endswith(".jsonl"):

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                for text, vector in zip(texts, embeddings):
                    f.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
    else:
        raise ValueError(f"--output must end in .npy or .jsonl, got {path!r}.")
    _write_atomically(path, write)


# --- Commands ----------------------------------------------------------------


def _load(preset, dtype=None):
    import keras_egemma as eg
    from keras_egemma import _quiet

    # tensorflow-text's SentencePiece logs a line to stderr as the tokenizer loads.
    with _quiet.native_logs_dropped():
        return eg.EmbeddingGemma.from_preset(preset, dtype=dtype)


def _check_dim(model, dim):
    """Refuses a bad `--dim` before any text is embedded."""
    if dim is not None:
        import numpy as np

        from keras_egemma.layers import matryoshka_truncate

        matryoshka_truncate(np.zeros((1, model.embedding_dim), "float32"), dim)


def _positive(name, value):
    if value < 1:
        raise ValueError(f"--{name} must be a positive integer, got {value}.")


def _search(args, out):
    import numpy as np

    _positive("top-k", args.top_k)
    _positive("batch-size", args.batch_size)
    documents = _read_corpus(args.corpus)
    model = _load(args.preset, args.dtype)
    _check_dim(model, args.dim)
    print(f"Indexing {len(documents)} documents with {args.preset}...", file=sys.stderr)
    index = model.encode_document(
        [text for _, text, _ in documents],
        titles=[title for title, _, _ in documents],
        dim=args.dim,
        batch_size=args.batch_size,
    )
    queries = model.encode_query(
        args.queries, dim=args.dim, batch_size=args.batch_size, verbose=False
    )
    scores = model.similarity(queries, index)
    for query, row in zip(args.queries, scores):
        print(f"\nquery: {query}", file=out)
        for rank, i in enumerate(np.argsort(-row, kind="stable")[: args.top_k], 1):
            title, text, source = documents[i]
            label = f"{title} ({source})" if title else source
            snippet = text if len(text) <= 160 else text[:157] + "..."
            print(f"  {rank}. {row[i]:.3f}  {label}\n       {snippet}", file=out)


def _embed(args, out):
    import numpy as np

    _positive("batch-size", args.batch_size)
    texts = _read_texts(args)
    model = _load(args.preset, args.dtype)
    embeddings = model.encode(texts, task=args.task, dim=args.dim, batch_size=args.batch_size)
    if args.output:
        _write_embeddings(args.output, texts, embeddings)
        print(
            f"Wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.output}",
            file=out,
        )
        return
    print(
        f"{len(texts)} embeddings of size {embeddings.shape[1]} "
        f"(preset {args.preset}, task {args.task})",
        file=out,
    )
    shown = min(len(texts), 8)
    similarity = model.similarity(embeddings[:shown], embeddings[:shown])
    with np.printoptions(precision=3, suppress=True):
        for i in range(shown):
            print(f"  [{i}] {texts[i][:60]!r}: first values {embeddings[i, :4]}", file=out)
        print("cosine similarity:", file=out)
        print(similarity, file=out)


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

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)

        _write_atomically(args.output, write)
        print(f"Wrote {args.output}", file=out)


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
    from tqdm.auto import tqdm

    for name in ("num-texts", "batch-size", "repeats"):
        _positive(name, getattr(args, name.replace("-", "_")))
    for length in args.lengths:
        _positive("lengths", length)
    model = _load(args.preset, args.dtype)
    limit = model.preprocessor.sequence_length
    if max(args.lengths) > limit:
        raise ValueError(f"--lengths must be at most the preset's sequence_length ({limit}).")
    rows = []
    for length in tqdm(args.lengths, desc="bench", unit="length", file=sys.stderr):
        texts = _bench_texts(model, length, args.num_texts)
        tokens = sum(len(ids) for ids in model.preprocessor.tokenize_texts(texts))
        model.encode(texts, batch_size=args.batch_size, verbose=False)  # compiles
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.encode(texts, batch_size=args.batch_size, verbose=False)
            best = min(best, time.perf_counter() - start)
        rows.append((length, args.num_texts / best, tokens / best))
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


COMMANDS = {
    "search": _search,
    "embed": _embed,
    "evaluate": _evaluate,
    "bench": _bench,
    "convert": _convert,
}


@contextlib.contextmanager
def _warnings_as_one_line():
    """Python warnings as one `warning: message` line each, on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv=None):
    """Runs the command line; returns the exit status (0, or 1 on an error).

    Example:
    ```python
    from keras_egemma.cli import main
    main(["search", "How do I import a module?"])
    ```
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.backend and os.environ.get("KERAS_BACKEND") != args.backend:
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        return subprocess.call([sys.executable, "-m", "keras_egemma", *argv], env=env)
    try:
        # Results go to stdout, everything else (progress bars, library
        # output, warnings) to stderr, so `keras-egemma ... > results.txt`
        # holds only results.
        out = sys.stdout
        with contextlib.redirect_stdout(sys.stderr), _warnings_as_one_line():
            COMMANDS[args.command](args, out)
    except (ValueError, TypeError, OSError) as e:
        message = " ".join(str(e).split())  # one line, whatever the exception held
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
