"""Loading runs no code from a downloaded file and fails loudly on a bad one.

Bad inputs tried, and what each gets (every failure is a `CheckpointError`,
so `from_preset` returns no model at all, never a partly loaded one):

| input | what happens |
|---|---|
| Hugging Face folder with only `pytorch_model.bin` (a pickle that would run code) | refused, naming the file and how to convert it; never unpickled |
| the same pickle beside `model.safetensors` | ignored; the safetensors weights load |
| a `2_Dense/` folder with only pickled weights | refused, naming the folder |
| sharded pickles (`pytorch_model.bin.index.json` + `pytorch_model-0000i-of-0000n.bin`) | refused, naming the shards; never unpickled |
| a `model.safetensors.index.json` that lists `.bin` shards | refused before any shard is opened |
| our preset whose `task.json` holds a Lambda layer (Python bytecode) | refused by Keras safe mode, never run |
| our preset whose `model.weights.h5` is a pickle | "truncated or corrupted", naming the file |
| our preset whose `task.json` config disagrees with its weights | names the weights file, the variable and both shapes |
| our preset or a KerasHub preset whose tokenizer has more tokens than the embedding table | names the tokenizer file and both sizes |
| a misspelt registered name | lists the names, suggests the closest, says what to pass |

Truncated weights, missing files and Hugging Face shape mismatches are in
`tests/test_loading_errors.py` and `tests/test_model.py`.
"""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import reference_checkpoints as rc

import keras_egemma as eg

TEXTS = ["Which planet is known as the Red Planet?", "café 東京 🚀"]


