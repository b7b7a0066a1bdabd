"""Reading `.weights.h5` tensors into 64-byte-aligned numpy arrays.

JAX on CPU adopts a numpy array as a variable's buffer without copying it
only when the array starts on a 64-byte boundary. numpy's large arrays
start 16 bytes into their memory map, so every tensor Keras reads from a
weights file was copied once more on its way into a variable: for the
published model's 0.75 GiB embedding table a second full-size copy at the
load's peak, and, because JAX copies asynchronously, a pile of pending
source arrays besides (the load peaked at 1.7 GiB above the process for
1.15 GiB of weights). Read into aligned arrays, the file's values become the
variables' buffers and loading peaks at the size of the weights.
"""

import contextlib

import numpy as np
from keras.src.saving import saving_lib

ALIGNMENT = 64


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


class _AlignedH5IOStore(saving_lib.H5IOStore):
    """Keras' `H5IOStore`, handing out aligned arrays for plain tensors."""

    def __getitem__(self, key):
        dataset = saving_lib.safe_get_h5_dataset(self._h5_entry_group, key)
        if "dtype" in dataset.attrs or dataset.dtype.kind not in "fiub" or dataset.size == 0:
            # bfloat16 (stored with a dtype attribute), strings, empty: as Keras reads them.
            return super().__getitem__(key)
        value = aligned_empty(dataset.shape, dataset.dtype)
        dataset.read_direct(value)
        return value


@contextlib.contextmanager
def aligned_weight_reads():
    """Within the block, Keras' `load_weights` of a `.weights.h5` file reads
    each tensor into a 64-byte-aligned array.

    Example:
    ```python
    with aligned_weight_reads():
        model.load_weights("model.weights.h5")
    ```
    """
    original = saving_lib.H5IOStore
    saving_lib.H5IOStore = _AlignedH5IOStore
    try:
        yield
    finally:
        saving_lib.H5IOStore = original

