"""The command line, in-process (a --backend other than the loaded one is
checked without re-running, but one test runs a missing backend end to end)."""

import ast
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from test_evaluation import write_dataset

import keras_egemma as eg
from keras_egemma import cli
from keras_egemma.cli import main

TINY = ["--preset", "embeddinggemma_tiny"]
BACKEND = keras.backend.backend()
OTHER_BACKENDS = [b for b in ("jax", "tensorflow", "torch") if b != BACKEND]


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
    assert list(tmp_path.iterdir()) == [folder]


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
    captured = capsys.readouterr()
    out = captured.out
    assert ", float32, batch size 4," in out
    # Its progress: plain lines on a stderr that is not a terminal.
    assert re.findall(r"^bench: (\d)/2 lengths", captured.err, re.M) == ["1", "2"], captured.err
    assert "\r" not in captured.err and "\x1b" not in captured.err
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+(\d+)$", out, flags=re.M)
    assert [int(r[0]) for r in rows] == [8, 24]
    for length, sentences, tokens in rows:
        # tokens/s over sentences/s is the mean tokens per text, at most the length.
        assert 0.85 * int(length) <= int(tokens) / float(sentences) <= int(length) + 0.5
    bench_bfloat16 = ["bench", "--lengths", "8", "--num-texts", "2", "--repeats", "1"]
    assert main([*bench_bfloat16, "--dtype", "bfloat16", *TINY]) == 0
    assert ", bfloat16, batch size 32," in capsys.readouterr().out
    assert main(["bench", "--lengths", "4096", *TINY]) == 1
    one_line_error(capsys, "at most embeddinggemma_tiny's sequence length (512 tokens)")


def test_convert_hugging_face_checkpoint(st_checkpoint, tmp_path, capsys):
    dest = tmp_path / "preset"
    assert main(["convert", st_checkpoint, str(dest)]) == 0
    assert (dest / "task.weights.h5").exists()
    assert main(["embed", "--preset", str(dest), "hello"]) == 0
    assert "1 embeddings of size 72" in capsys.readouterr().out


# --- Issue 20: the command line's rough edges -----------------------------------


@pytest.fixture(scope="module")
def mini():
    return eg.EmbeddingGemma.from_preset("embeddinggemma_mini")


@pytest.mark.parametrize("before", [True, False])
def test_global_options_go_before_or_after_the_command(before, capsys):
    options = ["--backend", BACKEND, "--preset", "no_such_preset"]
    argv = [*options, "embed", "hello"] if before else ["embed", "hello", *options]
    # Run here (the backend is the loaded one), with the preset given.
    assert main(argv) == 1
    one_line_error(capsys, "Unknown preset 'no_such_preset'")
    for backend in OTHER_BACKENDS:
        parsed = cli._parse(
            ["--backend", backend, "search", "q"]
            if before
            else ["search", "q", "--backend", backend]
        )
        assert (parsed.backend, parsed.preset) == (backend, "embeddinggemma_mini")
    # Given twice, the value after the command wins.
    assert cli._parse(["--preset", "a", "embed", "--preset", "b"]).preset == "b"


def test_convert_refuses_preset_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "embeddinggemma_tiny", "convert", "a", "b"])
    assert exit_info.value.code == 2
    assert "--preset does not apply to convert" in capsys.readouterr().err


def test_other_backend_reruns_with_keras_backend_set(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "_is_installed", lambda package: True)
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 7)
    for backend in OTHER_BACKENDS:
        argv = ["embed", "hello", "--backend", backend]
        assert main(argv) == 7
        cmd, env = calls.pop()
        assert cmd == [sys.executable, "-m", "keras_egemma", *argv]
        assert env["KERAS_BACKEND"] == backend


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_missing_backend_package_is_one_error_line(backend, monkeypatch, capsys):
    package, install = cli.BACKENDS[backend]
    # An import of a name set to None in sys.modules fails as if not installed.
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.setattr(cli.subprocess, "call", lambda *a, **k: pytest.fail("re-ran"))
    assert main(["embed", "--backend", backend, "hello"]) == 2
    one_line_error(
        capsys,
        f"--backend {backend} needs the {package} package, which is not "
        f"installed. Install it with: {install}",
    )
    # The install command is README.md's.
    assert install in (Path(__file__).parents[1] / "README.md").read_text()


