"""Keeps `import keras_egemma` (and so every CLI command) free of native log lines.

TensorFlow, which KerasHub and TensorFlow Text import on every Keras backend,
logs from C++ while it loads: oneDNN and CUDA notices, CPU feature hints,
`failed call to cuInit` where there is no GPU, each after absl's "All log
messages before absl::InitializeLog()" line. Since TensorFlow 2.21 these go
through absl directly and `TF_CPP_MIN_LOG_LEVEL` no longer reaches them, so
TensorFlow is imported here with file descriptor 2 captured, and only those
log lines are dropped: anything else written meanwhile is passed on.

Imported first by `keras_egemma/__init__.py`, before Keras; the command line
also loads models inside `native_logs_dropped` (tensorflow-text's SentencePiece
logs when a tokenizer loads). Environment variables are defaults only: a value
the user set wins.
"""

import contextlib
import importlib.util
import os
import re
import sys
import tempfile

# TensorFlow before 2.21 (and XLA's older logging) read this one.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# A line of a native (C++) log record: absl / glog (`I0000 00:00:1796... 3861
# port.cc:153] ...`) or TensorFlow's older format (`2024-01-01 12:00:00.000000:
# I tensorflow/...cc:44] ...`); absl's line about InitializeLog; and the second
# line of TensorFlow's CPU feature hint; SentencePiece's own format
# (`normalizer.cc(51) LOG(INFO) ...`, tensorflow-text's copy, when a tokenizer loads).
_NATIVE_LOG_LINE = re.compile(
    rb"[IWE]\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] [^ \]]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow"
    rb"|\w+\.cc\(\d+\) LOG\((?:INFO|WARNING)\) "
)


def _flush_stderr():
    if sys.stderr is not None:
        with contextlib.suppress(Exception):
            sys.stderr.flush()


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data) :]


def _writes_to_descriptor_2(stream):
    try:
        return stream.fileno() == 2
    except Exception:  # noqa: BLE001 - no descriptor (notebook, pytest's capsys)
        return False


@contextlib.contextmanager
def native_logs_dropped():
    """Drops native log lines written to file descriptor 2 inside the block.

    What native code writes to descriptor 2 is held in a temporary file and
    written out at the end of the block, less the lines `_NATIVE_LOG_LINE`
    matches. Python's own `sys.stderr` (progress bars, warnings, tracebacks)
    stays live: where it writes to descriptor 2, it is pointed at a copy of the
    real one for the block.
    """
    _flush_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (e.g. a windowed interpreter)
        yield
        return
    python_stderr = sys.stderr
    live = None
    if _writes_to_descriptor_2(python_stderr):
        live = open(
            os.dup(saved),
            "w",
            buffering=1,
            encoding=getattr(python_stderr, "encoding", None),
            errors="backslashreplace",
        )
        sys.stderr = live
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            if live is not None:
                if sys.stderr is live:
                    sys.stderr = python_stderr
                live.close()
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().splitlines(keepends=True)
                if not _NATIVE_LOG_LINE.match(line)
            ]
            _write_all(2, b"".join(kept))


def _quiet_absl():
    """absl's Python logging prints "WARNING: Logging before flag parsing goes
    to stderr." before the first record of a program that never parses absl
    flags (every program but absl apps); the records themselves still show."""
    try:
        from absl import logging as absl_logging
    except ImportError:
        return
    if hasattr(absl_logging, "_warn_preinit_stderr"):
        absl_logging._warn_preinit_stderr = False


if "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is not None:
    with native_logs_dropped():
        import tensorflow  # noqa: F401
_quiet_absl()
