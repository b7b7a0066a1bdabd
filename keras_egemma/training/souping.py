"""Model souping: the unweighted average of several finetuned models."""

import keras
import numpy as np

from keras_egemma.models.backbone import EmbeddingGemmaBackbone
from keras_egemma.models.embedding_gemma import EmbeddingGemma


def _flatten(config, prefix=""):
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): config}


def _architecture(model):
    config = {
        "backbone": model.backbone.get_config(),
        "pooling": model.pooling,
        "projection_units": list(model.projection_units),
        "attention_pooling_heads": model.attention_pooling_heads,
    }
    config["backbone"].pop("name", None)
    return _flatten(config)


def soup(models):
    """Averages the parameters of models of one architecture (paper sec. 2.3).

    Args:
        models: `EmbeddingGemma` models and/or preset names or paths, at
            least one.

    Returns:
        A new `EmbeddingGemma` whose every weight is the unweighted mean of
        the inputs' (the tokenizer and prompts come from the first).

    Example:
    ```python
    souped = keras_egemma.soup([run_a, run_b, "./run_c_preset"])
    ```
    """
    models = [
        EmbeddingGemma.from_preset(m) if isinstance(m, str) else m for m in list(models)
    ]
    if not models:
        raise ValueError("`soup` needs at least one model.")
    first = models[0]
    reference = _architecture(first)
    for index, model in enumerate(models[1:], start=1):
        other = _architecture(model)
        for key in sorted(set(reference) | set(other)):
            if reference.get(key) != other.get(key):
                raise ValueError(
                    f"Cannot soup models with different configs: model 0 has {key}="
                    f"{reference.get(key)!r}, model {index} has {other.get(key)!r}."
                )
    backbone = EmbeddingGemmaBackbone.from_config(first.backbone.get_config())
    souped = type(first)(
        backbone=backbone,
        preprocessor=first.preprocessor,
        pooling=first.pooling,
        projection_units=first.projection_units,
        attention_pooling_heads=first.attention_pooling_heads,
    )
    for i, variable in enumerate(souped.weights):
        values = [keras.ops.convert_to_numpy(m.weights[i]).astype(np.float64) for m in models]
        variable.assign(np.mean(values, axis=0).astype(np.float32))
    return souped
