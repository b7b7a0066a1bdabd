"""Resolving `EmbeddingGemma.from_preset` arguments to a loader."""

import contextlib
import difflib
import json
import os

import h5py

from keras_egemma import _keras_compat
from keras_egemma.convert.huggingface import load_huggingface_checkpoint
from keras_egemma.convert.huggingface import read_json
from keras_egemma.convert.huggingface_gemma2 import MODEL_TYPES as EMBEDDING_GEMMA2_TYPES
from keras_egemma.convert.huggingface_gemma2 import load_embedding_gemma2_checkpoint
from keras_egemma.convert.keras_hub_preset import KERAS_HUB_CLASS
from keras_egemma.convert.keras_hub_preset import load_keras_hub_preset
from keras_egemma.io.deferred_variables import deferred_variables
from keras_egemma.io.deferred_variables import filling_deferred_variables
from keras_egemma.io.deferred_variables import unassigned
from keras_egemma.io.errors import CheckpointError
from keras_egemma.io.errors import check_vocabulary_fits
from keras_egemma.io.mapped_weights import zero_copy_weight_files
from keras_egemma.io.packed_int4 import int4_weights_left_packed
from keras_egemma.presets import PRESETS

# Files fetched from a Hugging Face repository: configs, safetensors and the
# tokenizer. Pickled formats (`*.bin`, `*.pt`) are never downloaded.
HF_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*/*.json", "*/*.safetensors"]
OWN_PRESET_FILES = (
    "config.json",
    "task.json",
    "preprocessor.json",
    "tokenizer.json",
    os.path.join("assets", "tokenizer", "vocabulary.spm"),
)


GATED_HINT = (
    "Accept the Gemma terms on Kaggle or Hugging Face and log in "
    "(kagglehub.login() / huggingface-cli login), or pass a local folder."
)


def download_hf(repo_id):
    """Downloads a Hugging Face repository's safe files; returns the folder."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=repo_id, allow_patterns=HF_PATTERNS)


def download_kaggle(handle):
    """Downloads a Kaggle model handle; returns the folder."""
    import kagglehub

    return kagglehub.model_download(handle)


def resolve_directory(preset):
    """A registered name, handle or path -> a local folder."""
    if not isinstance(preset, (str, os.PathLike)):
        raise TypeError(f"`preset` must be a name, path or handle, got {type(preset).__name__}.")
    preset = os.fspath(preset)
    if preset in PRESETS:
        spec = PRESETS[preset]
        if "path" in spec:
            return spec["path"]
        errors = []
        for handle in spec["handles"]:
            try:
                return resolve_directory(handle)
            except Exception as e:  # noqa: BLE001 - try the next source, report all.
                errors.append(f"{handle}: {type(e).__name__}: {e}")
        raise CheckpointError(
            f"Could not download preset {preset!r} from any source:\n  "
            + "\n  ".join(errors)
            + "\n"
            + spec.get("unavailable", GATED_HINT)
        )
    if preset.startswith("hf://"):
        return download_hf(preset[len("hf://") :])
    if preset.startswith("kaggle://"):
        return download_kaggle(preset[len("kaggle://") :])
    if os.path.isdir(preset):
        return preset
    close = difflib.get_close_matches(preset, list(PRESETS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown preset {preset!r}: not a registered name ({', '.join(PRESETS)}), "
        f"not an existing folder, and not an hf:// or kaggle:// handle.{hint} Pass a "
        "registered name, the path of a preset or checkpoint folder, or a handle."
    )


def detect_format(directory):
    """'keras_egemma', 'keras_hub' or 'huggingface', from config.json."""
    config = read_json(directory, "config.json")
    registered = config.get("registered_name", "")
    if registered.startswith("keras_egemma>"):
        return "keras_egemma"
    if registered == KERAS_HUB_CLASS:
        return "keras_hub"
    if "model_type" in config:
        return "huggingface"
    raise CheckpointError(
        f"{directory}/config.json is neither a keras_egemma preset, a KerasHub "
        f"Gemma3Backbone preset, nor a Hugging Face config (registered_name="
        f"{registered!r})."
    )


def _load_weights_file(load, path):
    """Runs `load(path)`, turning Keras's errors into one naming the tensor."""
    try:
        load(path)
    except ValueError as e:
        mismatch = _keras_compat.weights_shape_mismatch(e)
        detail = (
            "variable {} needs shape ({}) but the file holds ({})".format(*mismatch)
            if mismatch
            else str(e).splitlines()[0]
        )
        raise CheckpointError(
            f"{path} does not fit the model that task.json describes: {detail}. The "
            "weights and task.json come from different models; save the preset "
            "again with `save_to_preset`."
        ) from None


