"""The `README.md` model card of an exported EmbeddingGemma folder.

Hugging Face model-card front matter, then what a user of the folder needs:
architecture, licence of the weights, training (read from the model when it
was `fit` in this session), Matryoshka sizes, prompts, evaluation results the
caller passes, and a usage snippet.
"""

import json

GEMMA_TERMS = "https://ai.google.dev/gemma/terms"
_PUBLISHED_MRL = (768, 512, 256, 128)
_POOLING_NAMES = {"mean": "mean of all non-pad tokens (prompt included)",
                  "first": "first token (`<bos>`)", "last": "last non-pad token (`<eos>`)"}


def _cell(text):
    return json.dumps(text, ensure_ascii=False)[1:-1].replace("|", "\\|")


def _front_matter(base_model, license):
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags:", "- sentence-transformers", "- sentence-similarity",
             "- feature-extraction", "- keras-egemma"]
    if license:
        lines.append(f"license: {license}")
    if base_model:
        lines.append(f"base_model: {base_model}")
    return lines + ["---", ""]


def _training_section(model, training_data):
    """What `fit` ran in this session (Keras' `History`), and the objective."""
    history = getattr(model, "history", None)
    epochs = list(getattr(history, "epoch", None) or [])
    if not epochs:
        return ["## Training", "", "Not fine-tuned with keras_egemma in the session that "
                "saved this folder.", ""]
    lines = ["## Training", "", "Fine-tuned with keras_egemma "
             "(`EmbeddingGemma.fit`) and exported with `save_to_sentence_transformers`.", ""]
    if training_data:
        lines += [f"- Data: {training_data}"]
    objective = getattr(model, "_objective_config", None) or {}
    if getattr(model, "objective", None) is not None:
        lines += [
            "- Objective: NCE with in-batch and hardness-weighted hard negatives "
            f"(temperature {objective['temperature']}, alpha {objective['hardness_alpha']}) "
            "+ spread-out regulariser + embedding distillation when teacher embeddings were "
            f"given; weights {objective['nce_weight']} / {objective['spread_out_weight']} / "
            f"{objective['distillation_weight']}; Matryoshka sizes {objective['mrl_dims']}",
        ]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        rate = optimizer.learning_rate
        rate = float(rate.numpy()) if hasattr(rate, "numpy") else rate
        lines.append(f"- Optimizer: {type(optimizer).__name__}, learning rate {rate:g}")
    params = getattr(history, "params", {}) or {}
    lines.append(f"- Epochs: {len(epochs)}, steps per epoch: {params.get('steps')}")
    final = {name: values[-1] for name, values in (history.history or {}).items() if values}
    if final:
        lines.append("- Final epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items()))
    return lines + [""]


def _flatten(value, prefix=""):
    """`{"sts": {"spearman": 0.8}}` -> `("sts / spearman", 0.8)`."""
    if not isinstance(value, dict):
        yield prefix, value
        return
    for key, inner in value.items():
        yield from _flatten(inner, f"{prefix} / {key}" if prefix else str(key))


def _evaluation_section(evaluation):
    if not evaluation:
        return []
    lines = ["## Evaluation", "", "| metric | value |", "|---|---|"]
    for name, value in _flatten(evaluation):
        lines.append(f"| {name} | {f'{value:.4f}' if isinstance(value, float) else value} |")
    return lines + [""]


def model_card(model, base_model="google/embeddinggemma-300m", license="gemma",
               training_data=None, evaluation=None):
    """The model card text for `model`.

    Args:
        model: the `EmbeddingGemma` being exported.
        base_model: the Hugging Face id it derives from (`None` to leave out).
        license: the weights' licence identifier; `"gemma"` (EmbeddingGemma's
            weights are under the Gemma terms of use) adds a link to the terms.
        training_data: a sentence saying what it was fine-tuned on.
        evaluation: metrics, e.g. `keras_egemma.evaluation.evaluate_retrieval`'s
            result or `{"retrieval": {...}, "sts": {...}}`.

    Example:
    ```python
    text = model_card(model, training_data="10k (query, passage) pairs from our FAQ")
    ```
    """
    dim = model.embedding_dim
    objective = getattr(model, "_objective_config", None) or {}
    # The objective drops sizes above the embedding's; the full size is always one.
    mrl = sorted({d for d in objective.get("mrl_dims") or _PUBLISHED_MRL if d < dim} | {dim},
                 reverse=True)
    widths = " -> ".join(str(u) for u in (model.backbone.hidden_dim, *model.projection_head.units))
    prompts = model.preprocessor.prompts
    lines = _front_matter(base_model, license) + [
        "# EmbeddingGemma (exported by keras_egemma)", "",
        f"A {dim}-dimensional text embedding model: Gemma 3 encoder "
        f"({model.backbone.num_layers} layers, bidirectional attention), "
        f"{_POOLING_NAMES[model.pooling]} pooling, dense projection {widths} (no bias), "
        "L2 normalisation.", "",
        f"- Base model: {base_model or 'not recorded'}",
        f"- Maximum sequence length: {model.preprocessor.sequence_length} tokens",
        f"- Matryoshka sizes: {', '.join(map(str, mrl))} (keep the first k dimensions, "
        "then normalise again: `truncate_dim=k`)",
        "- Similarity: cosine", "",
        "## Licence", "",
    ]
    if license == "gemma":
        lines.append(f"The weights derive from EmbeddingGemma and are provided under the "
                     f"[Gemma Terms of Use]({GEMMA_TERMS}).")
    else:
        lines.append(f"Weights licence: {license or 'not stated'}.")
    lines += [""] + _training_section(model, training_data) + [
        "## Prompts", "",
        "Each text is prefixed with its task's prompt (`prompt_name=` in sentence-transformers):",
        "", "| name | prompt |", "|---|---|",
    ]
    # A table cell ends at `|`, which every published prompt holds.
    lines += [f"| {name} | `{_cell(text)}` |" for name, text in prompts.items()]
    lines += [""] + _evaluation_section(evaluation) + [
        "## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
        'model = SentenceTransformer("path/to/this/folder")',
        'queries = model.encode_query(["Which planet is known as the Red Planet?"])',
        'documents = model.encode_document(["Mars is often called the Red Planet."])',
        "print(model.similarity(queries, documents))",
        f"small = model.encode_query([\"a query\"], truncate_dim={mrl[-1]})",
        "```", "",
    ]
    return "\n".join(lines)
