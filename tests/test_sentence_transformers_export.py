"""`save_to_sentence_transformers` / `convert --to sentence-transformers`,
checked by the target's own runtime: sentence-transformers and transformers
load the folder offline and compute our embeddings; a Hugging Face folder
read here and written back has bit-identical tensors; what a folder cannot
express is refused with nothing written.

| case | expected |
|---|---|
| exported test checkpoint, custom prompt, Matryoshka | ST `encode_query` / `encode_document` / `encode(prompt_name, truncate_dim)` = ours to 1e-5 |
| a model changed by a few `fit` steps | same, and the model card records the training |
| first-token / last-token pooling | ST `cls` / `lasttoken` pooling = ours to 1e-5 |
| transformers `AutoModel` | a `Gemma3TextModel` giving our token embeddings to 1e-5 |
| HF folder -> here -> HF folder (published and native layouts) | every tensor bit-identical, tokenizer files equal transformers' |
| a bfloat16 model | bfloat16 tensors and `dtype`; sentence-transformers (bfloat16) within bfloat16 rounding; written again bit-identical |
| above `max_shard_size` | shards + index that sentence-transformers and `from_preset` read |
| existing non-empty folder, attention pooling, quantized model, failure mid-write, unknown `--to` | clear error; nothing written, no temporary folder left |
"""

import errno
import json
import os
import pathlib

import keras
import numpy as np
import pytest
import reference_checkpoints as rc
from sentence_transformers import SentenceTransformer

import keras_egemma as eg
from keras_egemma.cli import main
from keras_egemma.convert import sentence_transformers_folder
from keras_egemma.convert.huggingface import open_safetensors

# Longer than the window of 8 (so the sliding layers bind), different lengths.
TEXTS = [
    "Which planet is known as the Red Planet? Mars has a thin atmosphere and two small moons.",
    "short text",
    "A dictionary maps keys to values; lookups, insertions and deletions take constant time.",
    "Numbers 12345 and 3.14159, unicode café naïve 東京, emoji 🚀 and   extra   spaces.",
]
CUSTOM = ("my support search", "task: support ticket | query: ")
ATOL = 1e-5


def load_st(folder):
    return SentenceTransformer(
        str(folder), device="cpu", local_files_only=True,
        model_kwargs={"attn_implementation": "eager"},
    )


def assert_encodes_like(st, model):
    np.testing.assert_allclose(st.encode_query(TEXTS), model.encode_query(TEXTS), atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        st.encode_document(TEXTS), model.encode_document(TEXTS), atol=ATOL, rtol=0
    )
    for name in ("STS", "fact checking", CUSTOM[0]):
        # Matryoshka: truncate, then normalise again (our `dim=`).
        theirs = st.encode(TEXTS, prompt_name=name, truncate_dim=32, normalize_embeddings=True)
        np.testing.assert_allclose(theirs, model.encode(TEXTS, task=name, dim=32), atol=ATOL, rtol=0)


def hf_model(st_checkpoint):
    model = eg.EmbeddingGemma.from_preset(st_checkpoint)
    model.preprocessor.prompts[CUSTOM[0]] = CUSTOM[1]
    return model


@pytest.fixture(scope="module")
def exported(st_checkpoint, tmp_path_factory):
    model = hf_model(st_checkpoint)
    folder = tmp_path_factory.mktemp("export") / "st"
    model.save_to_sentence_transformers(str(folder))
    return model, folder


def test_sentence_transformers_encodes_like_us(exported):
    model, folder = exported
    st = load_st(folder)
    assert st.prompts[CUSTOM[0]] == CUSTOM[1]
    assert st.prompts["document"] == "title: none | text: "
    assert st.max_seq_length == 2048
    assert_encodes_like(st, model)


