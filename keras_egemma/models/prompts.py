"""Task prompts of EmbeddingGemma (model card and sentence-transformers config).

The prompt is a plain prefix added to the text before tokenising. Names are
matched ignoring case, spaces, hyphens and underscores, so "Retrieval-query",
"retrieval_query" and "RETRIEVAL QUERY" are one name.
"""

import re

RETRIEVAL_QUERY = "task: search result | query: "
DOCUMENT_TEMPLATE = "title: {title} | text: "
RETRIEVAL_DOCUMENT = DOCUMENT_TEMPLATE.format(title="none")

DEFAULT_PROMPTS = {
    "query": RETRIEVAL_QUERY,
    "document": RETRIEVAL_DOCUMENT,
    "Retrieval": RETRIEVAL_QUERY,
    "Retrieval-query": RETRIEVAL_QUERY,
    "Retrieval-document": RETRIEVAL_DOCUMENT,
    "Reranking": RETRIEVAL_QUERY,
    "BitextMining": RETRIEVAL_QUERY,
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "code retrieval": "task: code retrieval | query: ",
    "question answering": "task: question answering | query: ",
    "fact checking": "task: fact checking | query: ",
}


def _key(name):
    return re.sub(r"[\s_\-]+", "", name).lower()


def resolve_prompt(task, prompts=None):
    """Returns the prompt string for a task name.

    Args:
        task: a prompt name (see `DEFAULT_PROMPTS`; also those of `prompts`).
        prompts: dict of extra or overriding `{name: prompt}` (e.g. from a
            checkpoint's `config_sentence_transformers.json`).

    Example:
    ```python
    resolve_prompt("STS")   # "task: sentence similarity | query: "
    ```
    """
    if not isinstance(task, str):
        raise TypeError(
            f"`task` must be a prompt name (a string), got {type(task).__name__}."
        )
    table = {_key(k): v for k, v in DEFAULT_PROMPTS.items()}
    table.update({_key(k): v for k, v in (prompts or {}).items()})
    if _key(task) not in table:
        names = sorted(set(DEFAULT_PROMPTS) | set(prompts or {}))
        raise ValueError(
            f"Unknown task {task!r}. Use one of: {', '.join(names)}; or give a prefix "
            "string of your own: `prompt=` in Python, `--prompt` on the command line."
        )
    return table[_key(task)]


def document_prompt(title=None):
    """`title: {title} | text: `, with `none` when there is no title."""
    if title is None:
        title = "none"
    if not isinstance(title, str):
        raise TypeError(f"A title must be a string or None, got {type(title).__name__}.")
    return DOCUMENT_TEMPLATE.format(title=title)