class RunsCode:
    """Unpickling this creates `path`: proof that a pickle was executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_pickle(path, sentinel):
    with open(path, "wb") as f:
        pickle.dump(RunsCode(str(sentinel)), f)


@pytest.fixture()
def own_preset(tmp_path):
    path = tmp_path / "preset"
    shutil.copytree(os.path.dirname(eg.presets.PRESETS["embeddinggemma_tiny"]["path"] + "/"),
                    path)
    return path


def edit_task_json(path, edit):
    task = json.loads((path / "task.json").read_text())
    edit(task["config"])
    (path / "task.json").write_text(json.dumps(task))


def test_pickled_weights_are_refused_and_never_unpickled(st_checkpoint, tmp_path):
    sentinel = tmp_path / "pickle_ran"
    path = tmp_path / "ckpt"
    shutil.copytree(st_checkpoint, path)
    write_pickle(path / "pytorch_model.bin", sentinel)
    # Beside safetensors: ignored.
    model = eg.EmbeddingGemma.from_preset(str(path))
    np.testing.assert_allclose(
        model.encode_query(TEXTS), rc.reference_embeddings(st_checkpoint, TEXTS), atol=1e-5
    )
    # Alone: refused with the way out.
    os.remove(path / "model.safetensors")
    with pytest.raises(eg.CheckpointError,
                       match=r"(?s)only pickled weights \(pytorch_model\.bin\).*never loaded.*"
                             r"safetensors"):
        eg.EmbeddingGemma.from_preset(str(path))
    shutil.copy(st_checkpoint + "/model.safetensors", path / "model.safetensors")
    os.remove(path / "2_Dense" / "model.safetensors")
    write_pickle(path / "2_Dense" / "pytorch_model.bin", sentinel)
    with pytest.raises(eg.CheckpointError, match=r"2_Dense/model\.safetensors is missing.*pickled"):
        eg.EmbeddingGemma.from_preset(str(path))
    assert not sentinel.exists()


def test_sharded_pickled_weights_are_refused_and_never_unpickled(st_checkpoint, tmp_path):
    sentinel = tmp_path / "pickle_ran"
    path = tmp_path / "ckpt"
    shutil.copytree(st_checkpoint, path)
    os.remove(path / "model.safetensors")
    # What save_pretrained(safe_serialization=False) writes for a large model.
    shards = [f"pytorch_model-0000{i}-of-00002.bin" for i in (1, 2)]
    for shard in shards:
        write_pickle(path / shard, sentinel)
    (path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {"norm.weight": shards[0], "embed_tokens.weight": shards[1]}})
    )
    with pytest.raises(
        eg.CheckpointError,
        match=r"(?s)only pickled weights \(pytorch_model-00001-of-00002\.bin, "
              r"pytorch_model-00002-of-00002\.bin\).*never loaded",
    ):
        eg.EmbeddingGemma.from_preset(str(path))
    # A safetensors index that lists pickled shards: refused before any is opened.
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"norm.weight": shards[0]}})
    )
    with pytest.raises(
        eg.CheckpointError,
        match=r"lists the shard 'pytorch_model-00001-of-00002\.bin', which is not a "
              r"\.safetensors file.*only safetensors shards",
    ):
        eg.EmbeddingGemma.from_preset(str(path))
    assert not sentinel.exists()


def test_code_in_a_preset_config_is_never_run(own_preset, tmp_path):
    import keras

    sentinel = tmp_path / "lambda_ran"
    # The path is a constant in the lambda's bytecode, which Keras marshals.
    layer = keras.layers.Lambda(eval(f"lambda x: open({str(sentinel)!r}, 'w')"))
    edit_task_json(own_preset, lambda c: c.update(backbone=keras.saving.serialize_keras_object(layer)))
    with pytest.raises(eg.CheckpointError, match=r"(?s)task\.json does not describe.*Lambda"):
        eg.EmbeddingGemma.from_preset(str(own_preset))
    assert not sentinel.exists()


def test_safe_mode_is_never_turned_off():
    root = os.path.dirname(eg.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                source = open(os.path.join(folder, name), encoding="utf-8").read()
                for needle in ("safe_mode=False", "enable_unsafe_deserialization", "pickle.load",
                               "torch.load(", "allow_pickle=True"):
                    assert needle not in source, (name, needle)


def test_pickle_in_place_of_preset_weights(own_preset, tmp_path):
    sentinel = tmp_path / "pickle_ran"
    write_pickle(own_preset / "model.weights.h5", sentinel)
    with pytest.raises(eg.CheckpointError, match="model.weights.h5 is truncated or corrupted"):
        eg.EmbeddingGemma.from_preset(str(own_preset))
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c["backbone"]["config"].update(intermediate_dim=100),
         r"model\.weights\.h5 does not fit the model that task\.json describes: variable "
         r"encoder_block_0/ffw_gating/kernel needs shape \(128, 100\) but the file holds "
         r"\(128, 256\).*save_to_preset"),
        (lambda c: c.update(projection_units=[256, 128]),
         r"task\.weights\.h5 does not fit.*projection_head/dense_0/kernel needs shape "
         r"\(128, 256\) but the file holds \(128, 512\)"),
        (lambda c: c["backbone"]["config"].update(vocabulary_size=1000),
         r"tokenizer has 2048 tokens \(.*vocabulary\.spm\) but the embedding table has only "
         r"1000 rows \(task\.json's vocabulary_size\).*Use the tokenizer saved with"),
    ],
    ids=["backbone-shape", "head-shape", "vocabulary"],
)
def test_preset_config_that_does_not_fit_its_files(own_preset, edit, match):
    edit_task_json(own_preset, edit)
    with pytest.raises(eg.CheckpointError, match=match):
        eg.EmbeddingGemma.from_preset(str(own_preset))


def test_misspelt_preset_name():
    with pytest.raises(
        ValueError,
        match=r"(?s)Unknown preset 'embeddinggemma-tiny'.*embeddinggemma_300m.*"
              r"Did you mean 'embeddinggemma_tiny'\?.*Pass a registered name",
    ):
        eg.EmbeddingGemma.from_preset("embeddinggemma-tiny")


def test_keras_hub_preset_with_a_larger_tokenizer(keras_hub_pair, tmp_path):
    path = tmp_path / "kh"
    shutil.copytree(keras_hub_pair[0], path)
    config = json.loads((path / "config.json").read_text())
    config["config"]["vocabulary_size"] = 100
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        eg.CheckpointError,
        match=r"tokenizer has 1024 tokens \(.*vocabulary\.spm\) but the embedding table has "
              r"only 100 rows \(config\.json vocabulary_size\)",
    ):
        eg.EmbeddingGemma.from_preset(str(path))
