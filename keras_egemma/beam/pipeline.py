"""A Beam pipeline embedding a corpus: JSONL or Parquet shards of
`(id, text[, title])` rows in, Parquet shards of `(id, embedding)` out."""

import json

import apache_beam as beam
import pyarrow as pa
from apache_beam.ml.inference.base import RunInference

# Each output row: the input id and the unit vector, float32.
OUTPUT_SCHEMA = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32()))])
INPUT_FORMATS = (".jsonl", ".jsonl.gz", ".parquet")


def _json_row(line):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"An input line is not JSON ({e}): {line[:80]!r}.") from None


def check_row(row):
    """One input row as `{"id": str, "text": str, "title": str | None}`;
    a clear error for a row without them. Integer ids become strings."""
    if not isinstance(row, dict):
        raise ValueError(f'An input row must be an object with "id" and "text", got {row!r:.80}.')
    row_id, text, title = row.get("id"), row.get("text"), row.get("title")
    if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
        raise ValueError(f'An input row needs a string (or integer) "id", got {row!r:.80}.')
    if not isinstance(text, str):
        raise ValueError(f'Input row {row_id!r} needs a string "text".')
    if title is not None and not isinstance(title, str):
        raise ValueError(f'Input row {row_id!r}: "title" must be a string or absent.')
    return {"id": str(row_id), "text": text, "title": title}


class ReadCorpus(beam.PTransform):
    """Rows of JSONL (`.jsonl`, `.jsonl.gz`) or Parquet (`.parquet`) shards
    matching a file pattern (local, `gs://`, `s3://`, ... as Beam reads)."""

    def __init__(self, pattern):
        super().__init__()
        if not pattern.endswith(INPUT_FORMATS):
            raise ValueError(
                f"--input must name .jsonl, .jsonl.gz or .parquet shards, got {pattern!r}."
            )
        self._pattern = pattern

    def expand(self, pipeline):
        if self._pattern.endswith(".parquet"):
            rows = pipeline | "ReadParquet" >> beam.io.ReadFromParquet(self._pattern)
        else:
            lines = pipeline | "ReadJsonl" >> beam.io.ReadFromText(self._pattern)
            rows = (
                lines
                | "SkipBlank" >> beam.Filter(lambda line: line.strip() != "")
                | "ParseJson" >> beam.Map(_json_row)
            )
        return rows | "CheckRows" >> beam.Map(check_row)


class WriteEmbeddings(beam.PTransform):
    """Parquet shards `PREFIX-SSSSS-of-NNNNN.parquet` of `(id, embedding)`.
    Beam writes each shard to a temporary folder and renames it into place
    once the pipeline succeeds, so no partial shard is left under PREFIX."""

    def __init__(self, prefix, num_shards=0):
        super().__init__()
        self._prefix = prefix
        self._num_shards = num_shards

    def expand(self, predictions):
        return (
            predictions
            | "ToRecords" >> beam.Map(
                lambda p: {"id": p["id"], "embedding": p["embedding"].tolist()}
            )
            | "WriteParquet" >> beam.io.WriteToParquet(
                self._prefix,
                OUTPUT_SCHEMA,
                file_name_suffix=".parquet",
                num_shards=self._num_shards,
            )
        )


def build_pipeline(pipeline, input_pattern, output_prefix, handler, num_shards=0):
    """Adds read -> RunInference(handler) -> write to `pipeline`.

    Args:
        pipeline: a `beam.Pipeline`.
        input_pattern: file pattern of JSONL or Parquet shards.
        output_prefix: where the Parquet shards go (`PREFIX-00000-of-00004.parquet`).
        handler: an `EmbeddingGemmaModelHandler`.
        num_shards: output shards (0: the runner decides).

    Returns:
        The PCollection of written file names.

    Example:
    ```python
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        build_pipeline(p, "corpus/*.jsonl", "out/embeddings", handler)
    ```
    """
    return (
        pipeline
        | "Read" >> ReadCorpus(input_pattern)
        | "Embed" >> RunInference(handler)
        | "Write" >> WriteEmbeddings(output_prefix, num_shards)
    )
