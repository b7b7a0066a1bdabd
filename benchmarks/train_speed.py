"""Training speed and memory: keras_egemma `fit` per backend vs sentence-transformers.

Builds sentence-transformers checkpoints of the EmbeddingGemma layout with
random weights (no download; the test suite's builder): the published
configuration (24 layers, 768 wide, 262,144-token table) and a small one (6
layers, 288 wide). Loads the same weights here and, one process per run (so
each peak RSS is its own), trains on (query, positive) batches with in-batch
negatives:

- keras_egemma's `fit` with its default objective (NCE + spread-out over the
  MRL sizes), AdamW, on each Keras backend; optionally with LoRA rank 8 or
  mixed bfloat16 (`--variants`);
- the reference: a plain PyTorch loop over sentence-transformers with
  `MultipleNegativesRankingLoss`, tokenising inside the step as its trainer
  does, AdamW, `torch.set_num_threads(2)`.

A step is the time between two consecutive batch ends, so keras_egemma's
steps include fetching the batch from its pipeline. Reports per run the first
step (from the start of training: compilation included), the median step
after the first two, tokens/s at the median and the process's peak RSS;
prints a table and writes JSON (with command, date and machine).

    python benchmarks/train_speed.py [--shapes published:8x64,published:2x1024,small:16x128]
        [--backends jax,tensorflow,torch] [--variants full,lora8,mixed_bfloat16]
        [--steps 5] [--output results/train_speed.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from provenance import provenance
from provenance import write_result

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

CONFIGS = {
    "published": dict(num_layers=24, hidden_size=768, intermediate_size=1152, head_dim=256,
                      query_pre_attn_scalar=256, sliding_window=512, num_attention_heads=3,
                      num_key_value_heads=1, projection_intermediate_dim=3072,
                      vocab_size=262_144),
    "small": dict(num_layers=6, hidden_size=288, intermediate_size=432, head_dim=96,
                  query_pre_attn_scalar=96, sliding_window=64, num_attention_heads=3,
                  num_key_value_heads=1),
}
VARIANTS = ("full", "lora8", "mixed_bfloat16")

# Texts of `length` words, each at least one token, so every text is cut to
# `length` tokens by both libraries.
TEXTS = """
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
def text(i, n):
    return " ".join(words[(i * 7 + j) % len(words)] + str(j % 10) for j in range(n))
def pairs(batch, length, steps):
    return [(text(i, length), text(i + 1, length)) for i in range(batch * steps)]
def peak_rss_bytes():
    # VmHWM starts afresh at exec; ru_maxrss would keep the benchmark's own.
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
"""

KERAS_RUN = TEXTS + """
import json, sys, time
import keras, numpy as np
ckpt, variant = sys.argv[1], sys.argv[2]
batch, length, steps = map(int, sys.argv[3:6])
if variant == "mixed_bfloat16":
    keras.config.set_dtype_policy("mixed_bfloat16")
import keras_egemma as eg
model = eg.EmbeddingGemma.from_preset(ckpt)
if variant == "lora8":
    model.enable_lora(8)
model.compile(optimizer=keras.optimizers.AdamW(1e-5))
examples = [{"query": q, "positive": p} for q, p in pairs(batch, length, steps)]
ends = []
class Clock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None): ends.append(time.perf_counter())
    def on_train_batch_end(self, batch, logs=None): ends.append(time.perf_counter())
model.fit(examples, batch_size=batch, epochs=1, sequence_length=length, shuffle=False,
          verbose=0, callbacks=[Clock()])
