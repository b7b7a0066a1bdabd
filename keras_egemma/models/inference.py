"""The compiled forward pass behind `EmbeddingGemma.encode`.

`encode` pads batches to a few (rows, length) buckets, so a function
compiled once per bucket serves every later batch of that shape. Shapes are
kept static on purpose: the sliding layers pick their band form from the
sequence length when they are traced (`attention_kernels.band_is_cheaper`).

- JAX: `jax.jit` of the model's stateless call (XLA), compiled ahead of
  the first run of each shape; the variables are passed in on each call, so
  a model that keeps training stays current. On CPU it is compiled with
  `CPU_COMPILER_OPTIONS` (less memory, faster). Compiled programs are kept
  across processes (`compilation_cache`).
- TensorFlow: a `tf.function` per shape (no shape relaxation, which would
  hide the length), compiled with XLA (`jit_compile=True`).
- PyTorch: eager under `torch.inference_mode()`: no autograd bookkeeping.
"""

import ctypes

import keras
import numpy as np

from keras_egemma.models.compilation_cache import persistent_compilation

# XLA:CPU options for the forward pass: the memory-optimised scheduler stops
# it from materialising every transposed attention kernel at once, and XLA's
# own elementwise fusions (rather than YNNPACK's) skip the broadcast operands
# those take, and run faster (docs/performance.md).
CPU_COMPILER_OPTIONS = {
    "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
    "xla_cpu_experimental_ynn_fusion_type": "",
}


def release_freed_memory():
    """Hands memory that the C allocator keeps free back to the operating
    system (glibc's `malloc_trim`); does nothing on other C libraries.

    XLA compiles on the calling thread and runs on its own thread pool, whose
    allocations come from other malloc arenas: what the compiler frees would
    stay in the process, and the first run's buffers come on top of it.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _jax_forward(model):
    import jax

    def call(trainable, non_trainable, batch):
        return model.stateless_call(trainable, non_trainable, batch, training=False)[0]

    options = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    forward = jax.jit(call, compiler_options=options)
    # Compiled ahead of the first run of each shape, so that what the
    # compiler freed is returned before the run allocates its buffers.
    executables = {}

    def run(batch):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        shape = tuple(sorted((name, value.shape, str(value.dtype)) for name, value in batch.items()))
        executable = executables.get(shape)
        if executable is None:
            lowered = forward.lower(trainable, non_trainable, batch)
            with persistent_compilation():
                executable = lowered.compile()
            release_freed_memory()
            executables[shape] = executable
        return np.asarray(executable(trainable, non_trainable, batch))

    return run


def _tensorflow_forward(model):
    import tensorflow as tf

    # No AutoGraph: the model's Python needs no conversion to graph control
    # flow, and converting it was a quarter of the trace.
    forward = tf.function(
        lambda batch: model(batch, training=False), jit_compile=True, autograph=False
    )

    def run(batch):
        return forward({k: tf.constant(v) for k, v in batch.items()}).numpy()

    return run


def _torch_forward(model):
    import torch

    def run(batch):
        with torch.inference_mode():
            return keras.ops.convert_to_numpy(model(batch, training=False))

    return run


def inference_function(model):
    """`batch -> numpy embeddings` for `model`, compiled for the backend.

    Built once per model and cached on it.

    Args:
        model: a Keras model taking `{"token_ids", "padding_mask"}` int32
            arrays `(batch, length)`.

    Returns:
        A callable taking that dict of numpy arrays and returning a numpy
        array `(batch, embedding_dim)`.

    Example:
    ```python
    forward = inference_function(model)
    embeddings = forward({"token_ids": ids, "padding_mask": mask})
    ```
    """
    cached = model.__dict__.get("_inference_function")
    if cached is None:
        build = {"jax": _jax_forward, "tensorflow": _tensorflow_forward,
                 "torch": _torch_forward}[keras.backend.backend()]
        cached = build(model)
        # Set through __dict__: Keras tracks attributes set on a layer.
        model.__dict__["_inference_function"] = cached
    return cached
