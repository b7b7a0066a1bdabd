"""The encoder's projections, on each backend's fastest CPU matmul.

PyTorch computes a float32 matmul on the CPU with MKL, which on processors
other than Intel's takes a code path about half as fast as oneDNN's; oneDNN's
linear primitive, which PyTorch also ships, runs at the speed of the kernels
JAX (XLA) and TensorFlow (oneDNN) use. So on PyTorch, float32 on the CPU, a
plain `EinsumDense` projection is computed as oneDNN linears, forward and
backward. Every other case (JAX, TensorFlow, GPUs, bfloat16, quantized or
fake-quantized layers, tracing for export) is the layer's own call.
"""

import functools
import math

import keras

from keras_egemma import _keras_compat


@functools.lru_cache(maxsize=None)
def matmul_plan(equation):
    """How an `EinsumDense` equation reads as one `(M, K) @ (K, N)` product.

    Returns `(batch, summed, free, kernel_order)`: the labels of the input's
    leading axes, of the summed axes and of the kernel's output axes, and the
    kernel's axes in `summed + free` order. Returns `None` when the equation
    is not `batch summed, kernel -> batch free` with the summed axes last in
    the input and the free axes last in the output.

    Example: `"btd,ndh->btnh"` -> `("bt", "d", "nh", (1, 0, 2))`.
    """
    if "..." in equation or "->" not in equation:
        return None
    inputs, output = equation.split("->")
    if inputs.count(",") != 1:
        return None
    x_labels, kernel_labels = inputs.split(",")
    if any(len(set(labels)) != len(labels) for labels in (x_labels, kernel_labels, output)):
        return None
    batch = "".join(a for a in x_labels if a not in kernel_labels)
    summed = "".join(a for a in x_labels if a in kernel_labels and a not in output)
    free = "".join(a for a in kernel_labels if a not in x_labels)
    if (x_labels != batch + summed or output != batch + free or not summed
            or sorted(kernel_labels) != sorted(summed + free)):
        return None
    return batch, summed, free, tuple(kernel_labels.index(a) for a in summed + free)


@functools.lru_cache(maxsize=None)
def _onednn_matmul():
    import torch

    linear = torch.ops.mkldnn._linear_pointwise

    def product(a, b_transposed):
        # `a @ b` with `b` given as `(N, K)`, oneDNN's weight layout. oneDNN
        # reads a transposed (column-major) weight as it is, as fast as a
        # row-major one: copying it would cost each call a pass over the
        # weight, most of the time of a short batch.
        if not (b_transposed.is_contiguous() or b_transposed.t().is_contiguous()):
            b_transposed = b_transposed.contiguous()
        return linear(a.contiguous(), b_transposed, None, "none", [], "")

    class OneDNNMatmul(torch.autograd.Function):
        """`x @ w` for `x: (M, K)`, `w: (K, N)`, forward and backward on oneDNN."""

        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return product(x, w.t())

        @staticmethod
        def backward(ctx, grad):
            x, w = ctx.saved_tensors
            grad_x = product(grad, w) if ctx.needs_input_grad[0] else None
            grad_w = product(x.t(), grad.t()) if ctx.needs_input_grad[1] else None
            return grad_x, grad_w

    return OneDNNMatmul.apply


@functools.lru_cache(maxsize=None)
def _torch_has_onednn():
    import torch

    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_linear_pointwise"
    )


def _takes_onednn(layer, inputs):
    if keras.backend.backend() != "torch" or not _torch_has_onednn():
        return False
    import torch

    return (
        isinstance(inputs, torch.Tensor)
        and inputs.device.type == "cpu"
        and inputs.dtype == torch.float32
        and layer.built
        and layer.compute_dtype == "float32"
        and layer.variable_dtype == "float32"
        and layer.quantization_mode is None
        and layer.bias is None
        and layer.activation in (None, keras.activations.linear)
        and _keras_compat.instance_layer_call(layer) is None
        and matmul_plan(layer.equation) is not None
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    )


def project(layer, inputs):
    """`layer(inputs)` for a `keras.layers.EinsumDense`, on the fastest kernel.

    The same value as the layer's call (to float rounding) and the same
    gradients, LoRA included (its `kernel` is the merged one).

    Args:
        layer: a built `keras.layers.EinsumDense`.
        inputs: its input, e.g. `(batch, length, hidden)`.

    Returns:
        The layer's output, e.g. `(batch, length, heads, head_dim)`.

    Example:
    ```python
    dense = keras.layers.EinsumDense("btd,df->btf", output_shape=(None, 64))
    dense.build((None, None, 32))
    y = project(dense, np.ones((2, 10, 32), "float32"))  # (2, 10, 64)
    ```
    """
    if not _takes_onednn(layer, inputs):
        return layer(inputs)
    batch, summed, _, kernel_order = matmul_plan(layer.equation)
    kernel = keras.ops.convert_to_tensor(layer.kernel).permute(*kernel_order)
    summed_size = math.prod(inputs.shape[len(batch):])
    out = _onednn_matmul()(
        inputs.reshape(-1, summed_size), kernel.reshape(summed_size, -1)
    )
    return out.reshape(tuple(inputs.shape[: len(batch)]) + tuple(kernel.shape[len(summed):]))
