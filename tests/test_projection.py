"""`layers.projection.project`: an `EinsumDense` on the fastest CPU matmul gives the
layer's own values (numpy einsum as the reference) on every backend, and on PyTorch,
where it is computed by oneDNN, the same gradients."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_egemma.layers import projection
from keras_egemma.layers.projection import matmul_plan
from keras_egemma.layers.projection import project

# The encoder's equations: query, key/value, attention output, feed-forward.
EQUATIONS = {
    "btd,ndh->btnh": ((2, 5, 8), (None, 3, 4)),
    "bsd,kdh->bskh": ((2, 5, 8), (None, 1, 4)),
    "btnh,nhd->btd": ((2, 5, 3, 4), (None, 8)),
    "btd,df->btf": ((2, 5, 8), (None, 6)),
}


def _layer(equation, input_shape, output_shape):
    layer = keras.layers.EinsumDense(equation, output_shape=output_shape)
    layer.build(input_shape)
    rng = np.random.default_rng(0)
    layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    return layer


def _gradients(layer, x, weights):
    """d(sum(project(layer, x) * weights))/d(x, kernel), by torch's autograd."""
    import torch

    kernel = layer.kernel.value
    kernel.grad = None
    x = torch.tensor(x, requires_grad=True)
    (project(layer, x) * torch.as_tensor(weights)).sum().backward()
    return x.grad.numpy(), kernel.grad.numpy().copy()


@pytest.mark.parametrize("equation", sorted(EQUATIONS))
def test_project_matches_einsum_and_its_gradient(equation):
    input_shape, output_shape = EQUATIONS[equation]
    layer = _layer(equation, input_shape, output_shape)
    rng = np.random.default_rng(1)
    x = rng.normal(size=input_shape).astype("float32")
    kernel = ops.convert_to_numpy(layer.kernel)
    expected = np.einsum(equation, x, kernel)
    weights = rng.normal(size=expected.shape).astype("float32")
    # d(sum(out * weights))/d(kernel), from the equation by numpy.
    x_labels, kernel_labels = equation.split("->")[0].split(",")
    output_labels = equation.split("->")[1]
    expected_kernel_grad = np.einsum(f"{x_labels},{output_labels}->{kernel_labels}", x, weights)
    expected_x_grad = np.einsum(f"{output_labels},{kernel_labels}->{x_labels}", weights, kernel)

    out = project(layer, ops.convert_to_tensor(x))
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected, rtol=1e-5, atol=1e-5)
    # Elsewhere `project` is the layer's own call, and its gradient Keras'.
    if keras.backend.backend() == "torch":
        x_grad, kernel_grad = _gradients(layer, x, weights)
        np.testing.assert_allclose(x_grad, expected_x_grad, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(kernel_grad, expected_kernel_grad, rtol=1e-5, atol=1e-5)


def test_project_takes_onednn_only_where_it_is_exact():
    layer = _layer("btd,df->btf", (2, 5, 8), (None, 6))
    x = ops.convert_to_tensor(np.ones((2, 5, 8), "float32"))
    on_torch = keras.backend.backend() == "torch" and projection._torch_has_onednn()
    assert projection._takes_onednn(layer, x) == on_torch
    # bfloat16 inputs, quantized layers and layers with a replaced call are the layer's own.
    assert not projection._takes_onednn(layer, ops.cast(x, "bfloat16"))
    layer.quantize("int8")
    assert not projection._takes_onednn(layer, x)
    np.testing.assert_allclose(
        ops.convert_to_numpy(project(layer, x)), ops.convert_to_numpy(layer(x))
    )


def test_project_with_lora_trains_the_adapters():
    layer = _layer("btd,df->btf", (2, 5, 8), (None, 6))
    layer.enable_lora(2)
    rng = np.random.default_rng(2)
    layer.lora_kernel_b.assign(rng.normal(size=layer.lora_kernel_b.shape).astype("float32"))
    x = ops.convert_to_tensor(rng.normal(size=(2, 5, 8)).astype("float32"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(project(layer, x)),
        np.einsum("btd,df->btf", ops.convert_to_numpy(x), ops.convert_to_numpy(layer.kernel)),
        rtol=1e-5, atol=1e-5,
    )
    if keras.backend.backend() == "torch":
        project(layer, x).sum().backward()
        assert layer.lora_kernel_a.value.grad is not None
        assert layer._kernel.value.grad is None


@pytest.mark.parametrize(
    "equation, plan",
    [
        ("btd,ndh->btnh", ("bt", "d", "nh", (1, 0, 2))),
        ("btnh,nhd->btd", ("bt", "nh", "d", (0, 1, 2))),
        ("btd,df->btf", ("bt", "d", "f", (0, 1))),
        ("btd,dnh->bnth", None),
        ("...d,df->...f", None),
    ],
)
def test_matmul_plan(equation, plan):
    assert matmul_plan(equation) == plan
