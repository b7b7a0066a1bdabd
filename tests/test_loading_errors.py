"""Loading: handles, registered names, tokenizer.json-only folders, and every
way a checkpoint can be broken (each must fail with a message naming it)."""

import json
import os
import shutil

import numpy as np
import pytest
import reference_checkpoints as rc

import keras_egemma as eg
from keras_egemma.io import preset_loading as loading

TEXTS = ["Which planet is known as the Red Planet?", "café 東京 🚀 12345   spaces"]


def copy(src, tmp_path, name="ckpt"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def edit_json(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_registered_name_tries_kaggle_then_hugging_face(monkeypatch, st_checkpoint):
    calls = []

    def no_kaggle(handle):
        calls.append(("kaggle", handle))
        raise ConnectionError("no network")

    monkeypatch.setattr(loading, "download_kaggle", no_kaggle)
    monkeypatch.setattr(loading, "download_hf", lambda r: calls.append(("hf", r)) or st_checkpoint)
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_300m")
    assert calls == [("kaggle", "keras/embeddinggemma/keras/embedding_gemma3_300m/2"),
                     ("hf", "google/embeddinggemma-300m")]
    np.testing.assert_allclose(
        model.encode_query(TEXTS), rc.reference_embeddings(st_checkpoint, TEXTS), atol=1e-5
    )


def test_registered_name_reports_every_failed_source(monkeypatch):
    def fail(handle):
        raise ConnectionError("no network")

    monkeypatch.setattr(loading, "download_kaggle", fail)
    monkeypatch.setattr(loading, "download_hf", fail)
    with pytest.raises(eg.CheckpointError, match="(?s)kaggle://.*hf://google.*Gemma terms"):
        eg.EmbeddingGemma.from_preset("embeddinggemma_300m")


def test_hf_handle_downloads_only_safe_files(monkeypatch, st_checkpoint):
    seen = {}

    def fake_snapshot_download(repo_id, allow_patterns):
        seen.update(repo_id=repo_id, patterns=allow_patterns)
        return st_checkpoint

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    eg.EmbeddingGemma.from_preset("hf://google/embeddinggemma-300m")
    assert seen["repo_id"] == "google/embeddinggemma-300m"
    assert not any(p.endswith((".bin", ".pt", ".pth", ".pkl")) for p in seen["patterns"])


def test_tokenizer_json_only_folder(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    os.remove(path / "tokenizer.model")
    model = eg.EmbeddingGemma.from_preset(str(path))
    st = rc._sentence_transformer(st_checkpoint)
    samples = TEXTS + [
        "task: search result | query: Which planet?", "  leading and trailing  ",
        "tabs\tand\nnewlines", "ÀÉÎÕÜ ß ø 🤖🤖 ١٢٣ עברית", "x" * 50, "3.14159e-10",
    ]
    ours = model.preprocessor.tokenize_texts(samples)
    for text, ids in zip(samples, ours):
        assert ids == st.tokenizer(text)["input_ids"], text
    np.testing.assert_allclose(
        model.encode_query(TEXTS), rc.reference_embeddings(st_checkpoint, TEXTS), atol=1e-5
    )


def test_shape_mismatch_names_tensor_and_shapes(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    edit_json(path / "config.json", intermediate_size=80)
    with pytest.raises(
        eg.CheckpointError,
        match=r"'layers\.0\.mlp\.gate_proj\.weight'.*shape \(96, 72\).*needs \(80, 72\)",
    ):
        eg.EmbeddingGemma.from_preset(str(path))


def test_dense_shape_mismatch(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    shutil.copy(path / "2_Dense" / "model.safetensors", path / "3_Dense" / "model.safetensors")
    with pytest.raises(eg.CheckpointError, match=r"linear\.weight.*3_Dense.*\(288, 72\).*needs \(72, 288\)"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_truncated_safetensors(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(eg.CheckpointError, match="model.safetensors is truncated"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_garbage_safetensors(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(eg.CheckpointError, match="corrupted safetensors header"):
        eg.EmbeddingGemma.from_preset(str(path))


@pytest.fixture(scope="module")
def sharded_checkpoint(st_checkpoint, tmp_path_factory):
    """`st_checkpoint` with `model.safetensors` re-saved by transformers in
    shards of at most 100 KB (the embedding table and MLP matrices alone)."""
    from transformers import Gemma3TextModel

    path = tmp_path_factory.mktemp("sharded") / "ckpt"
    shutil.copytree(st_checkpoint, path)
    os.remove(path / "model.safetensors")
    stage = path.parent / "stage"
    Gemma3TextModel.from_pretrained(st_checkpoint).save_pretrained(stage, max_shard_size="100KB")
    for name in os.listdir(stage):
        if name.endswith((".safetensors", ".index.json")):
            shutil.move(stage / name, path)
    return path


def read_index(path):
    return json.loads((path / "model.safetensors.index.json").read_text())


def write_index(path, index):
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def test_sharded_checkpoint_missing_a_shard(sharded_checkpoint, tmp_path):
    path = copy(sharded_checkpoint, tmp_path)
    shards = sorted(set(read_index(path)["weight_map"].values()))
    os.remove(path / shards[1])
    with pytest.raises(
        eg.CheckpointError,
        match=rf"1 of the {len(shards)} shards that .*model\.safetensors\.index\.json lists "
              rf"are missing from .*: {shards[1]}\. The download is incomplete; download the "
              "missing shards",
    ):
        eg.EmbeddingGemma.from_preset(str(path))


def test_sharded_checkpoint_tensor_absent_from_its_shard(sharded_checkpoint, tmp_path):
    path = copy(sharded_checkpoint, tmp_path)
    index = read_index(path)
    weight_map = index["weight_map"]
    wrong = next(s for s in sorted(set(weight_map.values())) if s != weight_map["norm.weight"])
    weight_map["norm.weight"] = wrong
    write_index(path, index)
    with pytest.raises(
        eg.CheckpointError,
        match=rf"Tensor 'norm\.weight' is listed in .*index\.json as stored in {wrong}, but "
              rf".*{wrong} does not hold it.*Download the checkpoint again",
    ):
        eg.EmbeddingGemma.from_preset(str(path))


def test_sharded_checkpoint_tensor_missing_from_index(sharded_checkpoint, tmp_path):
    path = copy(sharded_checkpoint, tmp_path)
    index = read_index(path)
    del index["weight_map"]["layers.2.mlp.up_proj.weight"]
    write_index(path, index)
    with pytest.raises(
        eg.CheckpointError,
        match=r"Tensor 'layers\.2\.mlp\.up_proj\.weight' is missing from "
              r".*model\.safetensors\.index\.json.*Download it again",
    ):
        eg.EmbeddingGemma.from_preset(str(path))


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"metadata": {}, "weight_map": {"norm.weight": "model-0', r"index\.json is not "
         r"valid JSON \(.*\)\. Download the checkpoint again"),
        ('{"metadata": {}}', r"index\.json has no weight_map"),
        ('[1, 2]', r"index\.json has no weight_map"),
        ('{"weight_map": {"norm.weight": "../model-00001-of-00002.safetensors"}}',
         r"lists the shard '\.\./model-00001-of-00002\.safetensors', which is not a "
         r"\.safetensors file in the index's folder"),
    ],
    ids=["truncated-json", "no-weight-map", "not-an-object", "shard-outside-folder"],
)
def test_sharded_checkpoint_broken_index(sharded_checkpoint, tmp_path, text, match):
    path = copy(sharded_checkpoint, tmp_path)
    (path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(eg.CheckpointError, match=match):
        eg.EmbeddingGemma.from_preset(str(path))


def test_sharded_checkpoint_truncated_shard(sharded_checkpoint, tmp_path):
    path = copy(sharded_checkpoint, tmp_path)
    shard = path / read_index(path)["weight_map"]["embed_tokens.weight"]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(eg.CheckpointError, match=rf"{shard.name} is truncated"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_pickled_weights_are_never_loaded(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    os.remove(path / "model.safetensors")
    (path / "pytorch_model.bin").write_bytes(b"\x80\x04not to be unpickled")
    with pytest.raises(eg.CheckpointError, match="model.safetensors"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_missing_dense_weights(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    os.remove(path / "2_Dense" / "model.safetensors")
    with pytest.raises(eg.CheckpointError, match="2_Dense/model.safetensors"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_missing_tokenizer(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    os.remove(path / "tokenizer.model")
    os.remove(path / "tokenizer.json")
    with pytest.raises(eg.CheckpointError, match="no tokenizer"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_tokenizer_larger_than_embedding_table(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    edit_json(path / "config.json", vocab_size=100)
    with pytest.raises(eg.CheckpointError, match="tokenizer has 1024 tokens.*only 100 rows"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_decoder_checkpoint_is_refused(st_checkpoint, tmp_path):
    path = copy(st_checkpoint, tmp_path)
    edit_json(path / "config.json", use_bidirectional_attention=False)
    with pytest.raises(eg.CheckpointError, match="decoder"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_unknown_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(eg.CheckpointError, match="neither a keras_egemma preset"):
        eg.EmbeddingGemma.from_preset(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(eg.CheckpointError, match="config.json is missing"):
        eg.EmbeddingGemma.from_preset(str(empty))


def test_load_weights_false_builds_architecture_only(st_checkpoint):
    model = eg.EmbeddingGemma.from_preset(st_checkpoint, load_weights=False)
    assert model.backbone.num_layers == 6
    assert model.encode_query(TEXTS).shape == (2, 72)
