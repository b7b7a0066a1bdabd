"""Local evaluation datasets: a BEIR-style folder.

```
my_dataset/
  corpus.jsonl     {"_id": "d1", "title": "optional", "text": "..."}   one per line
  queries.jsonl    {"_id": "q1", "text": "..."}
  qrels.tsv        query-id <TAB> corpus-id <TAB> grade   (BEIR's qrels/test.tsv also works;
                   a first line "query-id ..." is a header; grade > 0 is relevant)
  sts.jsonl        {"sentence1": "...", "sentence2": "...", "score": 4.2}   (optional)
```

A folder needs the three retrieval files, or `sts.jsonl`, or both. `"id"`
may be used instead of `"_id"`. `read_jsonl` reads any JSON Lines file (the
command line's `.jsonl` corpora too).
"""

import json
import os


def read_jsonl(path):
    """Reads a JSON Lines file: one JSON object per non-blank line.

    Returns:
        A list of `(line number, object)` pairs, counting lines from 1 (blank
        lines are skipped, so numbers point at the file's real lines). An
        empty list for a file with no objects.

    Raises:
        ValueError: the file is not UTF-8 text, or a line is not a JSON
            object; the message names the file and the line.

    Example:
    ```python
    for number, row in read_jsonl("corpus.jsonl"):
        print(number, row["text"])
    ```
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        try:
            # Split on newlines only: JSON strings may hold U+2028 and the
            # other line breaks that `str.splitlines` splits on.
            lines = f.read().split("\n")
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a UTF-8 text file.") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {number}: not valid JSON ({e.msg}).") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object.")
        rows.append((number, row))
    return rows


def _nonempty_jsonl(path):
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} is empty.")
    return rows


def _texts_by_id(path, with_title):
    out = {}
    for number, row in _nonempty_jsonl(path):
        key = row.get("_id", row.get("id"))
        text = row.get("text")
        if key is None or not isinstance(text, str):
            raise ValueError(f'{path}, line {number}: needs "_id" and a string "text".')
        title = row.get("title") or None
        out[str(key)] = (title, text) if with_title else text
    return out


def _qrels_path(folder):
    for name in ("qrels.tsv", os.path.join("qrels", "test.tsv")):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def load_retrieval_dataset(folder):
    """Reads `corpus.jsonl`, `queries.jsonl` and `qrels.tsv` from a folder.

    Returns:
        `(queries, corpus, qrels)`: `{query id: text}`, `{document id:
        (title or None, text)}` and `{query id: {document id: grade}}`
        (only judged queries, only grades > 0).

    Example:
    ```python
    queries, corpus, qrels = load_retrieval_dataset("./my_dataset")
    ```
    """
    qrels_path = _qrels_path(folder)
    missing = [
        name
        for name in ("corpus.jsonl", "queries.jsonl")
        if not os.path.isfile(os.path.join(folder, name))
    ]
    if qrels_path is None:
        missing.append("qrels.tsv")
    if missing:
        raise FileNotFoundError(
            f"{folder} has no {', '.join(missing)} (see "
            "`keras_egemma.evaluation.datasets` for the format)."
        )
    corpus = _texts_by_id(os.path.join(folder, "corpus.jsonl"), with_title=True)
    queries = _texts_by_id(os.path.join(folder, "queries.jsonl"), with_title=False)
    qrels = {}
    with open(qrels_path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if not line.strip() or (number == 1 and fields[0] == "query-id"):
                continue
            if len(fields) != 3:
                raise ValueError(
                    f"{qrels_path}, line {number}: expected 3 tab-separated "
                    "fields (query-id, corpus-id, grade)."
                )
            query, doc, grade = fields
            if query not in queries or doc not in corpus:
                raise ValueError(
                    f"{qrels_path}, line {number}: unknown "
                    f"{'query' if query not in queries else 'document'} id "
                    f"{query if query not in queries else doc!r}."
                )
            if float(grade) > 0:
                qrels.setdefault(query, {})[doc] = float(grade)
    if not qrels:
        raise ValueError(f"{qrels_path} judges no document relevant (grade > 0).")
    return {q: queries[q] for q in qrels}, corpus, qrels


def load_sts_dataset(folder):
    """Reads `sts.jsonl` from a folder.

    Returns:
        `(sentences1, sentences2, scores)` lists.

    Example:
    ```python
    s1, s2, gold = load_sts_dataset("./my_dataset")
    ```
    """
    path = os.path.join(folder, "sts.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} has no sts.jsonl.")
    s1, s2, scores = [], [], []
    for number, row in _nonempty_jsonl(path):
        a, b, score = row.get("sentence1"), row.get("sentence2"), row.get("score")
        if not isinstance(a, str) or not isinstance(b, str) or not isinstance(score, (int, float)):
            raise ValueError(
                f'{path}, line {number}: needs string "sentence1", '
                '"sentence2" and a number "score".'
            )
        s1.append(a)
        s2.append(b)
        scores.append(float(score))
    return s1, s2, scores
