"""Every guide runs top to bottom as a notebook (on the bundled preset, once, in the JAX pass).

jupytext reads each guide (a percent-format .py) into a notebook and nbclient
runs it in a python3 (ipykernel) kernel, as Jupyter or Kaggle would: no
`__file__`, no command-line arguments. The EGEMMA_* variables keep it small.
"""

import os
import re

import jupytext
import keras
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

GUIDES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "guides")
CELL_TIMEOUT = 900  # seconds; a cell that runs longer fails the test


def run_notebook(path, cwd):
    """Runs the guide at `path` as a notebook in `cwd`; returns the executed notebook."""
    notebook = jupytext.read(path)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute()
    except CellExecutionError as e:
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the kernel's colours
        pytest.fail(f"{os.path.basename(path)} failed as a notebook:\n{message[-4000:]}")
    finally:
        nbformat.write(notebook, os.path.join(str(cwd), os.path.basename(path) + ".ipynb"))
    return notebook


def stdout_of(notebook):
    """What the notebook's code cells printed, in order (as a script's stdout)."""
    return "".join(
        output["text"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs once, in the JAX pass")
@pytest.mark.parametrize(
    "guide",
    ["quickstart.py", "semantic_search.py", "finetune.py", "finetune_lora.py",
     "quantize_and_export.py"],
)
def test_guide_runs_as_a_notebook(guide, tmp_path, monkeypatch):
    # The kernel inherits this environment.
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("EGEMMA_EPOCHS", "1")
    # Enough data for every cell to mean something, little enough for CI.
    monkeypatch.setenv("EGEMMA_TRAIN_EXAMPLES", "192")
    monkeypatch.setenv("EGEMMA_DOCUMENTS", "64")
    monkeypatch.setenv("EGEMMA_FIGURES", str(tmp_path))
    notebook = run_notebook(os.path.join(GUIDES, guide), cwd=tmp_path)
    stdout = stdout_of(notebook)
    if guide == "quickstart.py":
        assert "saved and reloaded" in stdout, stdout[-3000:]
    if guide == "semantic_search.py":
        # The bundled model finds the import statement for this question.
        top = stdout.split("How do I import a module?")[1].splitlines()[1:4]
        assert any("[import]" in line for line in top), top
        assert (tmp_path / "semantic_search.png").exists()
    if guide == "finetune.py":
        assert "soup: nDCG@10" in stdout
        assert (tmp_path / "finetune.png").exists()
    if guide == "finetune_lora.py":
        # On a CPU: the bundled model, LoRA and mixed precision, no distribution.
        assert "1 cpu device(s), preset embeddinggemma_mini, mixed_bfloat16: True" in stdout
        assert "adapters reloaded: max |difference| 0.0e+00" in stdout, stdout[-3000:]
        assert "merged preset reloaded: LoRA None, variables float32" in stdout
    if guide == "quantize_and_export.py":
        assert "format     weights MB memory MiB  sent/s" in stdout
        for variant in ("float32", "bfloat16", "int8", "mixed", "int4"):
            assert f"\n{variant} " in stdout, variant
        assert "int8 SavedModel: min cosine to encode" in stdout
        assert (tmp_path / "quantize_and_export.png").exists()
        assert (tmp_path / "quantize_and_export.json").exists()


def test_guides_folder_holds_the_offline_notebooks():
    """The guides are the five offline notebooks; none reads `__file__` (undefined in a kernel)."""
    guides = sorted(name for name in os.listdir(GUIDES) if name.endswith(".py"))
    assert guides == [
        "finetune.py",
        "finetune_lora.py",
        "quantize_and_export.py",
        "quickstart.py",
        "semantic_search.py",
    ]
    for name in guides:
        with open(os.path.join(GUIDES, name), encoding="utf-8") as f:
            source = f.read()
        assert "__file__" not in source, name
        assert source.startswith("# %% [markdown]\n"), f"{name}: first cell is not markdown"
