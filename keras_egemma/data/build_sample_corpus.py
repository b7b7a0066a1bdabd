"""Writes the sample corpus: the first paragraphs of each topic of CPython's
language reference (`pydoc_data.topics`), deterministically.

    python -m keras_egemma.data.build_sample_corpus
"""

import json
import re

from keras_egemma.data import SAMPLE_CORPUS

PARAGRAPHS_PER_TOPIC = 3


def sample_documents():
    from pydoc_data.topics import topics

    documents = []
    for topic in sorted(topics):
        kept = 0
        for block in re.split(r"\n\s*\n", topics[topic]):
            text = " ".join(block.split())
            # Prose only: no headings, underlines, code examples or grammar.
            if len(text) < 150 or text.startswith((">>>", "*", "=")) or "::=" in text:
                continue
            documents.append({"title": topic, "text": text})
            kept += 1
            if kept == PARAGRAPHS_PER_TOPIC:
                break
    return documents


if __name__ == "__main__":
    with open(SAMPLE_CORPUS, "w", encoding="utf-8") as f:
        for document in sample_documents():
            f.write(json.dumps(document) + "\n")
    print(f"wrote {SAMPLE_CORPUS}")
