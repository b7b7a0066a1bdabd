"""Tiny, offline EmbeddingGemma 2 checkpoints built with transformers, and their oracles.

``build_embedding_gemma2_checkpoint(out_dir, spm_path=...)`` saves a random
``EmbeddingGemma2TextModel`` (``save_pretrained``) wrapped by sentence-transformers as
Transformer -> Pooling(mean) -> Normalize, with the tokenizer of ``reference_checkpoints``.
The defaults make every feature of the architecture move the output: 4 layers (sliding,
full, sliding, full), a sliding radius of 3 (so 20+-token texts are cut by the window),
sliding heads of 8 with 2 key/value heads against global heads of 16 with 1, a PLE width
(16) other than the hidden size (32), an embedding projection to 24. Weights: every tensor
from ``reference_checkpoints._random_array`` (seeded by name), with 1 added to every
1-D tensor (Gemma 4 norms multiply by their weight, and ``layer_scalar`` scales the block),
so norms are ~N(1, 0.1).

``multimodal=True`` saves the composite ``EmbeddingGemma2Model`` instead (its text
weights under ``language_model.``), with a tiny Gemma 4 vision tower that loaders must skip.

``reference_embeddings`` (sentence-transformers) and ``reference_hidden_states`` (each
encoder layer's output, the final normed state) load the model with the eager attention.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

import numpy as np
import reference_checkpoints as rc
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize
from sentence_transformers.sentence_transformer.modules import Pooling
from sentence_transformers.sentence_transformer.modules import Transformer
from transformers import EmbeddingGemma2Config
from transformers import EmbeddingGemma2Model
from transformers import EmbeddingGemma2TextConfig
from transformers import EmbeddingGemma2TextModel
from transformers import GemmaTokenizer

LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: ",
           "STS": "task: sentence similarity | query: "}


def text_config(vocab_size: int, **overrides) -> EmbeddingGemma2TextConfig:
    values = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=48,
        num_hidden_layers=len(LAYER_TYPES), layer_types=list(LAYER_TYPES),
        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        global_head_dim=16, num_global_key_value_heads=1,
        sliding_window=3, hidden_size_per_layer_input=16, embedding_dim=24,
        pad_token_id=rc.PAD_ID, eos_token_id=rc.EOS_ID, bos_token_id=rc.BOS_ID,
    )
    values.update(overrides)
    return EmbeddingGemma2TextConfig(**values)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    state = {}
    for name, tensor in model.state_dict().items():
        value = rc._random_array(name, tensor.shape, seed)
        state[name] = torch.from_numpy(value + 1.0 if value.ndim == 1 else value)
    model.load_state_dict(state, strict=True)
    return model


def build_embedding_gemma2_checkpoint(
    out_dir: str, *, spm_path: str, seed: int = 0, multimodal: bool = False,
    max_seq_length: int = 256, vocab_size: int | None = None, **overrides,
) -> str:
    """The sentence-transformers folder described in the module docstring; returns it.
    ``vocab_size`` (default: the tokenizer's) sizes the embedding table."""
    with tempfile.TemporaryDirectory() as stage:
        shutil.copyfile(spm_path, os.path.join(stage, "tokenizer.model"))
        import sentencepiece

        pieces = sentencepiece.SentencePieceProcessor(model_file=spm_path).get_piece_size()
        config = text_config(vocab_size or pieces, **overrides)
        randomize(EmbeddingGemma2TextModel(config), seed).save_pretrained(stage)
        tokenizer = GemmaTokenizer.from_pretrained(
            stage, add_bos_token=True, add_eos_token=True, padding_side="right"
        )
        tokenizer.save_pretrained(stage)
        model = SentenceTransformer(
            modules=[
                Transformer(stage, max_seq_length=max_seq_length),
                Pooling(config.embedding_dim, pooling_mode="mean", include_prompt=True),
                Normalize(),
            ],
            prompts=dict(PROMPTS),
            similarity_fn_name="cosine",
            device="cpu",
        )
        model.save(out_dir)
        shutil.copyfile(spm_path, os.path.join(out_dir, "tokenizer.model"))
    if multimodal:
        _make_multimodal(out_dir, config, seed)
    return out_dir


def _make_multimodal(out_dir: str, config: EmbeddingGemma2TextConfig, seed: int) -> None:
    """Replaces the text model by the composite model with a tiny vision tower."""
    vision = dict(
        model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, global_head_dim=8,
    )
    composite = EmbeddingGemma2Model(
        EmbeddingGemma2Config(text_config=config.to_dict(), vision_config=vision)
    )
    composite.language_model.load_state_dict(
        EmbeddingGemma2TextModel.from_pretrained(out_dir).state_dict()
    )
    for name in os.listdir(out_dir):
        if name.startswith("model") and name.endswith((".safetensors", ".json")):
            os.remove(os.path.join(out_dir, name))
    composite.save_pretrained(out_dir)


@functools.lru_cache(maxsize=4)
def _sentence_transformer(st_dir: str, stamp: int) -> SentenceTransformer:
    model = SentenceTransformer(
        st_dir, device="cpu", local_files_only=True, model_kwargs={"attn_implementation": "eager"}
    )
    return model.eval()


def sentence_transformer(st_dir: str) -> SentenceTransformer:
    st_dir = os.fspath(st_dir)
    return _sentence_transformer(st_dir, os.stat(os.path.join(st_dir, "config.json")).st_mtime_ns)


def reference_embeddings(st_dir: str, texts, *, prompt_name: str | None = None) -> np.ndarray:
    model = sentence_transformer(st_dir)
    return np.asarray(
        model.encode(list(texts), prompt_name=prompt_name, convert_to_numpy=True), np.float32
    )


def reference_hidden_states(st_dir: str, texts) -> dict[str, np.ndarray]:
    """Token ids, mask, every encoder layer's output ``[layers, batch, seq, hidden]`` and
    the token embeddings (after the final norm and the embedding projection)."""
    model = sentence_transformer(st_dir)
    tokenizer, text_model = model.tokenizer, model[0].auto_model
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    captured = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o))
        for layer in text_model.layers
    ]
    try:
        with torch.no_grad():
            out = text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for hook in hooks:
            hook.remove()
    return {
        "input_ids": batch["input_ids"].numpy(),
        "attention_mask": batch["attention_mask"].numpy(),
        "hidden_states": torch.stack(captured).numpy(),
        "token_embeddings": out.last_hidden_state.numpy(),
    }
