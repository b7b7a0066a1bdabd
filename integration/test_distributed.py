"""Data-parallel training: 4 CPU devices of batch 8 train like 1 device of 32,
fully or with LoRA adapters, and EmbeddingGemma 2 (a tiny random checkpoint) fully.

JAX: `keras.distribution.DataParallel` over 4 host devices
(`--xla_force_host_platform_device_count=4`). TensorFlow:
`tf.distribute.MirroredStrategy` over 4 logical CPUs, with in-batch negatives
all-gathered. Each run is a fresh process (device counts are fixed at start).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

SCRIPT = """
import json, sys
import numpy as np
import keras
backend, mode, out, lora, preset, mrl_dims = sys.argv[1:7]
if backend == "tensorflow":
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 4)
    strategy = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(4)])
                if mode == "parallel" else tf.distribute.get_strategy())
else:
    import contextlib, jax
    assert len(jax.devices()) == 4
    if mode == "parallel":
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    strategy = None
import keras_egemma as eg
keras.utils.set_random_seed(0)
scope = strategy.scope() if strategy else contextlib.nullcontext()
with scope:
    model = eg.EmbeddingGemma.from_preset(preset)
    if lora == "lora":
        model.enable_lora(2)
    model.compile(optimizer=keras.optimizers.SGD(0.05), mrl_dims=json.loads(mrl_dims))
examples = [{"query": f"Where does person {i} work?",
             "positive": f"Person {i} is a baker in town {i % 5}.",
             "negative": f"Person {i + 1} is a pilot."} for i in range(64)]
history = model.fit(examples, batch_size=32, epochs=2, sequence_length=24, shuffle=False,
                    verbose=0)
probe = (model.backbone.transformer_layers[0].attention.query_dense.lora_kernel_b
         if lora == "lora" else model.projection_head.dense_layers[0].kernel)
np.save(out, keras.ops.convert_to_numpy(probe))
print(json.dumps(history.history))
"""


def run(backend, mode, tmp_path, lora="full", preset="embeddinggemma_tiny", mrl_dims=(128, 64)):
    out = tmp_path / f"{backend}_{mode}_{lora}.npy"
    env = {**os.environ, "KERAS_BACKEND": backend,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    args = [backend, mode, str(out), lora, str(preset), json.dumps(mrl_dims)]
    result = subprocess.run([sys.executable, "-c", SCRIPT, *args],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), np.load(out)


@pytest.mark.skipif(keras.backend.backend() not in ("jax", "tensorflow"),
                    reason="data parallel engines: JAX DataParallel, tf.distribute")
def test_four_devices_train_like_one(tmp_path):
    backend = keras.backend.backend()
    single_history, single_kernel = run(backend, "single", tmp_path)
    parallel_history, parallel_kernel = run(backend, "parallel", tmp_path)
    for key in ("loss", "nce", "spread_out"):
        np.testing.assert_allclose(parallel_history[key], single_history[key], atol=1e-5)
    np.testing.assert_allclose(parallel_kernel, single_kernel, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() not in ("jax", "tensorflow"),
                    reason="data parallel engines: JAX DataParallel, tf.distribute")
def test_lora_on_four_devices_trains_like_one(tmp_path):
    backend = keras.backend.backend()
    single_history, single_adapter = run(backend, "single", tmp_path, lora="lora")
    parallel_history, parallel_adapter = run(backend, "parallel", tmp_path, lora="lora")
    np.testing.assert_allclose(parallel_history["loss"], single_history["loss"], atol=1e-5)
    assert np.abs(single_adapter).max() > 1e-4   # the adapter trained
    np.testing.assert_allclose(parallel_adapter, single_adapter, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() not in ("jax", "tensorflow"),
                    reason="data parallel engines: JAX DataParallel, tf.distribute")
def test_embedding_gemma2_on_four_devices_trains_like_one(tmp_path, spm_path):
    import embedding_gemma2_checkpoints as e2

    backend = keras.backend.backend()
    folder = e2.build_embedding_gemma2_checkpoint(str(tmp_path / "eg2"), spm_path=spm_path)
    options = dict(preset=folder, mrl_dims=(24, 8))
    single_history, single_kernel = run(backend, "single", tmp_path, **options)
    parallel_history, parallel_kernel = run(backend, "parallel", tmp_path, **options)
    for key in ("loss", "nce", "spread_out"):
        np.testing.assert_allclose(parallel_history[key], single_history[key], atol=1e-5,
                                   rtol=3e-6)
    # The embedding projection moved, and alike on both.
    import keras_egemma as eg

    start = eg.EmbeddingGemma.from_preset(folder).projection_head.dense_layers[0].kernel
    assert np.abs(single_kernel - keras.ops.convert_to_numpy(start)).max() > 1e-4
    np.testing.assert_allclose(parallel_kernel, single_kernel, atol=1e-5)
