"""GGUF parity: llama.cpp runs the file `save_to_gguf` writes and gives our embeddings.

Builds the published configuration (24 layers, 768 wide, window 512, Dense heads
768 -> 3072 -> 768) with random weights and the test suite's 1024-token
SentencePiece vocabulary (no download; `--vocab-size 262144` for the published
table), loads it here, writes f32, f16 and q8_0 GGUF files, and embeds 20 texts
(eight of 600 to 1,900 tokens, so the 512 window slides) with the query /
document prompts, here and in llama.cpp (llama-cpp-python, built from its PyPI
source by `benchmarks/setup_llama_cpp.sh` into its own virtual environment, run
in a subprocess; its build has AVX2 and no AMX, see that script for why).
Prints, per file type, the token-id agreement and the cosine between the two
embeddings of each text (issue 19's bounds: >= 0.9999 for f32 / f16, >= 0.99 for
q8_0), and writes JSON with llama.cpp's CPU feature line.

    bash benchmarks/setup_llama_cpp.sh ~/.cache/keras_egemma/llama-cpp
    KERAS_BACKEND=jax python benchmarks/gguf_parity.py \
        --llama-python ~/.cache/keras_egemma/llama-cpp/bin/python \
        [--checkpoint DIR] [--vocab-size 1024] [--output results/gguf_parity.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pydoc_data.topics import topics

import numpy as np
from provenance import provenance
from provenance import write_result

HERE = os.path.dirname(os.path.abspath(__file__))
BOUNDS = {"f32": 0.9999, "f16": 0.9999, "q8_0": 0.99}

# Run by the llama-cpp-python interpreter: embeds each text of argv[2] (JSON) with
# the GGUF file argv[1]; prints {"ids": [...], "embeddings": [...]} as JSON.
LLAMA_WORKER = """
import json, sys
import llama_cpp
texts = json.load(open(sys.argv[2]))
llm = llama_cpp.Llama(model_path=sys.argv[1], embedding=True, n_ctx=2048, n_batch=2048,
                      n_ubatch=2048, n_threads=2, verbose=False)
out = {"version": llama_cpp.__version__, "ids": [], "embeddings": [],
       "system_info": llama_cpp.llama_print_system_info().decode().strip()}
for text in texts:
    out["ids"].append(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
    out["embeddings"].append(llm.embed(text, normalize=True))
print(json.dumps(out))
"""


def texts_to_embed(model):
    """12 short texts and 8 of 600-1,900 tokens, from Python's own documentation."""
    words = " ".join(topics[name] for name in sorted(topics)).split()
    short = [" ".join(words[40 * k : 40 * k + 6 + 3 * k]) for k in range(12)]
    long, start = [], 5000
    for target in (700, 750, 800, 950, 1100, 1300, 1600, 1900):
        text, count = "", 0
        while True:
            candidate = " ".join(words[start : start + count + 10])
            if len(model.preprocessor.tokenize_texts([candidate])[0]) > target:
                break
            text, count = candidate, count + 10
        long.append(text)
        start += count + 10
    return short + long


def build_checkpoint(path, vocab_size):
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import reference_checkpoints as rc

    return rc.build_sentence_transformers_checkpoint(
        path, num_layers=24, hidden_size=768, intermediate_size=1152, num_attention_heads=3,
        num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
        projection_intermediate_dim=3072, embedding_dim=768, vocab_size=vocab_size,
    )


def llama_embeddings(python, gguf_path, prompted, tmp):
    texts_path = os.path.join(tmp, "texts.json")
    with open(texts_path, "w", encoding="utf-8") as f:
        json.dump(prompted, f)
    out = subprocess.run([python, "-c", LLAMA_WORKER, gguf_path, texts_path],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"llama-cpp-python exited with {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-python", required=True,
                        help="the python of the environment setup_llama_cpp.sh built")
    parser.add_argument("--checkpoint", help="a Hugging Face / preset folder (built when omitted)")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--output", default=os.path.join("results", "gguf_parity.json"))
    args = parser.parse_args()

    import keras

    import keras_egemma as eg

    with tempfile.TemporaryDirectory() as tmp:
        source = args.checkpoint or build_checkpoint(os.path.join(tmp, "ckpt"), args.vocab_size)
        model = eg.EmbeddingGemma.from_preset(source)
        model.preprocessor.sequence_length = 2048
        texts = texts_to_embed(model)
        tasks = ["query" if i % 2 else "document" for i in range(len(texts))]
        prompted = [model.preprocessor.format_texts([t], task=k)[0] for t, k in zip(texts, tasks)]
        ours_ids = model.preprocessor.tokenize_texts(prompted)
        lengths = [len(ids) for ids in ours_ids]
        print(f"{len(texts)} texts of {min(lengths)}-{max(lengths)} tokens "
              f"({sum(n >= 600 for n in lengths)} of 600+), {keras.backend.backend()}")
        # llama.cpp runs before the long texts are embedded here, so the two
        # processes never hold their activations at the same time.
        files, outputs = {}, {}
        for file_type in BOUNDS:
            files[file_type] = os.path.join(tmp, f"model-{file_type}.gguf")
            model.save_to_gguf(files[file_type], file_type=file_type)
            try:
                outputs[file_type] = llama_embeddings(args.llama_python, files[file_type],
                                                      prompted, tmp)
            except RuntimeError as e:  # reported per file type; the others still run
                outputs[file_type] = {"error": str(e).splitlines()[0]}
        ours = np.stack([model.encode(t, task=k, verbose=False) for t, k in zip(texts, tasks)])
        rows = {}
        for file_type, bound in BOUNDS.items():
            theirs = outputs[file_type]
            if "error" in theirs:
                rows[file_type] = {"bound": bound, "error": theirs["error"], "passes": False}
                continue
            vectors = np.asarray(theirs["embeddings"], np.float32)
            cosine = np.sum(ours * vectors, axis=1) / (
                np.linalg.norm(ours, axis=1) * np.linalg.norm(vectors, axis=1))
            same_ids = sum(a == list(b) for a, b in zip(ours_ids, theirs["ids"]))
            rows[file_type] = {
                "bound": bound, "min_cosine": float(cosine.min()),
                "mean_cosine": float(cosine.mean()),
                "min_cosine_600_plus": float(min(c for c, n in zip(cosine, lengths) if n >= 600)),
                "max_abs_diff": float(np.abs(ours - vectors).max()),
                "same_token_ids": f"{same_ids}/{len(texts)}",
                "file_bytes": os.path.getsize(files[file_type]),
                "llama_cpp_python": theirs["version"],
                "llama_cpp_system_info": theirs["system_info"],
                "passes": bool(cosine.min() >= bound),
            }
    print(f"{'type':>5} {'min cos':>9} {'mean cos':>9} {'min cos 600+':>12} {'max |diff|':>10} "
          f"{'ids':>6} {'bound':>7}")
    for file_type, r in rows.items():
        if "error" in r:
            print(f"{file_type:>5} {r['error']}")
            continue
        print(f"{file_type:>5} {r['min_cosine']:9.6f} {r['mean_cosine']:9.6f} "
              f"{r['min_cosine_600_plus']:12.6f} {r['max_abs_diff']:10.2e} "
              f"{r['same_token_ids']:>6} {r['bound']:7} {'ok' if r['passes'] else 'FAIL'}")
    result = {**provenance(env=("KERAS_BACKEND",)), "texts": len(texts),
              "token_lengths": lengths, "results": rows}
    write_result(result, args.output)
    return 0 if all(r["passes"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
