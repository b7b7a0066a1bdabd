"""The command line, in-process (no --backend, so no re-exec)."""

import json

import numpy as np

from keras_egemma.cli import main


def test_embed_prints_summary(capsys):
    assert main(["embed", "--task", "query", "Which planet is red?", "Mars is red."]) == 0
    out = capsys.readouterr().out
    assert "2 embeddings of size 128" in out and "cosine similarity" in out


def test_embed_writes_npy_and_jsonl(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("first line\n\nsecond line\n", encoding="utf-8")
    npy = tmp_path / "e.npy"
    assert main(["embed", "--file", str(corpus), "--dim", "64", "--output", str(npy)]) == 0
    vectors = np.load(npy)
    assert vectors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    jsonl = tmp_path / "e.jsonl"
    assert main(["embed", "--file", str(corpus), "--output", str(jsonl)]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["first line", "second line"]
    assert len(rows[0]["embedding"]) == 128


def test_embed_errors_are_one_line_and_nonzero(tmp_path, capsys):
    assert main(["embed"]) == 1
    assert "Nothing to embed" in capsys.readouterr().err
    assert main(["embed", "x", "--dim", "500"]) == 1
    assert "Matryoshka `dim`" in capsys.readouterr().err
    assert main(["embed", "x", "--task", "nope"]) == 1
    assert "Unknown task 'nope'" in capsys.readouterr().err
    assert main(["embed", "--file", str(tmp_path / "missing.txt")]) == 1
    assert "No such file" in capsys.readouterr().err
    bad = tmp_path / "out.csv"
    assert main(["embed", "x", "--output", str(bad)]) == 1
    assert not bad.exists()


def test_convert_hugging_face_checkpoint(st_checkpoint, tmp_path, capsys):
    dest = tmp_path / "preset"
    assert main(["convert", st_checkpoint, str(dest)]) == 0
    assert (dest / "task.weights.h5").exists()
    assert main(["embed", "--preset", str(dest), "hello"]) == 0
    assert "1 embeddings of size 72" in capsys.readouterr().out
