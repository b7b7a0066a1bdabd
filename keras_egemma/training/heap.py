"""Freed memory kept in the process heap while training (glibc, Linux).

glibc gives every large block (above its mmap threshold) back to the kernel
when it is freed, and trims the heap's top; the next step's tensors of the same
sizes then arrive as fresh pages that the kernel zero-fills one fault at a
time. PyTorch's and XLA's CPU allocators call malloc for every buffer, so a
training step spends about as long in those faults as in its matmuls
(TensorFlow pools its own CPU memory). While `fit` runs, large blocks come
from the heap and freed memory stays there for the next step; afterwards
glibc's limits are restored and the kept memory is handed back.
"""

import contextlib
import ctypes
import functools
import sys
import threading

# mallopt parameters and glibc's defaults for them (malloc/malloc.c).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
# mallopt takes a C int.
_KEPT_TRIM_THRESHOLD = 2**31 - 1

_lock = threading.Lock()
_active = 0


@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library, where it is glibc (mallopt's parameters are its own)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    return libc


@contextlib.contextmanager
def freed_memory_kept():
    """Within this context, freed memory stays in the heap for reuse.

    Process-wide and reentrant (nested or concurrent uses keep the setting
    until the last one ends). On other C libraries it changes nothing.

    Example:
    ```python
    with freed_memory_kept():
        model.fit(examples, batch_size=16)
    ```
    """
    global _active
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        if _active == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEPT_TRIM_THRESHOLD)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
