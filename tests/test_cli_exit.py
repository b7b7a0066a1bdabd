"""The `keras-egemma` command ends its process as soon as its work is done
(`cli.run`): the output is complete, exit handlers have run, and the exit
status is the command's."""

import os
import subprocess
import sys

import keras
import numpy as np

import keras_egemma as eg

SCRIPT = """
import atexit, sys
atexit.register(lambda: open({marker!r}, "w").write("ran"))
sys.argv = ["keras-egemma", "--preset", "embeddinggemma_tiny", "embed", "hello", "to you",
            "--output", {output!r}]
from keras_egemma.cli import run
run()
"""


def run_command(tmp_path, output):
    marker = tmp_path / "exit_handler_ran"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(marker=str(marker), output=str(output))],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
    )
    return result, marker


def test_command_output_exit_handlers_and_status(tmp_path):
    result, marker = run_command(tmp_path, tmp_path / "embeddings.npy")
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.read_text() == "ran"
    expected = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny").encode(["hello", "to you"])
    np.testing.assert_allclose(np.load(tmp_path / "embeddings.npy"), expected, atol=1e-6)


def test_run_exits_with_mains_status_after_the_handlers(monkeypatch):
    from keras_egemma import cli

    calls = []

    class Exited(Exception):
        pass

    def exit_now(status):
        calls.append(("exit", status))
        raise Exited

    monkeypatch.setattr(cli, "main", lambda: 3)
    monkeypatch.setattr(cli.atexit, "_run_exitfuncs", lambda: calls.append(("handlers",)))
    monkeypatch.setattr(cli.os, "_exit", exit_now)
    try:
        cli.run()
    except Exited:
        pass
    assert calls == [("handlers",), ("exit", 3)]
