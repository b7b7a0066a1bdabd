"""Quiet by default: importing keras_egemma and the command line print no native
(TensorFlow, CUDA, absl, SentencePiece) log lines on the backend of this pass, and
progress bars go to stderr, never into the results on stdout.

Each check runs in a fresh interpreter: the lines come from native code as
TensorFlow loads, once per process. The environment is the test's own, less the
variables keras_egemma sets itself, so the defaults are what is tested.
"""

import os
import re
import subprocess
import sys

import keras

from keras_egemma import _quiet

BACKEND = keras.backend.backend()
# conftest.py sets these for the whole test run; a user's shell would not.
OURS = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")


def run(args, **env):
    """Runs `args` in this test run's environment less `OURS`, plus `env`."""
    environment = {k: v for k, v in os.environ.items() if k not in OURS}
    environment.update(KERAS_BACKEND=BACKEND, **env)
    return subprocess.run(args, capture_output=True, text=True, env=environment)


def keras_egemma_command():
    """The `keras-egemma` console script installed beside this interpreter."""
    path = os.path.join(os.path.dirname(sys.executable), "keras-egemma")
    assert os.path.exists(path), f"{path}: install the package (pip install -e .)"
    return path


def test_import_prints_nothing():
    result = run([sys.executable, "-c", "import keras_egemma"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""
    assert result.stderr == ""


def test_help_has_an_empty_stderr():
    for command in (
        [keras_egemma_command(), "--help"],
        [sys.executable, "-m", "keras_egemma", "--help"],
    ):
        result = run(command)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith("usage: keras-egemma"), result.stdout
        assert result.stderr == "", (command, result.stderr)


def test_a_value_the_user_set_is_kept():
    code = "import os, keras_egemma; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    assert run([sys.executable, "-c", code], TF_CPP_MIN_LOG_LEVEL="1").stdout == "1\n"


def test_progress_bar_goes_to_stderr_only(tmp_path):
    """`embed` prints its results on stdout, its progress bar on stderr, nothing native."""
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"text number {i}\n" for i in range(5)))
    result = run(
        [
            keras_egemma_command(),
            "embed",
            "--file",
            str(texts),
            "--batch-size",
            "2",
            "--preset",
            "embeddinggemma_tiny",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("5 embeddings of size "), result.stdout
    assert "5/5" not in result.stdout and "text/s" not in result.stdout, result.stdout
    # The progress on a pipe: plain lines (5 texts in 3 batches), no redraws.
    bar = result.stderr.splitlines()
    assert any("5/5" in line for line in bar) and "\r" not in result.stderr, result.stderr
    # Nothing else: SentencePiece logs a line as the tokenizer loads, TensorFlow as it loads.
    assert all(re.match(r"encode: \d/5 texts ", line) for line in bar), result.stderr


def test_encode_progress_bar_goes_to_stderr(tiny_model, capsys):
    """In Python too: `encode`'s bar is on stderr, stdout stays the caller's."""
    tiny_model.encode([f"text number {i}" for i in range(5)], batch_size=2, verbose=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "5/5" in captured.err, captured.err


def test_native_log_lines_are_dropped_and_the_rest_is_kept(capfd):
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796197779.742205    3861 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1796198214.888413    8125 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
        "2024-01-01 12:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom "
        "operations are on.",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags.",
        "normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty. use identity normalization.",
        "a message of the program's own",
        "F0000 00:00:1796197779.742205    3861 check.cc:1] fatal lines are kept",
    ]
    with _quiet.native_logs_dropped():
        os.write(2, ("\n".join(lines) + "\n").encode())
        print("python's stderr stays live", file=sys.stderr)
    err = capfd.readouterr().err
    assert err.splitlines() == [
        "python's stderr stays live",
        "a message of the program's own",
        "F0000 00:00:1796197779.742205    3861 check.cc:1] fatal lines are kept",
    ], err
