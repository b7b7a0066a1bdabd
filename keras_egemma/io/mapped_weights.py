"""`.weights.h5` files laid out and read so that every backend adopts their
tensors without copying, and maps the largest from the file
(`zero_copy_weight_files`).

JAX on CPU (and TensorFlow, through DLPack: `_keras_compat.first_assign_gives_value`)
takes a numpy array as a variable's buffer without copying it only when the
array starts on a 64-byte boundary. numpy's large arrays start
16 bytes into their memory, so a tensor read as Keras reads it is copied
once more on its way into a variable: for the published model's embedding
table, a second full-size copy at the load's peak, and, as JAX copies
asynchronously, a pile of pending source arrays besides.

- Reading: each tensor is read into an aligned array, which the variable
  adopts. A tensor of `MAPPED_MIN_BYTES` or more that the file stores
  contiguously (for JAX and TensorFlow at an aligned offset) is not read at all
  where the backend adopts a mapped array (`file_map_mode`): it is memory-mapped and becomes
  the variable's buffer, so only the pages a lookup touches (the embedding
  rows of the batch's tokens) are ever in memory, and the kernel may drop
  them again under pressure. JAX maps read-only (its arrays are
  immutable); PyTorch and TensorFlow map copy-on-write, so training writes
  private pages and never the file.
- Writing: HDF5 places tensors of `MAPPED_MIN_BYTES` or more on page
  boundaries.

A mapped file must not be overwritten in place while a model uses it
(`save_to_preset` writes a new file and renames it, which is safe).
"""

import contextlib
import pathlib

import h5py
import keras
import numpy as np

from keras_egemma import _keras_compat

ALIGNMENT = 64
PAGE = 4096
MAPPED_MIN_BYTES = 16 * 2**20


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on a 64-byte
    boundary.

    Example:
    ```python
    x = aligned_empty((262144, 768), "float32")
    assert x.ctypes.data % 64 == 0
    ```
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + count * dtype.itemsize].view(dtype).reshape(shape)


def file_map_mode():
    """How large tensors are mapped from a file as variables' buffers: "r"
    (read-only) on JAX, "c" (copy-on-write) on PyTorch and TensorFlow, or
    None where the variable copies them anyway (JAX under a distribution)."""
    backend = keras.backend.backend()
    if backend == "jax":
        return "r" if keras.distribution.distribution() is None else None
    return "c"


def maps_tensor(mode, offset, nbytes):
    """Whether a tensor of `nbytes` at file `offset` is mapped rather than
    read, under `file_map_mode()`'s `mode`: a large one, at a 64-byte aligned
    offset for JAX and TensorFlow (which copy a buffer at another address);
    PyTorch takes one at any address."""
    aligned = offset % ALIGNMENT == 0 or keras.backend.backend() == "torch"
    return bool(mode) and nbytes >= MAPPED_MIN_BYTES and aligned


def adoptable(array):
    """`array` in the form the backend adopts without a copy: on PyTorch a
    tensor sharing its memory (Keras' PyTorch backend copies any numpy array
    it is given), elsewhere the array itself."""
    torch_takes = array.flags.writeable and array.dtype.kind in "fiub"
    if keras.backend.backend() != "torch" or not torch_takes:
        return array
    import torch

    return torch.from_numpy(array)


def _mappable_offset(dataset, mode):
    """The file offset of a dataset stored whole that `maps_tensor`, else None."""
    if dataset.chunks is not None or dataset.file.driver != "sec2" or dataset.file.userblock_size:
        return None
    offset = dataset.id.get_offset()
    return offset if offset is not None and maps_tensor(mode, offset, dataset.nbytes) else None


class _ZeroCopyH5IOStore(_keras_compat.H5IOStore):
    """Keras' `H5IOStore`: aligned (or mapped) reads, page-aligned writes."""

    def _get_h5_file(self, path_or_io, mode=None):
        writing_a_file = (mode or self.mode) == "w" and isinstance(path_or_io, pathlib.Path)
        if not writing_a_file or self.archive:
            return super()._get_h5_file(path_or_io, mode)
        return h5py.File(
            path_or_io, mode="w", alignment_threshold=MAPPED_MIN_BYTES, alignment_interval=PAGE
        )

    def __getitem__(self, key):
        dataset = _keras_compat.h5_dataset(self, key)
        if "dtype" in dataset.attrs or dataset.dtype.kind not in "fiub" or dataset.size == 0:
            # bfloat16 (stored with a dtype attribute), strings, empty: as Keras reads them.
            return super().__getitem__(key)
        mode = file_map_mode()
        offset = _mappable_offset(dataset, mode)
        if offset is not None:
            return adoptable(np.memmap(
                dataset.file.filename, dtype=dataset.dtype, mode=mode, offset=offset,
                shape=dataset.shape,
            ))
        value = aligned_empty(dataset.shape, dataset.dtype)
        dataset.read_direct(value)
        return adoptable(value)


@contextlib.contextmanager
def zero_copy_weight_files():
    """Within the block, Keras' `load_weights` of a `.weights.h5` file hands
    out aligned arrays, or read-only maps of the file for large tensors, and
    its `save_weights` places large tensors on page boundaries.

    Example:
    ```python
    with zero_copy_weight_files():
        model.load_weights("model.weights.h5")
    ```
    """
    with _keras_compat.weights_store(_ZeroCopyH5IOStore):
        yield
