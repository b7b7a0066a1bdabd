"""Quantization-aware training: the fake-quantized forward is the quantized
model's forward, gradients go straight through to the float weights, and QAT
keeps a finetuned model's quality under int4 better than post-training
quantization.

int4 (per-block and per-channel) weights are dequantized before a float
matmul in Keras, so the fake-quantized model equals the quantized one to
float rounding (asserted 1e-5). int8 layers also round their inputs per
token on the fly: layer by layer the two agree to float rounding (asserted),
but through the whole model a 1e-7 reassociation difference (Keras divides
the integer product by the scales, the fake quantizer multiplies dequantized
values) occasionally lands an activation on the other side of a rounding
step, and those steps compound: measured largest component difference
0.005 (int8) and 0.0015 (mixed) on unit embeddings of the tiny preset (float
to int8 is 0.0075); asserted: cosine >= 0.999.
"""

import random

import keras
import numpy as np
import pytest
from keras import ops

import keras_egemma as eg
from keras_egemma.quantization import fake_quantize_abs_max
from keras_egemma.quantization import fake_quantize_blocks
from keras_egemma.quantization.qat import _fake_quantize_weight
from keras_egemma.quantization.qat import _fake_quantized_call
from keras_egemma.quantization.weight_quantization import DEFAULT_BLOCK_SIZE
from keras_egemma.quantization.weight_quantization import quantization_plan

TEXTS = [
    "Which planet is known as the Red Planet?",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "How do I import a module in Python?",
]


def tiny():
    keras.utils.set_random_seed(0)
    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")


def embed(model, texts, length=16):
    batch = model.preprocessor(texts, sequence_length=length)
    return ops.convert_to_numpy(model(batch, training=False))


@pytest.mark.parametrize("mode", ["int8", "int4", "mixed", "mixed_per_channel"])
def test_fake_quantized_forward_is_the_quantized_forward(mode):
    model = tiny()
    float_embeddings = embed(model, TEXTS)
    model.quantize_aware(mode)
    fake = embed(model, TEXTS)
    model.quantize()  # the QAT recipe by default
    assert model.quantization["mode"] == mode and model.quantization_aware is None
    real = embed(model, TEXTS)
    assert np.abs(real - float_embeddings).max() > 1e-3  # quantization is visible
    if mode == "int4":
        np.testing.assert_allclose(fake, real, atol=1e-5)
    else:
        assert np.sum(fake * real, axis=-1).min() >= 0.999


def test_int8_layers_match_keras_layer_by_layer():
    """With identical inputs, each int8 layer kind (per-token input rounding
    included) agrees with Keras' int8 layer to float rounding."""
    model = tiny()
    rng = np.random.default_rng(0)
    seen = set()
    for layer, mode, _ in quantization_plan(model, "int8", 32):
        kind = (type(layer).__name__, getattr(layer, "equation", None))
        if kind in seen:
            continue
        seen.add(kind)
        if isinstance(layer, keras.layers.Embedding):
            x = rng.integers(0, layer.input_dim, (2, 5)).astype("int32")
        elif isinstance(layer, keras.layers.Dense):
            x = rng.normal(size=(2, 5, layer.kernel.shape[0])).astype("float32")
        else:
            inputs, kernel = layer.equation.split("->")[0].split(",")
            sizes = dict(zip(kernel, layer.kernel.shape), b=2, t=5, s=5)
            x = rng.normal(size=[sizes[a] for a in inputs]).astype("float32")
        fake = ops.convert_to_numpy(_fake_quantized_call(layer, mode, None)(x))
        layer.quantize(mode)
        real = ops.convert_to_numpy(layer(x))
        np.testing.assert_allclose(fake, real, atol=1e-5 * np.abs(real).max(), err_msg=kind)
    assert len(seen) >= 4


def numpy_abs_max(x, axis, value_range):
    scale = np.float32(value_range[1]) / (
        np.abs(x).max(axis=axis, keepdims=True) + np.float32(1e-7)
    )
    return np.clip(np.round(x * scale), *value_range) / scale