def _load_own_preset(cls, directory, load_weights, dtype, **kwargs):
    for name in OWN_PRESET_FILES + (("model.weights.h5", "task.weights.h5") if load_weights else ()):
        if not os.path.isfile(os.path.join(directory, name)):
            raise CheckpointError(
                f"{name} is missing from the preset {directory}. Save it again "
                "with `save_to_preset`."
            )
    if load_weights:
        for name in ("model.weights.h5", "task.weights.h5"):
            path = os.path.join(directory, name)
            try:
                with h5py.File(path, "r"):
                    pass
            except OSError as e:
                raise CheckpointError(
                    f"{path} is truncated or corrupted ({e}). Save the preset "
                    "again or copy it anew."
                ) from None
    try:
        with open(os.path.join(directory, "task.json"), encoding="utf-8") as f:
            json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{directory}/task.json is corrupted ({e}).") from None
    # With weights to read, variables get no random initial values first.
    build_scope = deferred_variables() if load_weights else contextlib.nullcontext([])
    try:
        # Keras deserialises in safe mode: a config that would run Python
        # code (a Lambda layer's bytecode) is refused here.
        with build_scope as pending:
            # Compiled afterwards: the optimizer's variables need values now.
            model = cls._from_keras_preset(
                directory, load_weights=False, dtype=dtype, compile=False, **kwargs
            )
    except (ValueError, TypeError) as e:
        raise CheckpointError(
            f"{directory}/task.json does not describe a model this library can "
            f"build safely: {e}"
        ) from None
    check_vocabulary_fits(
        model.preprocessor.tokenizer.vocabulary_size(),
        model.backbone.vocabulary_size,
        f"{directory}: assets/tokenizer/vocabulary.spm",
        "task.json's vocabulary_size",
    )
    if load_weights:
        # Weights are loaded here rather than by KerasHub so that an error
        # names the file it comes from.
        # Each variable's first value becomes its buffer; the arrays are read
        # aligned (large ones mapped from the file where the backend adopts a
        # mapped array) so that adopting needs no copy.
        with filling_deferred_variables(), zero_copy_weight_files(), int4_weights_left_packed():
            _load_weights_file(
                model.load_task_weights, os.path.join(directory, "task.weights.h5")
            )
            _load_weights_file(
                model.backbone.load_weights, os.path.join(directory, "model.weights.h5")
            )
        missing = unassigned(pending)
        if missing:
            raise CheckpointError(
                f"The weights files of {directory} hold no value for {', '.join(missing)}. "
                "Save the preset again with `save_to_preset`."
            )
    model.compile()
    return model


def load_embedding_gemma(cls, preset, load_weights=True, dtype=None, **kwargs):
    """Loads `cls` (an `EmbeddingGemma` class) from any supported preset."""
    directory = resolve_directory(preset)
    fmt = detect_format(directory)
    if fmt == "keras_egemma":
        return _load_own_preset(cls, directory, load_weights, dtype, **kwargs)
    if fmt == "keras_hub":
        loader = load_keras_hub_preset
    elif read_json(directory, "config.json").get("model_type") in EMBEDDING_GEMMA2_TYPES:
        loader = load_embedding_gemma2_checkpoint
    else:
        loader = load_huggingface_checkpoint
    return loader(cls, directory, load_weights=load_weights, dtype=dtype, **kwargs)
