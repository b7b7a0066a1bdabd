"""Data shipped with the package: a small sample corpus for `keras-egemma search`.

`SAMPLE_CORPUS` is a JSONL file of documents (`{"title": ..., "text": ...}`):
paragraphs of CPython's language reference, rebuilt with
`python -m keras_egemma.data.build_sample_corpus`.
"""

import os

SAMPLE_CORPUS = os.path.join(os.path.dirname(__file__), "python_reference.jsonl")