def test_fake_quantizers_against_numpy():
    x = np.random.default_rng(1).normal(size=(64, 6)).astype("float32")
    for value_range in ((-127, 127), (-8, 7)):
        np.testing.assert_allclose(
            ops.convert_to_numpy(fake_quantize_abs_max(x, 0, value_range)),
            numpy_abs_max(x, 0, value_range),
            rtol=1e-6,
        )
    blocks = x.reshape(2, 32, 6)
    low, high = blocks.min(1, keepdims=True), blocks.max(1, keepdims=True)
    scale = (high - low + np.float32(1e-7)) / np.float32(15)
    zero = np.clip(np.round(-low / scale) - 8, -8, 7)
    expected = ((np.clip(np.round(blocks / scale) + zero, -8, 7) - zero) * scale).reshape(64, 6)
    fake = ops.convert_to_numpy(fake_quantize_blocks(x, 32))
    np.testing.assert_allclose(fake, expected, rtol=1e-6, atol=1e-7)
    assert len(np.unique(fake[:32, 0])) <= 16  # 4 bits per block


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_gradients_go_straight_through_to_the_float_kernel(mode):
    """One SGD step through `fit`: the float kernel moves by the STE gradient
    `fq(x)^T dL/dy` (the rounding's true gradient would be zero)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 64)).astype("float32")
    target = rng.normal(size=(4, 3)).astype("float32")
    layer = keras.layers.Dense(3)
    net = keras.Sequential([keras.Input((64,)), layer])
    kernel = ops.convert_to_numpy(layer.kernel)
    layer.__dict__["call"] = _fake_quantized_call(layer, mode, 32 if mode == "int4" else None)
    # Loss per example: <target, y>, averaged over the batch: dL/dy = target / 4.
    net.compile(keras.optimizers.SGD(1.0), loss=lambda t, y: ops.sum(t * y, axis=-1))
    net.fit(x, target, batch_size=4, epochs=1, verbose=0)
    if mode == "int8":
        x_seen = numpy_abs_max(x, -1, (-127, 127))  # inputs are rounded in the forward
    else:
        x_seen = x
    gradient = x_seen.T @ (target / 4)
    np.testing.assert_allclose(
        kernel - ops.convert_to_numpy(layer.kernel), gradient, rtol=1e-4, atol=1e-5
    )


def test_bad_arguments_and_switching_off():
    model = tiny()
    with pytest.raises(ValueError, match="Unknown quantization mode"):
        model.quantize_aware("int3")
    with pytest.raises(ValueError, match="does not divide"):
        model.quantize_aware("int4", block_size=48)
    float_embeddings = embed(model, TEXTS)
    model.quantize_aware("int4")
    assert np.abs(embed(model, TEXTS) - float_embeddings).max() > 1e-3
    model.quantize_aware(None)
    np.testing.assert_allclose(embed(model, TEXTS), float_embeddings, atol=1e-6)
    model.quantize("int8")
    with pytest.raises(ValueError, match="already quantized"):
        model.quantize_aware("int4")


SYLLABLES = ["ka", "lo", "mi", "tu", "ren", "sa", "vo", "pi", "dex", "qu", "zor", "fa"]
JOBS = ["baker", "pilot", "nurse", "farmer", "judge", "poet", "chemist", "sailor"]


def retrieval_task(n, seed, exclude=()):
    """(query, positive) pairs matched by a made-up name both contain; names
    in `exclude` are not used (a held-out set shares no name with training)."""
    rng = random.Random(seed)
    names = set()
    while len(names) < n:
        name = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
        if name not in exclude:
            names.add(name)
    return [
        {"query": f"Where does {name} work?", "positive": f"{name} is a {rng.choice(JOBS)}."}
        for name in sorted(names)
    ]


def task_loss(model, examples):
    """In-corpus retrieval cross-entropy (temperature 0.05) over the task."""
    q = embed(model, [e["query"] for e in examples])
    d = embed(model, [e["positive"] for e in examples])
    logits = q @ d.T / 0.05
    logits -= logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits)))


GAP_MODE = "mixed_per_channel"


def on_grid_tiny(mode=GAP_MODE):
    """The tiny preset with every weight `quantize(mode)` quantizes moved to
    its quantization grid, as after loading a quantized checkpoint back to
    float (or after an earlier QAT run): quantizing it changes nothing."""
    model = tiny()
    for layer, layer_mode, config in quantization_plan(model, mode, DEFAULT_BLOCK_SIZE):
        block_size = None if config is None else config.block_size
        weight = layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel
        weight.assign(
            _fake_quantize_weight(layer, weight, layer_mode, None if block_size == -1 else block_size)
        )
    return model


def finetune(examples, qat_mode=None):
    """16 Adam steps (64 pairs, batch 16, 4 epochs, no shuffling) from the
    on-grid tiny preset, fake-quantized with `qat_mode` if given."""
    model = on_grid_tiny()
    if qat_mode is not None:
        model.quantize_aware(qat_mode)
    model.compile(optimizer=keras.optimizers.Adam(3e-4), mrl_dims=None)
    model.fit(
        examples,
        batch_size=16,
        epochs=4,
        sequence_length=16,
        query_task=None,
        document_task=None,
        shuffle=False,
        verbose=0,
    )
    return model


def test_on_grid_weights_are_unchanged_by_quantization():
    model = on_grid_tiny()
    before = embed(model, TEXTS)
    model.quantize(GAP_MODE)
    # int8 attention also rounds its inputs per token, so not bit-identical.
    assert np.sum(before * embed(model, TEXTS), axis=-1).min() >= 0.999


def test_qat_narrows_the_gap_to_float_compared_with_ptq():
    """Finetuning a model whose weights already sit on the quantization grid
    (a quantized checkpoint loaded back to float, or the output of an earlier
    QAT run), then quantizing again. Post-training quantization (PTQ) rounds
    every update smaller than half a grid step back to where it started, so
    much of the finetuning is lost; QAT accumulates the updates in the float
    weights until they cross a grid point, so the deployed model keeps them.

    Both arms: the tiny preset on the "mixed_per_channel" grid (per-channel int4, int8
    attention), the same 16 Adam steps (lr 3e-4) on 64 (query, positive)
    pairs; the metric is the in-corpus retrieval loss on 64 held-out pairs
    whose names never occur in training. gap = loss(quantized) -
    loss(float-finetuned). Measured (held-out loss before, float, PTQ, QAT ->
    PTQ gap, QAT gap): JAX 4.45, 1.33, 2.61, 2.05 -> 1.29, 0.72; TensorFlow
    4.45, 1.33, 2.54, 1.97 -> 1.21, 0.64; PyTorch 4.45, 1.33, 2.61, 2.06 ->
    1.29, 0.73. Over four training/held-out draws (JAX) the PTQ gap was
    0.70-1.29 and the QAT gap 0.29-0.57 times it.

    Starting from the preset's own weights instead (off the grid, same 16
    steps), PTQ hurts this small model little: PTQ gap 0.11-0.37 over three
    draws (JAX), and with learning rates 1e-4 or 2e-3 it even took either
    sign; int4 rounding then acts as a random perturbation the finetuned
    model mostly tolerates, too small and noisy for a robust test.
    """
    train = retrieval_task(64, seed=1)
    held_out = retrieval_task(64, seed=2, exclude={e["query"].split()[2] for e in train})
    before = task_loss(on_grid_tiny(), held_out)

    ptq = finetune(train)
    float_loss = task_loss(ptq, held_out)
    ptq.quantize(GAP_MODE)
    ptq_loss = task_loss(ptq, held_out)

    qat = finetune(train, GAP_MODE)
    qat.quantize()
    assert qat.quantization["mode"] == GAP_MODE
    qat_loss = task_loss(qat, held_out)

    losses = dict(before=before, float=float_loss, ptq=ptq_loss, qat=qat_loss)
    assert float_loss < before - 2.0, losses  # finetuning learned the task
    ptq_gap, qat_gap = ptq_loss - float_loss, qat_loss - float_loss
    assert ptq_gap > 0.5, losses  # PTQ loses much of the finetuning
    # QAT closes at least a quarter of PTQ's gap (a QAT that did nothing would
    # give the PTQ model: equal gaps).
    assert qat_gap < 0.75 * ptq_gap, losses
