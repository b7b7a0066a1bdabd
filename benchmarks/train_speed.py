"""Training speed: keras_egemma `fit` per backend vs sentence-transformers.

Builds a sentence-transformers checkpoint of the EmbeddingGemma layout with
random weights (no download; the test-suite builder), loads the same weights
here, and times training steps on (query, positive) batches with in-batch
negatives: keras_egemma's default objective (NCE + spread-out under MRL) on
each Keras backend, and sentence-transformers' `MultipleNegativesRankingLoss`
in a plain PyTorch loop (the work its trainer does per step). Prints a table
and writes JSON.

    python benchmarks/train_speed.py [--layers 6] [--hidden 288] [--batch 16]
        [--length 128] [--steps 10] [--output results/train_speed.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from provenance import provenance

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

KERAS_SCRIPT = """
import json, sys, time
import keras, numpy as np
import keras_egemma as eg
ckpt, batch, length, steps = sys.argv[1], *map(int, sys.argv[2:5])
model = eg.EmbeddingGemma.from_preset(ckpt)
model.compile(optimizer=keras.optimizers.Adam(1e-5))
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
def text(i, n):
    return " ".join(words[(i * 7 + j) % len(words)] + str(j % 10) for j in range(n))
examples = [{"query": text(i, length), "positive": text(i + 1, length)}
            for i in range(batch * (steps + 2))]
times = []
class Clock(keras.callbacks.Callback):
    def on_train_batch_begin(self, b, logs=None): self.t = time.perf_counter()
    def on_train_batch_end(self, b, logs=None): times.append(time.perf_counter() - self.t)
model.fit(examples, batch_size=batch, epochs=1, sequence_length=length, shuffle=False,
          verbose=0, callbacks=[Clock()])
steady = times[2:]
print(json.dumps({"seconds_per_step": float(np.median(steady))}))
"""


def sentence_transformers_speed(ckpt, batch, length, steps):
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(ckpt, device="cpu")
    model.max_seq_length = length
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()

    def text(i, n):
        return " ".join(words[(i * 7 + j) % len(words)] + str(j % 10) for j in range(n))

    model.train()
    times = []
    for step in range(steps + 2):
        queries = [text(step * batch + i, length) for i in range(batch)]
        positives = [text(step * batch + i + 1, length) for i in range(batch)]
        start = time.perf_counter()
        features = [model.tokenize(queries), model.tokenize(positives)]
        loss = loss_fn(features, labels=None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=288, help="a multiple of 3")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--output", default=os.path.join("results", "train_speed.json"))
    args = parser.parse_args()

    import reference_checkpoints as rc

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = rc.build_sentence_transformers_checkpoint(
            os.path.join(tmp, "ckpt"), num_layers=args.layers, hidden_size=args.hidden,
            intermediate_size=args.hidden * 3 // 2, head_dim=args.hidden // 3,
            query_pre_attn_scalar=args.hidden // 3, sliding_window=64,
            num_attention_heads=3, num_key_value_heads=1,
        )
        rows = {}
        for backend in ("jax", "tensorflow", "torch"):
            out = subprocess.run(
                [sys.executable, "-c", KERAS_SCRIPT, ckpt, str(args.batch), str(args.length),
                 str(args.steps)],
                env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True,
            )
            if out.returncode:
                raise RuntimeError(f"{backend} run failed:\n{out.stderr[-2000:]}")
            rows[f"keras_egemma ({backend})"] = json.loads(out.stdout.strip().splitlines()[-1])[
                "seconds_per_step"]
        rows["sentence-transformers MNRL (torch)"] = sentence_transformers_speed(
            ckpt, args.batch, args.length, args.steps)

    tokens = 2 * args.batch * args.length
    result = {
        **provenance(),  # command, date (UTC), machine, commit
        "config": vars(args),
        "results": {name: {"steps_per_s": 1 / s, "tokens_per_s": tokens / s}
                    for name, s in rows.items()},
    }
    print(f"batch {args.batch} x 2 texts x {args.length} tokens, {args.layers} layers, "
          f"width {args.hidden}")
    print(f"{'':40s} {'steps/s':>10s} {'tokens/s':>10s}")
    for name, r in result["results"].items():
        print(f"{name:40s} {r['steps_per_s']:10.2f} {r['tokens_per_s']:10.0f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
