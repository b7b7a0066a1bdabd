"""Compiled forward passes kept across processes (JAX's persistent cache).

XLA compiles `encode`'s forward pass once per batch shape, which for the
published model takes seconds, and a new process (every `keras-egemma`
command) compiled it again. On JAX the compiled program is kept on disk in
JAX's own persistent compilation cache, in `cache_folder()`, and the next
process loads it instead of compiling. JAX's cache key covers the program,
the compiler options, the device and the JAX version, so a changed model or
release compiles anew; each processor has its own folder (`machine_name`).
JAX writes only programs that took over
`jax_persistent_cache_min_compile_time_secs` (1 s by default) to compile.

Only the forward pass is compiled with this folder: JAX's cache folder is set
around that compile and its cache reset after, so nothing else the process
compiles is written there. Where the user configured JAX's cache
(`jax_compilation_cache_dir`) or turned it off (`jax_enable_compilation_cache`),
theirs is left to apply as it is. A folder that cannot be created or written
means no cache (logged at debug level, as is an entry JAX fails to write);
an entry JAX cannot read is compiled anew (JAX's own check) and reported as
a warning naming the folder.
"""

import contextlib
import functools
import hashlib
import logging
import os
import platform
import threading
import warnings

_logger = logging.getLogger(__name__)

# Where the library keeps caches; empty turns them off.
CACHE_DIR_VARIABLE = "KERAS_EGEMMA_CACHE_DIR"

# JAX's configuration is global: one compile through our folder at a time.
_LOCK = threading.Lock()

_UNREADABLE = "Error reading persistent compilation cache entry"
_UNWRITABLE = "Error writing persistent compilation cache entry"


def cache_root():
    """`$KERAS_EGEMMA_CACHE_DIR`, else `$XDG_CACHE_HOME/keras_egemma`, else
    `~/.cache/keras_egemma`; None when the variable is set empty."""
    root = os.environ.get(CACHE_DIR_VARIABLE)
    if root is not None:
        return root or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras_egemma")


@functools.lru_cache(maxsize=None)
def machine_name():
    """A short hash of this machine's processor and its instruction set.

    XLA compiles for the host's instruction set, and JAX's cache key does
    not cover it (its CPU platform version is just "cpu"): a cache folder
    in a home directory shared by machines with other processors would hand
    them programs they cannot run. So each processor gets its own folder.
    """
    description = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block describes them all
                if line.split(":")[0].strip() in ("vendor_id", "model name", "flags",
                                                  "Features", "CPU implementer", "CPU part"):
                    description.append(line.strip())
    except OSError:
        pass
    return hashlib.sha256("\n".join(description).encode()).hexdigest()[:16]


def cache_folder():
    """The folder for compiled JAX programs on this machine's processor
    (`machine_name()`), created if missing (with the usual permissions), or
    None when there is none to write to."""
    root = cache_root()
    if root is None:
        return None
    folder = os.path.join(root, "jax_compilation_cache", machine_name())
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        _logger.debug("No compilation cache: cannot create %s (%s)", folder, e)
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        _logger.debug("No compilation cache: %s is not writable", folder)
        return None
    return folder


def _user_configured(jax):
    return (jax.config.jax_compilation_cache_dir is not None
            or not jax.config.jax_enable_compilation_cache)


@contextlib.contextmanager
def persistent_compilation():
    """Within the block, what JAX compiles goes through the persistent
    cache in `cache_folder()` (see the module docstring).

    Example:
    ```python
    with persistent_compilation():
        executable = jax.jit(f).lower(x).compile()
    ```
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if _user_configured(jax):
        yield
        return
    folder = cache_folder()
    if folder is None:
        yield
        return
    with _LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jax.config.update("jax_compilation_cache_dir", folder)
        try:
            yield
        finally:
            jax.config.update("jax_compilation_cache_dir", None)
            # JAX keeps the cache it opened: dropped, so that later compiles
            # (the user's) do not write to this folder.
            compilation_cache.reset_cache()
    for warning in caught:
        if _UNWRITABLE in str(warning.message):
            _logger.debug("Compiled program not cached in %s: %s", folder, warning.message)
        elif _UNREADABLE in str(warning.message):
            warnings.warn(
                f"A compiled program in {folder} could not be read ({warning.message}); "
                "it was compiled anew. Delete that folder to clear the cache.",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
