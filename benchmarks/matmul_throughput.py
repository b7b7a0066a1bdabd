"""Matrix-multiply throughput of each backend's CPU kernels at the encoder's shapes.

A training step of the small configuration is mostly the feed-forward and
projection matmuls, forward and backward; this times exactly those products
(float32, one process per backend, the machine's cores) with each framework's
own kernel: `jax.jit(a @ b)` (XLA:CPU), `torch.matmul` (oneDNN / MKL) and
`tf.linalg.matmul` (oneDNN), and reports GFLOP/s. It is the profile behind the
small-shape rows of `train_speed.py`.

    python benchmarks/matmul_throughput.py [--repeats 20] [--output results/matmul_throughput.json]
"""

import argparse
import json
import os
import subprocess
import sys

from provenance import provenance
from provenance import write_result

# (rows, inner, columns): tokens x hidden x intermediate and the backward's
# weight-gradient product, for the small (4,096 tokens per step) and the
# published (1,024 tokens at 8 pairs x 64) configurations.
SHAPES = {
    "small ffw forward": (4096, 288, 432),
    "small ffw weight gradient": (288, 4096, 432),
    "published ffw forward": (1024, 768, 1152),
    "published ffw weight gradient": (768, 1024, 1152),
}

RUN = """
import json, sys, time
import numpy as np
backend, repeats, shapes = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
if backend == "jax":
    import jax
    product = jax.jit(lambda a, b: a @ b)
    run = lambda a, b: product(a, b).block_until_ready()
    to = jax.numpy.asarray
elif backend == "torch":
    import torch
    run, to = torch.matmul, torch.from_numpy
else:
    import tensorflow as tf
    run = lambda a, b: tf.linalg.matmul(a, b).numpy()
    to = tf.constant
out = {}
for name, (m, k, n) in shapes.items():
    a = to(np.random.default_rng(0).normal(size=(m, k)).astype("float32"))
    b = to(np.random.default_rng(1).normal(size=(k, n)).astype("float32"))
    for _ in range(3):
        run(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(a, b)
        times.append(time.perf_counter() - start)
    out[name] = 2 * m * k * n / sorted(times)[len(times) // 2] / 1e9
print(json.dumps(out))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default=os.path.join("results", "matmul_throughput.json"))
    args = parser.parse_args()
    results = {}
    for backend in ("jax", "tensorflow", "torch"):
        out = subprocess.run([sys.executable, "-c", RUN, backend, str(args.repeats),
                              json.dumps(SHAPES)], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{backend} failed:\n{out.stderr[-2000:]}")
        results[backend] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'GFLOP/s':32s}" + "".join(f"{b:>12s}" for b in results))
    for name in SHAPES:
        print(f"{name:32s}" + "".join(f"{results[b][name]:12.1f}" for b in results))
    write_result({**provenance(), "shapes": SHAPES, "gflops": results}, args.output)


if __name__ == "__main__":
    main()
