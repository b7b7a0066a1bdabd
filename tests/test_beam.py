"""keras_egemma.beam and `keras-egemma embed --runner`: the corpus embedded by
Apache Beam's DirectRunner in multi-process mode (two worker processes, each
loading the bundled model) equals `encode`, every id exactly once.

Needs the beam extra, which CI installs in an environment of its own
(.ci/run): skipped where Apache Beam is not installed. EGEMMA_BEAM_TEXTS sets
the corpus size (default 200; benchmarks/beam_embed.py runs 10,000).
"""

import glob
import json
import os
import random

import numpy as np
import pytest

pytest.importorskip("apache_beam")

import apache_beam as beam  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

import keras_egemma as eg  # noqa: E402
from keras_egemma.beam import EmbeddingGemmaModelHandler  # noqa: E402
from keras_egemma.beam import build_pipeline  # noqa: E402
from keras_egemma.beam import check_row  # noqa: E402
from keras_egemma.beam.command import split_pipeline_options  # noqa: E402
from keras_egemma.cli import main  # noqa: E402
from keras_egemma.data import SAMPLE_CORPUS  # noqa: E402

PRESET = "embeddinggemma_mini"
NUM_TEXTS = int(os.environ.get("EGEMMA_BEAM_TEXTS", "200"))


def corpus_rows(count, seed=0):
    """`count` rows of 1 to 150 words from the bundled sample corpus, some
    with a title, ids shuffled (integers in every third row)."""
    with open(SAMPLE_CORPUS, encoding="utf-8") as f:
        words = " ".join(json.loads(line)["text"] for line in f).split()
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        start, length = rng.randrange(len(words)), rng.randint(1, 150)
        row = {"id": i if i % 3 == 0 else f"doc-{i}", "text": " ".join(words[start : start + length])}
        if i % 2:
            row["title"] = f"Title {i}"
        rows.append(row)
    rng.shuffle(rows)
    return rows


def write_jsonl_shards(rows, folder, shards):
    os.makedirs(folder, exist_ok=True)
    for s in range(shards):
        with open(os.path.join(folder, f"part-{s}.jsonl"), "w", encoding="utf-8") as f:
            for row in rows[s::shards]:
                f.write(json.dumps(row) + "\n")
            f.write("\n")  # a blank line is skipped
    return os.path.join(folder, "*.jsonl")


def read_output(prefix):
    files = sorted(glob.glob(prefix + "-*.parquet"))
    assert files, f"no Parquet shards at {prefix}"
    table = pa.concat_tables([pq.read_table(path) for path in files])
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    return table.column("id").to_pylist(), np.array(table.column("embedding").to_pylist(), "float32")


def assert_matches_encode(rows, prefix, model, **encode_args):
    ids, embeddings = read_output(prefix)
    expected_ids = [str(row["id"]) for row in rows]
    assert len(ids) == len(set(ids)) == len(rows), "an id is missing or repeated"
    assert set(ids) == set(expected_ids)
    reference = model.encode([row["text"] for row in rows], verbose=False, **encode_args)
    position = {row_id: i for i, row_id in enumerate(ids)}
    got = embeddings[[position[row_id] for row_id in expected_ids]]
    assert got.shape == reference.shape
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def model():
    return eg.EmbeddingGemma.from_preset(PRESET)


def test_cli_embeds_jsonl_shards_on_direct_runner_with_two_worker_processes(tmp_path, model):
    rows = corpus_rows(NUM_TEXTS)
    pattern = write_jsonl_shards(rows, str(tmp_path / "corpus"), shards=4)
    prefix = str(tmp_path / "out" / "embeddings")
    status = main(
        [
            "embed", "--runner", "DirectRunner", "--input", pattern, "--output", prefix,
            "--task", "document", "--preset", PRESET, "--batch-size", "16",
            # Beam's own options, in both spellings, go through unchanged.
            "--direct_num_workers", "2", "--direct_running_mode=multi_processing",
        ]
    )  # fmt: skip
    assert status == 0
    titles = [row.get("title") for row in rows]
    assert_matches_encode(rows, prefix, model, titles=titles)


def test_pipeline_reads_parquet_shards_with_a_query_prompt_and_matryoshka_size(tmp_path, model):
    rows = [{"id": str(row["id"]), "text": row["text"]} for row in corpus_rows(40, seed=1)]
    os.makedirs(tmp_path / "corpus")
    for s in range(2):
        pq.write_table(pa.Table.from_pylist(rows[s::2]), tmp_path / "corpus" / f"{s}.parquet")
    prefix = str(tmp_path / "out" / "embeddings")
    handler = EmbeddingGemmaModelHandler(PRESET, task="query", dim=64, max_batch_texts=16)
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
        build_pipeline(pipeline, str(tmp_path / "corpus" / "*.parquet"), prefix, handler)
    assert_matches_encode(rows, prefix, model, task="query", dim=64)


def test_beam_options_are_split_from_the_command_line_in_order():
    argv = ["embed", "--runner", "X", "--project", "p", "--input", "a.jsonl", "--region=r", "--flag"]
    # What argparse makes of it: unknown options, and "p" taken as a text.
    unknown, texts = ["--project", "--region=r", "--flag"], ["p"]
    assert split_pipeline_options(argv, unknown, texts) == (
        ["--project", "p", "--region=r", "--flag"],
        [],
    )


def test_bad_rows_and_inputs_are_refused_with_what_to_do(tmp_path, capsys):
    assert check_row({"id": 7, "text": "a"}) == {"id": "7", "text": "a", "title": None}
    with pytest.raises(ValueError, match='needs a string "text"'):
        check_row({"id": "a", "body": "x"})
    with pytest.raises(ValueError, match='"id"'):
        check_row({"text": "x"})
    status = main(["embed", "--runner", "DirectRunner", "--input", "x.csv", "--output", "o"])
    assert status == 1 and ".jsonl, .jsonl.gz or .parquet" in capsys.readouterr().err
    status = main(["embed", "a text", "--runner", "DirectRunner", "--input", "x.jsonl"])
    assert status == 1 and "--input shards" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", "a text", "--project", "p"])  # Beam options need --runner
