"""The command line with EmbeddingGemma 2: `--preset` a local folder (the tiny random
checkpoint of embedding_gemma2_checkpoints) embeds like sentence-transformers and searches
with the model's cosines; `--preset embeddinggemma2` downloads from Hugging Face, and says
what to do in one line when it cannot."""

import re

import embedding_gemma2_checkpoints as e2
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma.cli import main
from keras_egemma.io import preset_loading

TEXTS = ["Which planet is known as the Red Planet? Mars has a thin atmosphere.",
         "Venus is often called Earth's twin."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, spm_path):
    return e2.build_embedding_gemma2_checkpoint(
        str(tmp_path_factory.mktemp("eg2_cli")), spm_path=spm_path
    )


def test_embed_with_a_local_folder_matches_sentence_transformers(checkpoint, tmp_path):
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS), encoding="utf-8")
    out = tmp_path / "e.npy"
    args = ["embed", "--task", "query", "--file", str(tmp_path / "texts.txt"),
            "--output", str(out), "--preset", checkpoint]
    assert main(args) == 0
    expected = e2.reference_embeddings(checkpoint, TEXTS, prompt_name="query")
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5, rtol=0)


def test_search_with_a_local_folder_ranks_by_the_models_cosines(checkpoint, tmp_path, capsys):
    (tmp_path / "a.txt").write_text("\n\n".join(TEXTS), encoding="utf-8")
    args = ["search", "red planet", "--corpus", str(tmp_path), "--top-k", "2",
            "--preset", checkpoint]
    assert main(args) == 0
    rows = re.findall(r"^\s+\d\. (-?[\d.]+)\s+a\.txt #(\d)$", capsys.readouterr().out, flags=re.M)
    model = eg.EmbeddingGemma.from_preset(checkpoint)
    expected = model.similarity(model.encode_query("red planet"), model.encode_document(TEXTS))[0]
    assert len(rows) == 2
    for score, number in rows:
        assert float(score) == pytest.approx(expected[int(number) - 1], abs=1e-3)
    assert [int(n) for _, n in rows] == list(np.argsort(-expected) + 1)


def test_registered_name_downloads_from_hugging_face(checkpoint, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(preset_loading, "download_hf", lambda repo: asked.append(repo) or checkpoint)
    assert main(["embed", "--task", "query", *TEXTS, "--preset", "embeddinggemma2"]) == 0
    assert asked == ["google/embeddinggemma-2"]
    assert "2 embeddings of size 24" in capsys.readouterr().out


def test_registered_name_offline_says_what_to_do_in_one_line(monkeypatch, capsys):
    def offline(repo):
        raise OSError("Name or service not known")

    monkeypatch.setattr(preset_loading, "download_hf", offline)
    assert main(["embed", "hello", "--preset", "embeddinggemma2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Could not download preset 'embeddinggemma2'" in err
    assert "hf://google/embeddinggemma-2: OSError: Name or service not known" in err
    assert "--preset ./embeddinggemma-2" in err and "Gemma terms" not in err