def test_fine_tuned_model_exports_and_its_card_says_how(st_checkpoint, tmp_path):
    import test_training

    model = hf_model(st_checkpoint)
    before = model.encode_query(TEXTS)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), mrl_dims=(64, 32))
    model.fit(test_training.synthetic_retrieval(24, seed=5), batch_size=8, epochs=1,
              sequence_length=24, verbose=0)
    assert np.abs(model.encode_query(TEXTS) - before).max() > 1e-2
    model.save_to_sentence_transformers(
        str(tmp_path / "tuned"), training_data="24 synthetic (query, passage) pairs",
        evaluation={"sts": {"spearman": 0.5}},
    )
    assert_encodes_like(load_st(tmp_path / "tuned"), model)
    card = (tmp_path / "tuned" / "README.md").read_text()
    for expected in ("24 synthetic (query, passage) pairs", "temperature 0.05", "Adam",
                     "learning rate 0.001", "Epochs: 1, steps per epoch: 3",
                     "Matryoshka sizes: 72, 64, 32", "| sts / spearman | 0.5000 |",
                     "license: gemma", "Gemma Terms of Use", "task: support ticket \\| query: "):
        assert expected in card, expected


@pytest.mark.parametrize("pooling", ["first", "last"])
def test_token_poolings_map_to_sentence_transformers_modes(exported, pooling, tmp_path):
    source, _ = exported
    model = eg.EmbeddingGemma(
        backbone=source.backbone, preprocessor=source.preprocessor, pooling=pooling,
        projection_units=source.projection_units,
    )
    for theirs, ours in zip(source.projection_head.dense_layers, model.projection_head.dense_layers):
        ours.kernel.assign(theirs.kernel)
    model.save_to_sentence_transformers(str(tmp_path / pooling))
    st = load_st(tmp_path / pooling)
    np.testing.assert_allclose(st.encode_query(TEXTS), model.encode_query(TEXTS), atol=ATOL, rtol=0)
    assert not np.allclose(model.encode_query(TEXTS), source.encode_query(TEXTS), atol=1e-3)


def test_transformers_auto_model_loads_the_backbone(exported):
    import torch
    from transformers import AutoModel

    model, folder = exported
    auto = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    assert type(auto).__name__ == "Gemma3TextModel"
    assert auto.config.use_bidirectional_attention
    # transformers' own rewrite of the serialised window: |i - j| < 8 // 2 + 1.
    assert auto.config.sliding_window == 5
    ids = np.array([model.preprocessor.tokenize_texts(TEXTS[:1])[0]], "int32")
    mask = np.ones_like(ids)
    with torch.no_grad():
        theirs = auto(input_ids=torch.from_numpy(ids.astype("int64")),
                      attention_mask=torch.from_numpy(mask.astype("int64"))).last_hidden_state
    ours = keras.ops.convert_to_numpy(model.backbone({"token_ids": ids, "padding_mask": mask}))
    np.testing.assert_allclose(theirs.numpy(), ours, atol=ATOL, rtol=0)


def tensors(folder):
    """Every tensor of a folder: the transformer's and each Dense module's."""
    out = {}
    for sub in ("", "2_Dense", "3_Dense"):
        weights = open_safetensors(os.path.join(folder, sub))
        out.update({f"{sub}/{key}": np.asarray(weights.get(key)) for key in weights.keys()})
    return out


@pytest.mark.parametrize("layout", ["published", "native"])
def test_hugging_face_round_trip_is_bit_identical(layout, st_checkpoint, st_checkpoint_native,
                                                  tmp_path):
    source = st_checkpoint if layout == "published" else st_checkpoint_native
    eg.EmbeddingGemma.from_preset(source).save_to_sentence_transformers(str(tmp_path / "out"))
    ours, theirs = tensors(tmp_path / "out"), tensors(source)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].tobytes() == value.tobytes(), key
    for name in ("tokenizer.model", "tokenizer.json"):
        read = (lambda p: p.read_bytes()) if name.endswith(".model") else (
            lambda p: json.loads(p.read_text()))
        assert read(tmp_path / "out" / name) == read(pathlib.Path(source) / name), name
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    expected = json.loads(open(os.path.join(source, "config.json")).read())
    for key in ("layer_types", "sliding_window", "query_pre_attn_scalar", "head_dim",
                "use_bidirectional_attention", "vocab_size", "rms_norm_eps"):
        assert config[key] == expected[key], key


