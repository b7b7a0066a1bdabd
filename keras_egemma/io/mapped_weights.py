"""`.weights.h5` files laid out and read so that JAX adopts their tensors
without copying, and maps the largest from the file
(`zero_copy_weight_files`).

JAX on CPU takes a numpy array as a variable's buffer without copying it
only when the array starts on a 64-byte boundary. numpy's large arrays start
16 bytes into their memory, so a tensor read as Keras reads it is copied
once more on its way into a variable: for the published model's embedding
table, a second full-size copy at the load's peak, and, as JAX copies
asynchronously, a pile of pending source arrays besides.

- Reading: each tensor is read into an aligned array, which the variable
  adopts. A tensor of `MAPPED_MIN_BYTES` or more that the file stores
  contiguously at an aligned offset is not read at all: it is
  memory-mapped, read-only, and becomes the variable's buffer, so only the
  pages a lookup touches (the embedding rows of the batch's tokens) are ever
  in memory, and the kernel may drop them again under pressure.
- Writing: HDF5 places tensors of `MAPPED_MIN_BYTES` or more on page
  boundaries.

A mapped file must not be overwritten in place while a model uses it
(`save_to_preset` writes a new file and renames it, which is safe).
"""

import contextlib
import pathlib

import h5py
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


def _mappable_offset(dataset):
    """The file offset of a dataset stored whole and aligned, else None."""
    if dataset.chunks is not None or dataset.nbytes < MAPPED_MIN_BYTES:
        return None
    if dataset.file.driver != "sec2" or dataset.file.userblock_size:
        return None
    offset = dataset.id.get_offset()
    return offset if offset is not None and offset % ALIGNMENT == 0 else None


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
        offset = _mappable_offset(dataset)
        if offset is not None:
            return np.memmap(
                dataset.file.filename, dtype=dataset.dtype, mode="r", offset=offset,
                shape=dataset.shape,
            )
        value = aligned_empty(dataset.shape, dataset.dtype)
        dataset.read_direct(value)
        return value


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
