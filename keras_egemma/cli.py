"""Command line: `keras-egemma` / `python -m keras_egemma`.

    keras-egemma embed "first text" "second text" --task query
    keras-egemma embed --file corpus.txt --task document --dim 256 --output emb.npy
    keras-egemma convert ./embeddinggemma-300m ./my_preset

Keras reads its backend at import (and importing this package imports
Keras), so `--backend` re-runs the command in a fresh interpreter with
`KERAS_BACKEND` set.
"""

import argparse
import json
import os
import subprocess
import sys

DEFAULT_PRESET = "embeddinggemma_tiny"


def _parser():
    parser = argparse.ArgumentParser(prog="keras-egemma", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["jax", "tensorflow", "torch"],
                        help="Keras backend (default: $KERAS_BACKEND or Keras' default).")
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="Embed texts; print a summary or write a file.")
    embed.add_argument("texts", nargs="*", help="Texts to embed.")
    embed.add_argument("--file", help="A UTF-8 text file with one text per line.")
    embed.add_argument("--preset", default=DEFAULT_PRESET,
                       help=f"Preset name, folder or handle (default: {DEFAULT_PRESET}).")
    embed.add_argument("--task", default=None,
                       help="Prompt name: query, document, STS, Clustering, ... (default: none).")
    embed.add_argument("--dim", type=int, default=None, help="Matryoshka size.")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.add_argument("--output", help="Write embeddings to .npy or .jsonl.")

    convert = commands.add_parser(
        "convert", help="Convert a checkpoint (Hugging Face or KerasHub) into a preset folder."
    )
    convert.add_argument("source", help="Checkpoint folder, name or handle.")
    convert.add_argument("destination", help="Preset folder to write.")
    return parser


def _read_texts(args):
    texts = list(args.texts)
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise ValueError("Nothing to embed: pass texts as arguments or --file with text lines.")
    return texts


def _write(path, texts, embeddings):
    import numpy as np

    tmp = path + ".partial"
    if path.endswith(".npy"):
        with open(tmp, "wb") as f:
            np.save(f, embeddings)
    elif path.endswith(".jsonl"):
        with open(tmp, "w", encoding="utf-8") as f:
            for text, vector in zip(texts, embeddings):
                f.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
    else:
        raise ValueError(f"--output must end in .npy or .jsonl, got {path!r}.")
    os.replace(tmp, path)


def _embed(args):
    import numpy as np

    import keras_egemma as eg

    texts = _read_texts(args)
    model = eg.EmbeddingGemma.from_preset(args.preset)
    embeddings = model.encode(texts, task=args.task, dim=args.dim, batch_size=args.batch_size)
    if args.output:
        _write(args.output, texts, embeddings)
        print(f"Wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.output}")
        return
    print(f"{len(texts)} embeddings of size {embeddings.shape[1]} "
          f"(preset {args.preset}, task {args.task})")
    shown = min(len(texts), 8)
    similarity = model.similarity(embeddings[:shown], embeddings[:shown])
    with np.printoptions(precision=3, suppress=True):
        for i in range(shown):
            print(f"  [{i}] {texts[i][:60]!r}: first values {embeddings[i, :4]}")
        print("cosine similarity:")
        print(similarity)


def _convert(args):
    import keras_egemma as eg

    model = eg.EmbeddingGemma.from_preset(args.source)
    model.save_to_preset(args.destination)
    print(f"Saved {args.source} as a keras_egemma preset in {args.destination}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.backend and os.environ.get("KERAS_BACKEND") != args.backend:
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        return subprocess.call([sys.executable, "-m", "keras_egemma", *argv], env=env)
    try:
        {"embed": _embed, "convert": _convert}[args.command](args)
    except (ValueError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