def test_bfloat16_model_exports_bfloat16(st_checkpoint, tmp_path):
    model = eg.EmbeddingGemma.from_preset(st_checkpoint, dtype="bfloat16")
    model.save_to_sentence_transformers(str(tmp_path / "bf16"))
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    exported = tensors(tmp_path / "bf16")
    assert {str(v.dtype) for v in exported.values()} == {"bfloat16"}
    theirs, ours = load_st(tmp_path / "bf16").encode_query(TEXTS), model.encode_query(TEXTS)
    # Two bfloat16 computations of a random model, each about 4e-3 from float32.
    assert np.min(np.sum(theirs * ours, axis=1)) > 0.995
    again = tmp_path / "again"
    eg.EmbeddingGemma.from_preset(str(tmp_path / "bf16"), dtype="bfloat16") \
        .save_to_sentence_transformers(str(again))
    for key, value in tensors(again).items():
        assert value.tobytes() == exported[key].tobytes(), key


def test_sharded_weights_load_everywhere(exported, tmp_path):
    model, _ = exported
    model.save_to_sentence_transformers(str(tmp_path / "sharded"), max_shard_size=0.0003)
    files = sorted(os.listdir(tmp_path / "sharded"))
    shards = [f for f in files if f.startswith("model-0")]
    assert len(shards) > 1 and "model.safetensors" not in files
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert_encodes_like(load_st(tmp_path / "sharded"), model)
    reloaded = eg.EmbeddingGemma.from_preset(str(tmp_path / "sharded"))
    np.testing.assert_array_equal(reloaded.encode_query(TEXTS), model.encode_query(TEXTS))


def test_cli_convert_to_sentence_transformers(st_checkpoint, tmp_path, capsys):
    dest = tmp_path / "st"
    assert main(["convert", st_checkpoint, str(dest), "--to", "sentence-transformers"]) == 0
    assert "as a sentence-transformers folder" in capsys.readouterr().out
    np.testing.assert_allclose(
        load_st(dest).encode_query(TEXTS),
        rc.reference_embeddings(st_checkpoint, TEXTS, kind="query"), atol=ATOL, rtol=0,
    )
    # Writing again over our own folder replaces it.
    assert main(["convert", st_checkpoint, str(dest), "--to", "sentence-transformers"]) == 0


def test_cli_refuses_an_unknown_target(st_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["convert", st_checkpoint, str(tmp_path / "x"), "--to", "onnx-folder"])
    assert "invalid choice: 'onnx-folder'" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def refused(model, folder, match):
    before = sorted(os.listdir(folder.parent))
    with pytest.raises(ValueError, match=match):
        model.save_to_sentence_transformers(str(folder))
    assert sorted(os.listdir(folder.parent)) == before


def test_refusals_leave_nothing_written(exported, st_checkpoint, tmp_path):
    model, _ = exported
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused(model, mine, "exists and is not a sentence-transformers folder written by")
    assert os.listdir(mine) == ["notes.txt"]

    attention = eg.EmbeddingGemma(
        backbone=model.backbone, preprocessor=model.preprocessor, pooling="attention",
        projection_units=model.projection_units,
    )
    refused(attention, tmp_path / "attention", "cannot express")

    quantized = eg.EmbeddingGemma.from_preset(st_checkpoint)
    quantized.quantize("int8")
    refused(quantized, tmp_path / "quantized", "is quantized")


def test_a_failure_mid_write_leaves_nothing(exported, tmp_path, monkeypatch):
    model, _ = exported
    real = sentence_transformers_folder.write_safetensors_file

    def disk_full(path, entries):
        if "Dense" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, entries)

    monkeypatch.setattr(sentence_transformers_folder, "write_safetensors_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.save_to_sentence_transformers(str(tmp_path / "full"))
    assert os.listdir(tmp_path) == []
