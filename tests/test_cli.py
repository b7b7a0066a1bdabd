"""The command line, in-process (no --backend, so no re-exec)."""

import json
import re

import numpy as np
import pytest
from test_evaluation import write_dataset

import keras_egemma as eg
from keras_egemma.cli import main

TINY = ["--preset", "embeddinggemma_tiny"]


@pytest.fixture(scope="module")
def tiny():
    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")


def one_line_error(capsys, fragment):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err, err


def test_search_bundled_corpus_with_bundled_model(capsys):
    """The README's first command: sensible top results, no arguments but the query."""
    assert main(["search", "How do I import a module?", "--top-k", "3"]) == 0
    captured = capsys.readouterr()
    assert "Indexing 183 documents with embeddinggemma_mini" in captured.err
    results = re.findall(r"^\s+\d\. [\d.]+\s+(\S+) \(.*\n\s+(.*)$", captured.out, flags=re.M)
    assert len(results) == 3, captured.out
    # Every result is about modules, and the import statement is among them
    # (the teacher, all-MiniLM-L6-v2, ranks the same paragraphs first).
    assert all("module" in snippet.lower() for _, snippet in results), captured.out
    assert any('"import" statement' in snippet or title == "import" for title, snippet in results)


def test_search_folder_scores_are_the_models_cosines(tmp_path, capsys, tiny):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("Mars is the red planet.\n\nVenus is hot.\n")
    (tmp_path / "sub" / "b.md").write_text("Python lists are mutable.")
    (tmp_path / ".hidden").write_bytes(b"\x00\x01")  # hidden files are skipped
    assert main(["search", "red planet", "--corpus", str(tmp_path), "--top-k", "3", *TINY]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+\d\. (-?[\d.]+)\s+(.+)$", out, flags=re.M)
    assert [source for _, source in rows] and len(rows) == 3
    documents = {
        "a.txt #1": "Mars is the red planet.",
        "a.txt #2": "Venus is hot.",
        "sub/b.md #1": "Python lists are mutable.",
    }
    expected = tiny.similarity(
        tiny.encode_query("red planet"), tiny.encode_document(list(documents.values()))
    )[0]
    expected = dict(zip(documents, expected))
    for score, source in rows:
        assert float(score) == pytest.approx(expected[source], abs=1e-3)
    assert [float(s) for s, _ in rows] == sorted((float(s) for s, _ in rows), reverse=True)


def test_search_stdout_holds_only_results(tmp_path, capsys):
    """Progress bars and warnings (here: a text truncated) go to stderr."""
    long_text = " ".join(f"word{i}" for i in range(2000))  # > 512 tokens
    (tmp_path / "a.txt").write_text(f"Mars is the red planet.\n\n{long_text}\n\nVenus is hot.\n")
    args = ["search", "red planet", "--corpus", str(tmp_path), "--batch-size", "1", *TINY]
    assert main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[:2] == ["", "query: red planet"], captured.out
    for line in lines[2:]:
        # A rank with its score and source, or the indented snippet under it.
        assert re.fullmatch(r"  \d\. -?[\d.]+  a\.txt #\d| {7}\S.*", line), line
    assert len(lines) == 2 + 2 * 3
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "were truncated" in warnings[0], captured.err
    assert "3/3" in captured.err  # the indexing progress bar


def test_search_errors_are_one_line_and_nonzero(tmp_path, capsys):
    assert main(["search", "q", "--corpus", str(tmp_path / "missing")]) == 1
    one_line_error(capsys, "No such file or folder")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    assert main(["search", "q", "--corpus", str(tmp_path)]) == 1
    one_line_error(capsys, "No documents in")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert main(["search", "q", "--corpus", str(tmp_path)]) == 1
    one_line_error(capsys, "image.png is not a UTF-8 text file")
    assert main(["search", "q", "--preset", "no_such_preset"]) == 1
    one_line_error(capsys, "Unknown preset 'no_such_preset'")
    assert main(["search", "q", "--dim", "4096", *TINY]) == 1
    one_line_error(capsys, "Matryoshka `dim`")
    assert main(["search", "q", "--top-k", "0"]) == 1
    one_line_error(capsys, "--top-k must be a positive integer")


def test_embed_prints_summary(capsys):
    assert main(["embed", "--task", "query", "Which planet is red?", "Mars is red.", *TINY]) == 0
    out = capsys.readouterr().out
    assert "2 embeddings of size 128" in out and "cosine similarity" in out


def test_embed_writes_npy_and_jsonl(tmp_path, tiny):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("first line\n\nsecond line\n", encoding="utf-8")
    npy = tmp_path / "e.npy"
    assert main(["embed", "--file", str(corpus), "--dim", "64", "--output", str(npy), *TINY]) == 0
    vectors = np.load(npy)
    np.testing.assert_allclose(
        vectors, tiny.encode(["first line", "second line"], dim=64), atol=1e-6
    )
    jsonl = tmp_path / "e.jsonl"
    assert main(["embed", "--file", str(corpus), "--output", str(jsonl), *TINY]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["first line", "second line"]
    assert len(rows[0]["embedding"]) == 128


def test_embed_in_bfloat16_is_close_to_float32(tmp_path, tiny):
    npy = tmp_path / "e.npy"
    texts = ["Mars is the red planet.", "A man plays a guitar on stage."]
    assert main(["embed", *texts, "--dtype", "bfloat16", "--output", str(npy), *TINY]) == 0
    vectors = np.load(npy)
    cosines = np.sum(vectors * tiny.encode(texts), axis=-1)
    # bfloat16 rounding moves the embeddings, but only slightly.
    assert 0.99 < cosines.min() and cosines.max() < 1 - 1e-7


def test_unknown_dtype_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "x", "--dtype", "float16", *TINY])
    assert exit_info.value.code != 0
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_embed_errors_are_one_line_and_nonzero(tmp_path, capsys):
    assert main(["embed", *TINY]) == 1
    one_line_error(capsys, "Nothing to embed")
    assert main(["embed", "x", "--dim", "500", *TINY]) == 1
    one_line_error(capsys, "Matryoshka `dim`")
    assert main(["embed", "x", "--task", "nope", *TINY]) == 1
    one_line_error(capsys, "Unknown task 'nope'")
    assert main(["embed", "--file", str(tmp_path / "missing.txt"), *TINY]) == 1
    one_line_error(capsys, "No such file")
    bad = tmp_path / "out.csv"
    assert main(["embed", "x", "--output", str(bad), *TINY]) == 1
    one_line_error(capsys, "--output must end in .npy or .jsonl")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_writes_the_library_metrics(tmp_path, capsys, tiny):
    from keras_egemma.evaluation import evaluate_retrieval
    from keras_egemma.evaluation import evaluate_sts
    from keras_egemma.evaluation import load_retrieval_dataset
    from keras_egemma.evaluation import load_sts_dataset

    folder = write_dataset(tmp_path / "data")
    output = tmp_path / "metrics.json"
    assert main(["evaluate", str(folder), "--dim", "64", "--output", str(output), *TINY]) == 0
    assert "retrieval ndcg@10" in capsys.readouterr().out
    written = json.loads(output.read_text())
    expected = evaluate_retrieval(tiny, *load_retrieval_dataset(folder), dim=64)
    assert written["retrieval"] == pytest.approx(expected, abs=1e-6)
    sts = evaluate_sts(tiny, *load_sts_dataset(folder), dim=64)
    assert written["sts"]["spearman"] == pytest.approx(sts["spearman"], abs=1e-6)
    assert written["dim"] == 64


