"""Every guide runs top to bottom (on the bundled preset, once, in the JAX pass)."""

import os
import subprocess
import sys

import keras
import pytest

GUIDES = os.path.join(os.path.dirname(__file__), "..", "guides")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs once, in the JAX pass")
@pytest.mark.parametrize(
    "guide", ["quickstart.py", "semantic_search.py", "finetune.py", "quantize_and_export.py"]
)
def test_guide_runs(guide, tmp_path):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "EGEMMA_EPOCHS": "1",
        "EGEMMA_FIGURES": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, os.path.join(GUIDES, guide)],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if guide == "semantic_search.py":
        # The bundled model finds the import statement for this question.
        top = result.stdout.split("How do I import a module?")[1].splitlines()[1:4]
        assert any("[import]" in line for line in top), top
        assert (tmp_path / "semantic_search.png").exists()
    if guide == "finetune.py":
        assert "soup: nDCG@10" in result.stdout
        assert (tmp_path / "finetune.png").exists()
    if guide == "quantize_and_export.py":
        assert "format     weights MB memory MiB  sent/s" in result.stdout
        for variant in ("float32", "bfloat16", "int8", "mixed", "int4"):
            assert f"\n{variant} " in result.stdout, variant
        assert "int8 SavedModel: min cosine to encode" in result.stdout
        assert (tmp_path / "quantize_and_export.png").exists()
        assert (tmp_path / "quantize_and_export.json").exists()
