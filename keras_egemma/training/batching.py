"""The paper's batching: every batch comes from one source dataset and holds
no duplicate texts, so in-batch negatives are same-task and truly negative."""

import random

from keras_egemma.models.prompts import resolve_prompt


def single_source_batches(sources, batch_size, seed=0, tasks=None):
    """Orders examples so that each run of `batch_size` is one clean batch.

    Each source's examples are shuffled, then placed greedily into the first
    open batch that has neither their query nor their positive text yet;
    incomplete batches are dropped. Batches of all sources are then shuffled
    together.

    Args:
        sources: dict `{source name: list of example dicts}` (or a list of
            lists).
        batch_size: examples per batch.
        seed: shuffle seed.
        tasks: optional `{source name: (query task, document task)}`: each
            example of that source gets the prompts of those task names
            (`query_prompt` / `document_prompt`), e.g. `{"sts": ("STS",
            "STS")}`; sources not listed use the pipeline's prompts, so list
            every source or none.

    Returns:
        A flat list of examples: feed it to `fit(..., batch_size=batch_size)`
        (or `as_training_dataset`) without shuffling.

    Example:
    ```python
    examples = single_source_batches({"qa": qa_pairs, "nli": nli_pairs}, 32)
    model.fit(examples, batch_size=32, shuffle=False)
    ```
    """
    if not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"`batch_size` must be an int >= 2, got {batch_size!r}.")
    named = list(sources.items() if isinstance(sources, dict) else enumerate(sources))
    tasks = tasks or {}
    unknown = set(tasks) - {name for name, _ in named}
    if unknown:
        raise ValueError(f"`tasks` names unknown sources: {sorted(unknown)}.")
    rng = random.Random(seed)
    batches = []
    for name, examples in named:
        examples = list(examples)
        if name in tasks:
            query_task, document_task = tasks[name]
            prompts = {"query_prompt": resolve_prompt(query_task),
                       "document_prompt": resolve_prompt(document_task)}
            examples = [{**example, **prompts} for example in examples]
        rng.shuffle(examples)
        open_batches = []
        for example in examples:
            texts = {("q", example["query"]), ("p", example["positive"])}
            for batch in open_batches:
                if not texts & batch["texts"]:
                    break
            else:
                batch = {"examples": [], "texts": set()}
                open_batches.append(batch)
            batch["examples"].append(example)
            batch["texts"] |= texts
            if len(batch["examples"]) == batch_size:
                batches.append(batch["examples"])
                open_batches.remove(batch)
    if not batches:
        raise ValueError(
            f"No source has {batch_size} examples with distinct texts: lower `batch_size`."
        )
    rng.shuffle(batches)
    return [example for batch in batches for example in batch]