def test_evaluate_errors_write_nothing(tmp_path, capsys):
    output = tmp_path / "metrics.json"
    assert main(["evaluate", str(tmp_path), "--output", str(output), *TINY]) == 1
    one_line_error(capsys, "has neither corpus.jsonl")
    folder = write_dataset(tmp_path / "data")
    (folder / "qrels.tsv").write_text("q1\td1\n")
    assert main(["evaluate", str(folder), "--output", str(output), *TINY]) == 1
    one_line_error(capsys, "expected 3 tab-separated fields")
    assert not output.exists() and not (tmp_path / "metrics.json.partial").exists()


def test_bench_reports_speed_at_each_length(capsys, tiny):
    from keras_egemma.cli import _bench_texts

    for length in (8, 40):
        lengths = [
            len(ids) for ids in tiny.preprocessor.tokenize_texts(_bench_texts(tiny, length, 4))
        ]
        assert max(lengths) == length and min(lengths) >= length - 4, lengths
    assert (
        main(
            [
                "bench",
                "--lengths",
                "8",
                "24",
                "--num-texts",
                "4",
                "--repeats",
                "1",
                "--batch-size",
                "4",
                *TINY,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert ", float32, batch size 4," in out
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+(\d+)$", out, flags=re.M)
    assert [int(r[0]) for r in rows] == [8, 24]
    for length, sentences, tokens in rows:
        # tokens/s over sentences/s is the mean tokens per text, at most the length.
        assert 0.85 * int(length) <= int(tokens) / float(sentences) <= int(length) + 0.5
    bench_bfloat16 = ["bench", "--lengths", "8", "--num-texts", "2", "--repeats", "1"]
    assert main([*bench_bfloat16, "--dtype", "bfloat16", *TINY]) == 0
    assert ", bfloat16, batch size 32," in capsys.readouterr().out
    assert main(["bench", "--lengths", "4096", *TINY]) == 1
    one_line_error(capsys, "at most the preset's sequence_length (512)")


def test_convert_hugging_face_checkpoint(st_checkpoint, tmp_path, capsys):
    dest = tmp_path / "preset"
    assert main(["convert", st_checkpoint, str(dest)]) == 0
    assert (dest / "task.weights.h5").exists()
    assert main(["embed", "--preset", str(dest), "hello"]) == 0
    assert "1 embeddings of size 72" in capsys.readouterr().out
