"""`encode` over many texts keeps memory flat (JAX backend).

The issue's soak (100k short texts, 1k texts of 2048 tokens) takes too long
for CI; this guards it at a small size with the bundled tiny preset. A round
embeds 1,500 short texts (47 batches) and 32 texts of 512 tokens (the
preset's longest). Two warm-up rounds compile every batch shape and let the
allocator settle; resident memory (after `gc.collect()`, without which
garbage cycles make it swing by +-100 MB between rounds) after each of three
more rounds must stay within a few MB of where it was. A leak of one batch's
activations, outputs or compiled function per batch would add more than that
every round.
"""

import gc
import warnings

import keras
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the memory soak guards the JAX backend"
)

ROUNDS = 3
# Measured: 1204 -> 1211 MB over the warm-up, then +1.7 MB over the measured
# rounds; a per-batch leak of 80 KB over their ~150 batches would exceed this.
MAX_GROWTH_MB = 12


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_encode_memory_is_flat(tiny_model):
    short = [f"short text {i} about topic {i % 97}: {'word ' * (i % 9)}" for i in range(1500)]
    long = [f"document {i} " + "the quick brown fox jumps over the lazy dog " * 80
            for i in range(32)]

    def one_round():
        tiny_model.encode(short, batch_size=32, verbose=False)
        tiny_model.encode(long, batch_size=32, verbose=False)
        gc.collect()
        return rss_mb()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long texts' truncation warning
        warm = [one_round(), one_round()]
        after = [one_round() for _ in range(ROUNDS)]
    print(f"RSS (MB) after warm-up rounds {warm}, after measured rounds {after}")
    assert max(after) - warm[-1] < MAX_GROWTH_MB, (warm, after)