print(json.dumps({"steps_s": np.diff(ends).tolist(), "peak_rss_bytes": peak_rss_bytes()}))
"""

REFERENCE_RUN = TEXTS + """
import json, sys, time
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.losses import MultipleNegativesRankingLoss
torch.set_num_threads(2)
ckpt = sys.argv[1]
batch, length, steps = map(int, sys.argv[3:6])
model = SentenceTransformer(ckpt, device="cpu")
model.max_seq_length = length
loss_fn = MultipleNegativesRankingLoss(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
data = pairs(batch, length, steps)
model.train()
times = []
for step in range(steps):
    chunk = data[step * batch:(step + 1) * batch]
    start = time.perf_counter()
    features = [model.tokenize([q for q, _ in chunk]), model.tokenize([p for _, p in chunk])]
    loss = loss_fn(features, labels=None)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    times.append(time.perf_counter() - start)
print(json.dumps({"steps_s": times, "peak_rss_bytes": peak_rss_bytes()}))
"""


def run(script, backend, ckpt, variant, batch, length, steps):
    env = {**os.environ, "KERAS_BACKEND": backend or "torch"}
    out = subprocess.run(
        [sys.executable, "-c", script, ckpt, variant, str(batch), str(length), str(steps)],
        env=env, capture_output=True, text=True,
    )
    if out.returncode:
        raise RuntimeError(f"{backend or 'reference'} {variant} run failed:\n{out.stderr[-3000:]}")
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    times = measured["steps_s"]
    steady = sorted(times[2:])
    median = steady[len(steady) // 2] if len(steady) % 2 else sum(
        steady[len(steady) // 2 - 1:len(steady) // 2 + 1]) / 2
    return {
        "first_step_s": times[0],
        "median_step_s": median,
        "tokens_per_s": 2 * batch * length / median,
        "peak_rss_bytes": measured["peak_rss_bytes"],
        "steps_s": times,
    }


def parse_shape(text):
    config, size = text.split(":")
    batch, length = size.split("x")
    if config not in CONFIGS:
        raise SystemExit(f"unknown configuration {config!r}; one of {sorted(CONFIGS)}")
    return config, int(batch), int(length)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="published:8x64,published:2x1024,small:16x128",
                        help="configuration:pairsxtokens, comma-separated")
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--variants", default="full", help=f"comma-separated of {VARIANTS}")
    parser.add_argument("--steps", type=int, default=5, help="steps per run (median after 2)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--output", default=os.path.join("results", "train_speed.json"))
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3 (the median is taken after the first two)")
    shapes = [parse_shape(s) for s in args.shapes.split(",")]
    variants = args.variants.split(",")
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; one of {VARIANTS}")

    import reference_checkpoints as rc

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = {}
        for config, batch, length in shapes:
            if config not in checkpoints:
                print(f"building the {config} checkpoint", file=sys.stderr, flush=True)
                checkpoints[config] = rc.build_sentence_transformers_checkpoint(
                    os.path.join(tmp, config), **CONFIGS[config])
            runs = [("keras_egemma", backend, variant) for variant in variants
                    for backend in args.backends.split(",")]
            if not args.no_reference:
                runs.append(("sentence-transformers", None, "full"))
            for library, backend, variant in runs:
                print(f"{config} {batch}x{length}: {library} {backend or 'torch'} {variant}",
                      file=sys.stderr, flush=True)
                script = KERAS_RUN if backend else REFERENCE_RUN
                result = run(script, backend, checkpoints[config], variant, batch, length,
                             args.steps)
                rows.append({"config": config, "batch": batch, "length": length,
                             "library": library, "backend": backend or "torch",
                             "variant": variant, **result})
                print(f"  median {result['median_step_s']:.2f} s, first "
                      f"{result['first_step_s']:.1f} s, peak "
                      f"{result['peak_rss_bytes'] / 2**30:.1f} GiB", file=sys.stderr, flush=True)

    for row in rows:
        reference = next((r for r in rows if r["library"] == "sentence-transformers"
                          and (r["config"], r["batch"], r["length"]) ==
                          (row["config"], row["batch"], row["length"])), None)
        row["speedup_vs_reference"] = (None if reference is None
                                       else reference["median_step_s"] / row["median_step_s"])
    result = {
        **provenance(),  # command, date (UTC), machine, commit
        "config": {"steps": args.steps, "configurations": {k: CONFIGS[k] for k in
                                                            {s[0] for s in shapes}}},
        "runs": rows,
    }
    print(f"{'shape':24s} {'run':34s} {'median s':>9s} {'first s':>8s} {'tokens/s':>9s} "
          f"{'peak GiB':>9s} {'vs ref':>7s}")
    for r in rows:
        name = f"{r['library']} {r['backend']} {r['variant']}"
        speedup = "" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.2f}x"
        print(f"{r['config'] + ' ' + str(r['batch']) + 'x' + str(r['length']):24s} {name:34s} "
              f"{r['median_step_s']:9.2f} {r['first_step_s']:8.1f} {r['tokens_per_s']:9.0f} "
              f"{r['peak_rss_bytes'] / 2**30:9.2f} {speedup:>7s}")
    write_result(result, args.output)


if __name__ == "__main__":
    main()
