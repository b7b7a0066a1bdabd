"""Every guide runs top to bottom (on the bundled preset, once, in the JAX pass)."""

import os
import subprocess
import sys

import keras
import pytest

GUIDES = os.path.join(os.path.dirname(__file__), "..", "guides")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs once, in the JAX pass")
@pytest.mark.parametrize("guide", ["quickstart.py", "semantic_search.py", "finetune.py"])
def test_guide_runs(guide, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "EGEMMA_EPOCHS": "1",
           "EGEMMA_FIGURES": str(tmp_path)}
    result = subprocess.run([sys.executable, os.path.join(GUIDES, guide)], env=env,
                            capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    if guide == "semantic_search.py":
        # The bundled model finds the import statement for this question.
        top = result.stdout.split("How do I import a module?")[1].splitlines()[1:4]
        assert any("[import]" in line for line in top), top
        assert (tmp_path / "semantic_search.png").exists()
    if guide == "finetune.py":
        assert "soup: nDCG@10" in result.stdout
        assert (tmp_path / "finetune.png").exists()