def test_missing_backend_package_from_the_shell():
    """`python -m keras_egemma --backend X ...` with X's package blocked: one
    line, exit status 2, no traceback (the real entry point, whatever is installed)."""
    # Not tensorflow: keras_egemma imports it on every backend.
    backend = next(b for b in ("torch", "jax") if b != BACKEND)
    package = cli.BACKENDS[backend][0]
    # The path finder no longer finds the package, as if it were not installed.
    code = f"""
import importlib.machinery, runpy, sys

class WithoutPackage(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] != {package!r}:
            return super().find_spec(name, path, target)

sys.meta_path[sys.meta_path.index(importlib.machinery.PathFinder)] = WithoutPackage
sys.argv = ["keras-egemma", "embed", "--backend", {backend!r}, "hello"]
runpy.run_module("keras_egemma", run_name="__main__")
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": BACKEND},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Install it with: " + cli.BACKENDS[backend][1] in result.stderr
    assert "Traceback" not in result.stderr


def test_prompt_option_is_a_prefix_of_your_own(tmp_path, capsys, monkeypatch, tiny):
    # The model loaded once (and compiled once) for every command here.
    monkeypatch.setattr(cli, "_load", lambda preset, dtype=None: tiny)
    prompt = "task: classification | query: "
    texts = ["Mars is red.", "A recipe for bread."]
    npy = tmp_path / "e.npy"
    assert main(["embed", *texts, "--prompt", prompt, "--output", str(npy), *TINY]) == 0
    expected = tiny.encode([prompt + text for text in texts])  # the prefix, by hand
    np.testing.assert_allclose(np.load(npy), expected, atol=1e-5)
    assert not np.allclose(expected, tiny.encode(texts), atol=1e-3)  # it changed something
    capsys.readouterr()
    corpus = tmp_path / "a.txt"
    corpus.write_text("Mars is the red planet.\n\nBread needs flour.\n")
    assert main(["search", "red planet", "--corpus", str(corpus), "--prompt", prompt, *TINY]) == 0
    scores = [float(s) for s in re.findall(r"^\s+\d\. (-?[\d.]+)", capsys.readouterr().out, re.M)]
    documents = tiny.encode_document(["Mars is the red planet.", "Bread needs flour."])
    expected = sorted(tiny.similarity(tiny.encode(prompt + "red planet"), documents)[0])[::-1]
    np.testing.assert_allclose(scores, expected, atol=1e-3)


def test_prompt_excludes_task_and_unknown_task_names_the_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "x", "--task", "STS", "--prompt", "p: "])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["embed", "x", "--task", "nope", *TINY]) == 1
    err = capsys.readouterr().err
    assert "`--prompt` on the command line" in err and "`prompt=` in Python" in err, err


def test_dim_error_names_the_models_own_sizes(capsys, mini):
    # The sizes the bundled model's build script trains for, read from the script.
    script = Path(__file__).parents[1] / "presets" / "build_mini_preset.py"
    assignments = {
        target.id: node.value
        for node in ast.parse(script.read_text()).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    trained = ast.literal_eval(assignments["MRL_DIMS"])
    assert mini.matryoshka_dims == trained and trained[0] == mini.embedding_dim
    assert main(["embed", "x", "--dim", "1000"]) == 1
    err = capsys.readouterr().err
    assert f"(0, {mini.embedding_dim}]" in err, err
    assert f"trained for {', '.join(map(str, trained))}." in err, err
    assert "768" not in err, err
    # A model that records no sizes: its range only.
    assert main(["embed", "x", "--dim", "1000", *TINY]) == 1
    err = capsys.readouterr().err
    assert "(0, 128]" in err and "trained for" not in err, err


def test_sequence_length_messages_name_the_models_own(capsys, monkeypatch):
    short = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    short.preprocessor.sequence_length = 48
    monkeypatch.setattr(cli, "_load", lambda preset, dtype=None: short)
    assert main(["bench", "--lengths", "49", *TINY]) == 1
    one_line_error(capsys, "sequence length (48 tokens), got 49")
    assert main(["embed", " ".join(["word"] * 100), *TINY]) == 0
    assert "longer than sequence_length=48 tokens" in capsys.readouterr().err


def test_files_and_folders_get_the_usual_permissions(tmp_path, capsys):
    pytest.importorskip("gguf")
    old = os.umask(0o027)  # neither the default 0o022 nor tempfile's private modes
    try:
        assert main(["convert", "embeddinggemma_tiny", str(tmp_path / "preset")]) == 0
        gguf_path = tmp_path / "tiny.gguf"
        assert main(["convert", "embeddinggemma_tiny", str(gguf_path), "--to", "gguf"]) == 0
    finally:
        os.umask(old)
    preset = tmp_path / "preset"
    assert oct(preset.stat().st_mode & 0o777) == oct(0o750)
    for path in preset.rglob("*"):
        assert oct(path.stat().st_mode & 0o777) == oct(0o750 if path.is_dir() else 0o640), path
    assert oct(gguf_path.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preset", "tiny.gguf"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_plain_lines_on_stderr_when_not_a_terminal(capsys, tiny):
    tiny.encode([f"text number {i}" for i in range(5)], batch_size=2, verbose=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert "\r" not in captured.err and "\x1b" not in captured.err, repr(captured.err)
    assert [line.split(" (")[0] for line in lines] == [
        "encode: 2/5 texts",
        "encode: 4/5 texts",
        "encode: 5/5 texts",
    ], lines
    assert all(re.fullmatch(r"encode: \d/5 texts \(\d+%, [\d.]+ s\)", line) for line in lines)


def test_progress_is_a_bar_on_a_terminal_and_never_on_stdout(monkeypatch, capsys, tiny):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    tiny.encode([f"text number {i}" for i in range(5)], batch_size=2, verbose=True)
    assert capsys.readouterr().out == ""
    assert "\r" in terminal.getvalue() and "5/5" in terminal.getvalue()  # tqdm redraws


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_stdout_ends_quietly(monkeypatch, capsys, tiny):
    """`keras-egemma ... | head`: no `error: Broken pipe` once the reader has gone."""
    monkeypatch.setattr(cli, "_load", lambda preset, dtype=None: tiny)
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["embed", "hello"]) == 1
    assert capsys.readouterr().err == ""
