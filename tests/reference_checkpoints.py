"""Small, offline, deterministic checkpoints in the layouts EmbeddingGemma is published in.

The published ``google/embeddinggemma-300m`` weights live on Hugging Face (safetensors plus
sentence-transformers module folders) and on Kaggle (a KerasHub ``Gemma3Backbone`` preset).
Neither can be downloaded here, so this module builds tiny checkpoints with the same file
layouts, random weights and a tiny Gemma-style SentencePiece vocabulary, and exposes the
public reference implementations (``sentence-transformers``/``transformers`` and KerasHub) as
numerical oracles on them. Plain functions only; a ``conftest.py`` wraps them in fixtures.

Builders
--------
``train_sentencepiece(out_dir)``
    Trains ``tokenizer.model``: BPE, byte fallback, identity normaliser, no dummy prefix, extra
    whitespace kept (as ``▁`` pieces, whitespace-only pieces allowed), digits split, ids
    ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3 and the user-defined symbols
    ``<mask>`` 4, ``<start_of_image>`` 5, ``<img>`` 6, ``<end_of_image>`` 7. These are the
    trainer/normaliser settings of the Gemma 3 SentencePiece model; the three image tokens are
    in the real vocabulary too (at other ids), and KerasHub's ``Gemma3Tokenizer`` refuses a
    proto without them unless it is built with ``has_vision_tokens=False``. The corpus is
    Python's own documentation (``pydoc_data.topics``, shipped with CPython) plus a few lines
    written here, so the vocabulary is fixed for a given CPython release.

``build_sentence_transformers_checkpoint(out_dir)``
    A ``Gemma3TextModel`` (bidirectional, tanh-GELU, RoPE 1e6 on full / 1e4 on sliding layers)
    wrapped as Transformer -> Pooling(mean, prompt included) -> Dense -> Dense -> Normalize,
    with the published prompt dictionary, saved by ``SentenceTransformer.save``. Folder::

        config.json  model.safetensors  tokenizer.model  tokenizer.json  tokenizer_config.json
        modules.json  sentence_bert_config.json  config_sentence_transformers.json  README.md
        1_Pooling/config.json
        2_Dense/config.json  2_Dense/model.safetensors      (linear.weight [out, in])
        3_Dense/config.json  3_Dense/model.safetensors

    With ``layout="published"`` (the default) the JSON files that the installed libraries
    (transformers 5.x, sentence-transformers 6.x) write in a newer dialect are rewritten in the
    dialect of the published repository (transformers 4.57 / sentence-transformers 5.1):
    ``config.json`` spells the RoPE bases ``rope_theta`` (full layers) and
    ``rope_local_base_freq`` (sliding layers) with ``rope_scaling: null`` instead of
    transformers 5's per-layer-type ``rope_parameters``, and has ``use_cache: true`` (which
    sentence-transformers 6 turns off when saving); ``modules.json`` names the modules
    ``sentence_transformers.models.*``; ``sentence_bert_config.json`` is
    ``{"max_seq_length": ..., "do_lower_case": false}``; ``1_Pooling/config.json`` uses the
    ``word_embedding_dimension`` / ``pooling_mode_*_tokens`` keys; the Dense configs hold only
    ``in_features``, ``out_features``, ``bias`` and ``activation_function``; and there is no
    ``4_Normalize`` folder (the hub drops empty folders). ``layout="native"`` keeps what the
    installed libraries write (``rope_parameters``, ``pooling_mode: "mean"`` ...). Both reload
    with ``SentenceTransformer(out_dir)`` to the same network.

``build_keras_hub_embedding_preset(out_dir, spm_path=...)``
    A ``Gemma3Backbone(is_embedding_model=True, use_bidirectional_attention=True, ...)`` plus a
    ``Gemma3Tokenizer`` (``has_vision_tokens=True``) saved with ``save_to_preset``: what
    KerasHub's conversion script for ``embedding_gemma3_300m``
    (``tools/checkpoint_conversion``) saves, i.e. backbone and tokenizer but no task or
    preprocessor, with ``image_size=None``, ``vision_encoder=None``, ``dtype="float32"``,
    ``query_head_dim_normalize=True``. Folder::

        config.json  metadata.json  model.weights.h5  tokenizer.json
        assets/tokenizer/vocabulary.spm

Both model builders draw every tensor from a generator seeded by ``(seed, tensor name)``, using
the Hugging Face tensor names, so **the same seed and the same dimensions give the same
weights in both layouts** (the KerasHub builder converts the Hugging Face tensors with the
mapping of ``keras_hub/src/utils/transformers/convert_gemma3.py``). Weights: matrices (and the
embedding table) ~ N(0, 1/fan_in), so activations are O(1) and the tanh-GELU, RoPE and scale
choices all move the output; every RMSNorm weight (block norms, q_norm, k_norm, final norm)
~ N(0, 0.1). Two KerasHub 0.32 behaviours matter when comparing the layouts:

* KerasHub always scales attention scores by ``head_dim ** -0.5``: ``Gemma3DecoderBlock``
  passes ``query_head_dim_normalize=True`` to its attention layer whatever the backbone's
  ``query_head_dim_normalize`` says (``False`` would mean ``(hidden_dim // num_query_heads)
  ** -0.5`` but is silently ignored). So a KerasHub preset is the network of a Hugging Face
  checkpoint with ``query_pre_attn_scalar == head_dim``, as in the published model (256 and
  256). The Hugging Face builder's default ``query_pre_attn_scalar`` (24) differs from its
  ``head_dim`` (32) on purpose, to catch the wrong scale; for a cross-layout pair build it
  with ``query_pre_attn_scalar=head_dim``. The KerasHub builder keeps the published
  ``query_head_dim_normalize=True``.
* KerasHub fixes the layer pattern to ``i % 6 < 5`` -> sliding, and its bidirectional sliding
  window is asymmetric: ``sliding_window // 2`` tokens on one side and
  ``sliding_window - sliding_window // 2 - 1`` on the other, against the reference's
  ``|i - j| <= sliding_window // 2``. KerasHub's own outputs therefore equal the reference
  only for sequences of at most ``sliding_window // 2`` tokens (bos and eos included), i.e. 4
  tokens with the default window 8. A KerasHub preset loaded by our library must give the
  reference numbers at every length.

Transformers 5 rejects ``hidden_size % num_attention_heads != 0``, so hidden 64 with 3 heads is
not a valid Gemma3TextConfig; 72 is the smallest convenient size with 3 heads.

Tokenizer parity
----------------
The Hugging Face tokenizer is transformers' ``GemmaTokenizer`` (tokenizers backend, converted
from ``tokenizer.model``) with ``add_bos_token``/``add_eos_token`` and right padding, giving
``<bos> ... <eos>``. Its ids equal ``SentencePieceProcessor.encode(text)`` on all 8.7k lines of
the corpus and on 20k random strings over ASCII, whitespace runs, tabs, CR/LF, digits,
punctuation, accented and combining letters, CJK, Cyrillic, emoji, NBSP, ideographic and
zero-width spaces, a literal ``▁``, ligatures, full-width letters and the user-defined symbols
(leading/trailing/multiple spaces and the prompt strings included); so do KerasHub's. One
difference remains, the same as with the published tokenizer: a literal ``<pad>``, ``<eos>``,
``<bos>`` or ``<unk>`` inside the text is matched as that special token by the Hugging Face
tokenizer, while SentencePiece encodes it as ordinary characters (``<``, ``b``, ``os``, ...).
User-defined symbols (``<mask>``, the image tokens) are matched as single tokens by both.
KerasHub tokenizes with the same proto through TensorFlow Text's SentencePiece op.

Oracles
-------
``reference_embeddings`` (sentence-transformers, the prompts applied as published),
``reference_token_embeddings`` (``Gemma3TextModel`` token states, mask and optionally every
layer's output) and ``keras_hub_reference_embeddings`` (KerasHub's ``pooled_output`` with
``<bos>``/``<eos>`` added the way KerasHub's conversion script does). The two Hugging Face
oracles load the model with ``attn_implementation="eager"``, the plain matmul/softmax path; it
is not recorded in ``config.json`` (the published file records none).

A full-size network
-------------------
``published_gemma3_text_config(**overrides)`` returns a ``Gemma3TextConfig`` with exactly the
published values; ``published_gemma3_text_config(vocab_size=1024)`` keeps all of them but the
vocabulary. A random full-size checkpoint (106M parameters with a 1024-token vocabulary: about
15 s and 410 MB on two CPU cores) is::

    build_sentence_transformers_checkpoint(
        out_dir, num_layers=24, hidden_size=768, intermediate_size=1152, head_dim=256,
        query_pre_attn_scalar=256, sliding_window=512, projection_intermediate_dim=3072)

and a bare random model is ``randomize_weights(Gemma3TextModel(published_gemma3_text_config(
vocab_size=1024)), seed=0)``.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pydoc_data.topics
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import sentencepiece
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense
from sentence_transformers.sentence_transformer.modules import Normalize
from sentence_transformers.sentence_transformer.modules import Pooling
from sentence_transformers.sentence_transformer.modules import Transformer
from transformers import Gemma3TextConfig
from transformers import Gemma3TextModel
from transformers import GemmaTokenizer

# The prompt dictionary of google/embeddinggemma-300m's config_sentence_transformers.json.
PROMPTS: dict[str, str] = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "BitextMining": "task: search result | query: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "Reranking": "task: search result | query: ",
    "Retrieval": "task: search result | query: ",
    "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
USER_DEFINED_SYMBOLS = ("<mask>", "<start_of_image>", "<img>", "<end_of_image>")

# Lines added to the pydoc corpus so that prompts, numbers and some non-ASCII scripts get
# pieces of their own (anything else falls back to bytes).
_EXTRA_CORPUS = (
    *PROMPTS.values(),
    "task: question answering | query: ",
    "task: fact checking | query: ",
    "title: A short history of computing | text: The first computers filled whole rooms.",
    "Which planet is known as the Red Planet? Mars, the fourth planet from the Sun.",
    "In 1969, 2 astronauts walked on the Moon; 600 million people watched on TV.",
    "Le café est très bon, mais la crème brûlée est meilleure. Ça va très bien, merci.",
    "Die Straße ist lang und schön. Über den Bergen liegt Schnee.",
    "El niño comió una manzana. ¿Dónde está la estación?",
    "Москва — столица России. Привет, как дела?",
    "東京は日本の首都です。今日はいい天気ですね。",
    "机器学习是人工智能的一个分支。",
)

_SLIDING, _FULL = "sliding_attention", "full_attention"


def _published_layer_types(num_layers: int) -> list[str]:
    """The published pattern: five sliding-window layers, then one full-attention layer."""
    return [_FULL if i % 6 == 5 else _SLIDING for i in range(num_layers)]


def train_sentencepiece(out_dir: str, vocab_size: int = 1024) -> str:
    """Train a tiny Gemma-style SentencePiece BPE model; return the path of ``tokenizer.model``.

    Deterministic: single-threaded training on a fixed corpus without sampling or shuffling.
    """
    lines = [
        line
        for topic in sorted(pydoc_data.topics.topics)
        for line in pydoc_data.topics.topics[topic].splitlines()
        if line.strip()
    ]
    lines.extend(_EXTRA_CORPUS)
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=proto,
        model_type="bpe",
        vocab_size=vocab_size,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        bos_id=BOS_ID,
        unk_id=UNK_ID,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=list(USER_DEFINED_SYMBOLS),
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=1 << 16,
        num_threads=1,
        minloglevel=2,
    )
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(proto.getvalue())
    return path


def _random_array(name: str, shape: Sequence[int], seed: int) -> np.ndarray:
    """The value of tensor ``name``: N(0, 0.1) for norm weights (1-D), N(0, 1/fan_in) otherwise."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    std = 0.1 if len(shape) == 1 else shape[-1] ** -0.5
    return rng.normal(0.0, std, size=tuple(shape)).astype(np.float32)


def randomize_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every tensor of ``model``'s state dict with the deterministic random values
    this module uses (see the module docstring); return ``model``."""
    state = {
        name: torch.from_numpy(_random_array(name, tensor.shape, seed))
        for name, tensor in model.state_dict().items()
    }
    model.load_state_dict(state, strict=True)
    return model


def published_gemma3_text_config(**overrides) -> Gemma3TextConfig:
    """The ``Gemma3TextConfig`` of google/embeddinggemma-300m, with ``overrides`` applied.

    Changing ``num_hidden_layers`` without giving ``layer_types`` keeps the published pattern
    (layer ``i`` is full attention iff ``i % 6 == 5``).
    """
    values = dict(
        vocab_size=262144,
        hidden_size=768,
        intermediate_size=1152,
        num_hidden_layers=24,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        hidden_activation="gelu_pytorch_tanh",
        rope_parameters={
            _FULL: {"rope_type": "default", "rope_theta": 1_000_000.0},
            _SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
        },
        sliding_window=512,
        rms_norm_eps=1e-6,
        attn_logit_softcapping=None,
        final_logit_softcapping=None,
        max_position_embeddings=2048,
        use_bidirectional_attention=True,
        attention_bias=False,
        attention_dropout=0.0,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
    )
    values.update(overrides)
    if "layer_types" not in overrides:
        values["layer_types"] = _published_layer_types(values["num_hidden_layers"])
    return Gemma3TextConfig(**values)


def _hf_tensor_shapes(
    *,
    vocab_size: int,
    num_layers: int,
    hidden_size: int,
    intermediate_size: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    projection_intermediate_dim: int,
    embedding_dim: int,
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the Hugging Face tensors (``model.safetensors`` names, then the two
    Dense modules as ``2_Dense.linear.weight`` / ``3_Dense.linear.weight``)."""
    shapes = {"embed_tokens.weight": (vocab_size, hidden_size), "norm.weight": (hidden_size,)}
    for i in range(num_layers):
        p = f"layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (num_attention_heads * head_dim, hidden_size),
                p + "self_attn.k_proj.weight": (num_key_value_heads * head_dim, hidden_size),
                p + "self_attn.v_proj.weight": (num_key_value_heads * head_dim, hidden_size),
                p + "self_attn.o_proj.weight": (hidden_size, num_attention_heads * head_dim),
                p + "self_attn.q_norm.weight": (head_dim,),
                p + "self_attn.k_norm.weight": (head_dim,),
                p + "mlp.gate_proj.weight": (intermediate_size, hidden_size),
                p + "mlp.up_proj.weight": (intermediate_size, hidden_size),
                p + "mlp.down_proj.weight": (hidden_size, intermediate_size),
                p + "input_layernorm.weight": (hidden_size,),
                p + "post_attention_layernorm.weight": (hidden_size,),
                p + "pre_feedforward_layernorm.weight": (hidden_size,),
                p + "post_feedforward_layernorm.weight": (hidden_size,),
            }
        )
    shapes["2_Dense.linear.weight"] = (projection_intermediate_dim, hidden_size)
    shapes["3_Dense.linear.weight"] = (embedding_dim, projection_intermediate_dim)
    return shapes


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _finish_tokenizer_config(out_dir: str) -> None:
    """Record bos/eos addition explicitly (as the published file does) and drop the
    load-time bookkeeping transformers writes (the staging path of ``tokenizer.model``)."""
    path = os.path.join(out_dir, "tokenizer_config.json")
    config = _read_json(path)
    for key in ("vocab_file", "is_local", "local_files_only"):
        config.pop(key, None)
    config.update(add_bos_token=True, add_eos_token=True)
    _write_json(path, dict(sorted(config.items())))


def _rewrite_as_published(out_dir: str, *, max_seq_length: int) -> None:
    """Rewrite the JSON files in the dialect of the published repository (module docstring)."""
    config_path = os.path.join(out_dir, "config.json")
    config = _read_json(config_path)
    rope = config.pop("rope_parameters")
    config.update(
        rope_theta=rope[_FULL]["rope_theta"],
        rope_local_base_freq=rope[_SLIDING]["rope_theta"],
        rope_scaling=None,
        use_cache=True,
    )
    _write_json(config_path, dict(sorted(config.items())))

    modules_path = os.path.join(out_dir, "modules.json")
    modules = _read_json(modules_path)
    for module in modules:
        module["type"] = "sentence_transformers.models." + module["type"].rsplit(".", 1)[1]
    _write_json(modules_path, modules)
    shutil.rmtree(os.path.join(out_dir, "4_Normalize"))

    _write_json(
        os.path.join(out_dir, "sentence_bert_config.json"),
        {"max_seq_length": max_seq_length, "do_lower_case": False},
    )

    pooling_path = os.path.join(out_dir, "1_Pooling", "config.json")
    pooling = _read_json(pooling_path)
    _write_json(
        pooling_path,
        {
            "word_embedding_dimension": pooling["embedding_dimension"],
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": pooling["include_prompt"],
        },
    )

    for folder in ("2_Dense", "3_Dense"):
        dense_path = os.path.join(out_dir, folder, "config.json")
        dense = _read_json(dense_path)
        keys = ("in_features", "out_features", "bias", "activation_function")
        _write_json(dense_path, {key: dense[key] for key in keys})


def _random_dense(folder: str, in_features: int, out_features: int, seed: int) -> Dense:
    weight = _random_array(f"{folder}.linear.weight", (out_features, in_features), seed)
    return Dense(
        in_features,
        out_features,
        bias=False,
        activation_function=torch.nn.Identity(),
        init_weight=torch.from_numpy(weight),
    )


def build_sentence_transformers_checkpoint(
    out_dir: str,
    *,
    spm_path: str | None = None,
    num_layers: int = 6,
    hidden_size: int = 72,
    intermediate_size: int = 96,
    num_attention_heads: int = 3,
    num_key_value_heads: int = 1,
    head_dim: int = 32,
    query_pre_attn_scalar: int = 24,
    sliding_window: int = 8,
    layer_types: Sequence[str] | None = None,
    projection_intermediate_dim: int | None = None,
    embedding_dim: int | None = None,
    max_seq_length: int = 2048,
    seed: int = 0,
    layout: Literal["published", "native"] = "published",
    vocab_size: int | None = None,
) -> str:
    """Build a sentence-transformers folder laid out like google/embeddinggemma-300m.

    ``spm_path`` is the SentencePiece model to use (default: ``train_sentencepiece()``'s);
    ``layer_types`` defaults to the published pattern (full attention iff ``i % 6 == 5``,
    so 6 layers are 5 sliding + 1 full; with fewer than 6 layers all are sliding);
    ``projection_intermediate_dim`` and ``embedding_dim`` (the Dense heads, 3072 and 768 when
    published) default to ``4 * hidden_size`` and ``hidden_size``. ``sliding_window`` must be
    even (transformers serialises an odd window as the even one below it). ``vocab_size``
    (default: the tokenizer's) sizes the embedding table; 262144 gives the published parameter
    count with the small tokenizer, whose ids all fit. Returns ``out_dir``.
    """
    if sliding_window % 2:
        raise ValueError(f"sliding_window must be even, got {sliding_window}")
    projection_intermediate_dim = projection_intermediate_dim or 4 * hidden_size
    embedding_dim = embedding_dim or hidden_size
    with tempfile.TemporaryDirectory() as stage:
        if spm_path is None:
            spm_path = train_sentencepiece(stage)
        else:
            shutil.copyfile(spm_path, os.path.join(stage, "tokenizer.model"))
        pieces = sentencepiece.SentencePieceProcessor(model_file=spm_path).get_piece_size()
        vocab_size = vocab_size or pieces
        config = published_gemma3_text_config(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            query_pre_attn_scalar=query_pre_attn_scalar,
            sliding_window=sliding_window,
            **({} if layer_types is None else {"layer_types": list(layer_types)}),
        )
        randomize_weights(Gemma3TextModel(config), seed).save_pretrained(stage)
        tokenizer = GemmaTokenizer.from_pretrained(
            stage, add_bos_token=True, add_eos_token=True, padding_side="right"
        )
        tokenizer.save_pretrained(stage)

        model = SentenceTransformer(
            modules=[
                Transformer(stage, max_seq_length=max_seq_length),
                Pooling(hidden_size, pooling_mode="mean", include_prompt=True),
                _random_dense("2_Dense", hidden_size, projection_intermediate_dim, seed),
                _random_dense("3_Dense", projection_intermediate_dim, embedding_dim, seed),
                Normalize(),
            ],
            prompts=dict(PROMPTS),
            default_prompt_name=None,
            similarity_fn_name="cosine",
            device="cpu",
        )
        model.save(out_dir)
        shutil.copyfile(spm_path, os.path.join(out_dir, "tokenizer.model"))
    _finish_tokenizer_config(out_dir)
    if layout == "published":
        _rewrite_as_published(out_dir, max_seq_length=max_seq_length)
    return out_dir


def _modification_stamp(path: str) -> int:
    return os.stat(path).st_mtime_ns


@functools.lru_cache(maxsize=8)
def _load_sentence_transformer(st_dir: str, stamp: int) -> SentenceTransformer:
    # ``stamp`` only keys the cache, so a rebuilt folder is loaded again.
    model = SentenceTransformer(
        st_dir, device="cpu", local_files_only=True, model_kwargs={"attn_implementation": "eager"}
    )
    return model.eval()


def _sentence_transformer(st_dir: str) -> SentenceTransformer:
    """The folder's model, cached per path and weights-file modification time."""
    st_dir = os.fspath(st_dir)
    stamp = _modification_stamp(os.path.join(st_dir, "model.safetensors"))
    return _load_sentence_transformer(st_dir, stamp)


def reference_embeddings(
    st_dir: str, texts: Sequence[str], *, kind: str | None = "query"
) -> np.ndarray:
    """Sentence-transformers embeddings ``[len(texts), embedding_dim]`` (float32, unit norm).

    ``kind``: ``"query"`` (``encode_query``), ``"document"`` (``encode_document``), any other
    prompt name of ``PROMPTS`` (``encode(prompt_name=kind)``), or ``None`` for no prompt.
    """
    model = _sentence_transformer(st_dir)
    texts = list(texts)
    if kind == "query":
        embeddings = model.encode_query(texts, convert_to_numpy=True)
    elif kind == "document":
        embeddings = model.encode_document(texts, convert_to_numpy=True)
    else:
        embeddings = model.encode(texts, prompt_name=kind, convert_to_numpy=True)
    return np.asarray(embeddings, dtype=np.float32)


def reference_token_embeddings(
    st_dir: str, texts_with_prompt: Sequence[str], *, output_hidden_states: bool = False
) -> dict[str, np.ndarray]:
    """Token-level reference: the checkpoint's tokenizer (``<bos>``/``<eos>``, right padding
    to the longest text) and ``Gemma3TextModel``.

    Returns ``input_ids`` and ``attention_mask`` ``[batch, seq]`` (int64) and
    ``last_hidden_state`` ``[batch, seq, hidden]`` (float32, after the final norm). With
    ``output_hidden_states`` also ``hidden_states`` ``[num_layers + 1, batch, seq, hidden]``:
    entry 0 is the scaled embedding lookup and entry ``i`` the output of block ``i - 1``, all
    before the final norm (taken with forward hooks: transformers' own ``hidden_states`` put
    the final-normed output in the last entry instead of the last block's). Values at padded
    positions are whatever the model computes there; mask them.
    """
    model = _sentence_transformer(st_dir)
    tokenizer, backbone = model.tokenizer, model[0].auto_model
    batch = tokenizer(list(texts_with_prompt), padding=True, return_tensors="pt")
    captured: list[torch.Tensor] = []

    def capture(module, inputs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    modules = [backbone.embed_tokens, *backbone.layers] if output_hidden_states else []
    hooks = [module.register_forward_hook(capture) for module in modules]
    try:
        with torch.no_grad():
            outputs = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for hook in hooks:
            hook.remove()
    result = {
        "input_ids": batch["input_ids"].numpy(),
        "attention_mask": batch["attention_mask"].numpy(),
        "last_hidden_state": outputs.last_hidden_state.float().numpy(),
    }
    if output_hidden_states:
        result["hidden_states"] = torch.stack(captured).float().numpy()
    return result


def build_keras_hub_embedding_preset(
    out_dir: str,
    *,
    spm_path: str,
    num_layers: int = 6,
    hidden_dim: int = 72,
    intermediate_dim: int = 96,
    num_query_heads: int = 3,
    num_key_value_heads: int = 1,
    head_dim: int = 32,
    query_head_dim_normalize: bool = True,
    sliding_window_size: int = 8,
    pooling_intermediate_dim: int | None = None,
    embedding_dim: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> str:
    """Build a KerasHub preset laid out like Kaggle's ``embedding_gemma3_300m``.

    The weights are the Hugging Face builder's for the same ``seed`` and dimensions
    (``pooling_intermediate_dim`` / ``embedding_dim`` default to ``4 * hidden_dim`` /
    ``hidden_dim``); the network is that of ``build_sentence_transformers_checkpoint`` with
    ``query_pre_attn_scalar=head_dim`` (KerasHub ignores ``query_head_dim_normalize``, see the
    module docstring). Imports keras lazily, so the caller's ``KERAS_BACKEND`` applies.
    Returns ``out_dir``.
    """
    import keras_hub

    pooling_intermediate_dim = pooling_intermediate_dim or 4 * hidden_dim
    embedding_dim = embedding_dim or hidden_dim
    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=spm_path)
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=image_size,
        num_layers=num_layers,
        num_query_heads=num_query_heads,
        num_key_value_heads=num_key_value_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        head_dim=head_dim,
        query_head_dim_normalize=query_head_dim_normalize,
        use_query_key_norm=True,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        attention_logit_soft_cap=None,
        final_logit_soft_cap=None,
        use_sliding_window_attention=True,
        sliding_window_size=sliding_window_size,
        local_rope_scaling_factor=1.0,
        global_rope_scaling_factor=1.0,
        vision_encoder=None,
        layer_norm_epsilon=1e-6,
        use_bidirectional_attention=True,
        dropout=0,
        is_embedding_model=True,
        pooling_intermediate_dim=pooling_intermediate_dim,
        embedding_dim=embedding_dim,
        dtype="float32",
        # KerasHub's conversions name it so; left out, the name depends on how
        # many backbones the process built before.
        name="gemma3_backbone",
    )
    shapes = _hf_tensor_shapes(
        vocab_size=tokenizer.vocabulary_size(),
        num_layers=num_layers,
        hidden_size=hidden_dim,
        intermediate_size=intermediate_dim,
        num_attention_heads=num_query_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        projection_intermediate_dim=pooling_intermediate_dim,
        embedding_dim=embedding_dim,
    )
    weights = {name: _random_array(name, shape, seed) for name, shape in shapes.items()}
    _assign_hf_weights_to_keras_hub(backbone, weights)
    backbone.save_to_preset(out_dir)
    tokenizer.save_to_preset(out_dir)
    return out_dir


def _assign_hf_weights_to_keras_hub(backbone, weights: dict[str, np.ndarray]) -> None:
    """Copy Hugging Face-named tensors into a ``Gemma3Backbone`` (KerasHub's own mapping)."""
    heads, kv_heads = backbone.num_query_heads, backbone.num_key_value_heads
    head_dim, hidden = backbone.head_dim, backbone.hidden_dim

    def qkv(w: np.ndarray, n: int) -> np.ndarray:
        """``[n * head_dim, hidden]`` -> ``[n, hidden, head_dim]``."""
        return w.reshape(n, head_dim, hidden).transpose(0, 2, 1)

    def out(w: np.ndarray) -> np.ndarray:
        """``[hidden, heads * head_dim]`` -> ``[heads, head_dim, hidden]``."""
        return w.reshape(hidden, heads, head_dim).transpose(1, 2, 0)

    backbone.get_layer("token_embedding").embeddings.assign(weights["embed_tokens.weight"])
    backbone.get_layer("final_normalization").scale.assign(weights["norm.weight"])
    for i in range(backbone.num_layers):
        p = f"layers.{i}."
        block = backbone.get_layer(f"decoder_block_{i}")
        attention = block.attention
        attention.query_dense.kernel.assign(qkv(weights[p + "self_attn.q_proj.weight"], heads))
        attention.key_dense.kernel.assign(qkv(weights[p + "self_attn.k_proj.weight"], kv_heads))
        attention.value_dense.kernel.assign(qkv(weights[p + "self_attn.v_proj.weight"], kv_heads))
        attention.output_dense.kernel.assign(out(weights[p + "self_attn.o_proj.weight"]))
        attention.query_norm.scale.assign(weights[p + "self_attn.q_norm.weight"])
        attention.key_norm.scale.assign(weights[p + "self_attn.k_norm.weight"])
        block.gating_ffw.kernel.assign(weights[p + "mlp.gate_proj.weight"].T)
        block.gating_ffw_2.kernel.assign(weights[p + "mlp.up_proj.weight"].T)
        block.ffw_linear.kernel.assign(weights[p + "mlp.down_proj.weight"].T)
        block.pre_attention_norm.scale.assign(weights[p + "input_layernorm.weight"])
        block.post_attention_norm.scale.assign(weights[p + "post_attention_layernorm.weight"])
        block.pre_ffw_norm.scale.assign(weights[p + "pre_feedforward_layernorm.weight"])
        block.post_ffw_norm.scale.assign(weights[p + "post_feedforward_layernorm.weight"])
    backbone.get_layer("pooling_dense_1").kernel.assign(weights["2_Dense.linear.weight"].T)
    backbone.get_layer("embedding_projection").kernel.assign(weights["3_Dense.linear.weight"].T)


@functools.lru_cache(maxsize=4)
def _load_keras_hub_preset(preset_dir: str, stamp: int):
    # ``stamp`` only keys the cache, so a rebuilt preset is loaded again.
    import keras_hub

    tokenizer = keras_hub.models.Gemma3Tokenizer.from_preset(preset_dir)
    backbone = keras_hub.models.Gemma3Backbone.from_preset(preset_dir)
    return tokenizer, backbone


def keras_hub_reference_embeddings(
    preset_dir: str, texts_with_prompts: Sequence[str]
) -> np.ndarray:
    """KerasHub's own ``pooled_output`` for already-prompted texts, float32 ``[batch, dim]``.

    Each text is tokenized by the preset's ``Gemma3Tokenizer`` and packed as
    ``<bos> ids <eos>``, right-padded with ``<pad>`` to the longest text, as KerasHub's
    conversion script for ``embedding_gemma3_300m`` does (the preset has no preprocessor).
    Subject to KerasHub's asymmetric sliding window (module docstring). The preset is loaded
    once per path and weights-file modification time.
    """
    import keras

    preset_dir = os.fspath(preset_dir)
    stamp = _modification_stamp(os.path.join(preset_dir, "model.weights.h5"))
    tokenizer, backbone = _load_keras_hub_preset(preset_dir, stamp)
    sequences = [
        [
            tokenizer.start_token_id,
            *keras.ops.convert_to_numpy(tokenizer(text)).tolist(),
            tokenizer.end_token_id,
        ]
        for text in texts_with_prompts
    ]
    length = max(len(s) for s in sequences)
    token_ids = np.full((len(sequences), length), tokenizer.pad_token_id, dtype=np.int32)
    padding_mask = np.zeros((len(sequences), length), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        token_ids[row, : len(sequence)] = sequence
        padding_mask[row, : len(sequence)] = 1
    outputs = backbone({"token_ids": token_ids, "padding_mask": padding_mask})
    return np.asarray(keras.ops.convert_to_numpy(outputs["pooled_output"]), dtype=np.float32)


# --- Generative Gemma 3 checkpoints (initialisation sources) ---------------------------------
#
# ``build_gemma3_decoder_checkpoint`` (a causal ``Gemma3ForCausalLM`` / ``Gemma3TextModel``
# folder), ``build_keras_hub_decoder_preset`` (a causal KerasHub ``Gemma3Backbone`` preset) and
# ``build_t5gemma2_checkpoint`` (a ``T5Gemma2ForConditionalGeneration`` folder with a tiny SigLIP
# tower) are the sources ``keras_egemma.convert.initialization`` starts from. Their oracles run
# the source network with bidirectional attention: ``gemma3_bidirectional_hidden_states``,
# ``keras_hub_bidirectional_hidden_states`` and ``t5gemma2_encoder_hidden_states``, all after the
# final norm, float32 ``[batch, seq, hidden]``.


def build_gemma3_decoder_checkpoint(
    out_dir: str,
    *,
    spm_path: str,
    architecture: Literal["causal_lm", "text_model"] = "causal_lm",
    num_layers: int = 6,
    hidden_size: int = 72,
    intermediate_size: int = 96,
    num_attention_heads: int = 3,
    num_key_value_heads: int = 1,
    head_dim: int = 32,
    query_pre_attn_scalar: int = 24,
    sliding_window: int = 8,
    max_shard_size: str | None = None,
    seed: int = 0,
) -> str:
    """Build a decoder-only Gemma 3 folder: ``config.json`` (``gemma3_text``,
    ``use_bidirectional_attention: false``, transformers 5 ``rope_parameters``), safetensors
    weights (``model.``-prefixed for ``Gemma3ForCausalLM``; sharded with an index when
    ``max_shard_size`` is given, e.g. ``"100KB"``) and ``tokenizer.model``. Weights follow
    ``randomize_weights``. Returns ``out_dir``."""
    from transformers import Gemma3ForCausalLM

    vocab_size = sentencepiece.SentencePieceProcessor(model_file=spm_path).get_piece_size()
    config = published_gemma3_text_config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        query_pre_attn_scalar=query_pre_attn_scalar,
        sliding_window=sliding_window,
        use_bidirectional_attention=False,
    )
    model_cls = Gemma3ForCausalLM if architecture == "causal_lm" else Gemma3TextModel
    model = randomize_weights(model_cls(config), seed)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(out_dir, **kwargs)
    shutil.copyfile(spm_path, os.path.join(out_dir, "tokenizer.model"))
    return out_dir


def gemma3_bidirectional_hidden_states(
    folder: str, token_ids: np.ndarray, padding_mask: np.ndarray
) -> np.ndarray:
    """The folder's ``Gemma3TextModel`` run with ``use_bidirectional_attention=True`` (eager).

    The flag goes into the config dict before the config is built, so transformers rewrites
    the sliding window as it does for EmbeddingGemma (``w // 2 + 1``, exclusive: ``|i - j| <=
    w // 2``); setting it on a built config would keep the causal window's meaning."""
    values = _read_json(os.path.join(folder, "config.json"))
    values["use_bidirectional_attention"] = True
    config = Gemma3TextConfig.from_dict(values)
    assert config.sliding_window == values["sliding_window"] // 2 + 1
    model = Gemma3TextModel.from_pretrained(
        folder, config=config, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(np.asarray(token_ids, np.int64)),
            attention_mask=torch.from_numpy(np.asarray(padding_mask, np.int64)),
        )
    return out.last_hidden_state.float().numpy()


def build_keras_hub_decoder_preset(
    out_dir: str,
    *,
    spm_path: str,
    num_layers: int = 6,
    hidden_dim: int = 72,
    intermediate_dim: int = 96,
    num_query_heads: int = 3,
    num_key_value_heads: int = 1,
    head_dim: int = 32,
    sliding_window_size: int = 64,
    global_rope_scaling_factor: float = 1.0,
    seed: int = 0,
) -> str:
    """Build a KerasHub causal ``Gemma3Backbone`` preset (``is_embedding_model=False``,
    ``use_bidirectional_attention=False``, the layout of Kaggle's ``gemma3_1b``) and its
    ``Gemma3Tokenizer``. Every variable is drawn by ``_random_array`` from its path, so norms
    and QK-norms are non-trivial. Returns ``out_dir``."""
    import keras_hub

    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=spm_path)
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=None,
        num_layers=num_layers,
        num_query_heads=num_query_heads,
        num_key_value_heads=num_key_value_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        head_dim=head_dim,
        query_head_dim_normalize=True,
        use_query_key_norm=True,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        attention_logit_soft_cap=None,
        final_logit_soft_cap=None,
        use_sliding_window_attention=True,
        sliding_window_size=sliding_window_size,
        local_rope_scaling_factor=1.0,
        global_rope_scaling_factor=global_rope_scaling_factor,
        vision_encoder=None,
        layer_norm_epsilon=1e-6,
        dtype="float32",
    )
    for variable in backbone.weights:
        variable.assign(_random_array(variable.path, variable.shape, seed))
    backbone.save_to_preset(out_dir)
    tokenizer.save_to_preset(out_dir)
    return out_dir


def keras_hub_bidirectional_hidden_states(
    preset_dir: str, token_ids: np.ndarray, padding_mask: np.ndarray
) -> np.ndarray:
    """The preset's ``Gemma3Backbone`` rebuilt with ``use_bidirectional_attention=True``, its
    weights copied, run by KerasHub. KerasHub's bidirectional sliding window is asymmetric (see
    the module docstring): compare only inputs of at most ``sliding_window_size // 2`` tokens."""
    import keras
    import keras_hub

    source = keras_hub.models.Gemma3Backbone.from_preset(preset_dir, dtype="float32")
    config = {**source.get_config(), "use_bidirectional_attention": True}
    bidirectional = keras_hub.models.Gemma3Backbone.from_config(config)
    bidirectional.set_weights(source.get_weights())
    out = bidirectional({"token_ids": token_ids, "padding_mask": padding_mask})
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float32)


def build_t5gemma2_checkpoint(
    out_dir: str,
    *,
    spm_path: str,
    num_layers: int = 6,
    hidden_size: int = 72,
    intermediate_size: int = 96,
    num_attention_heads: int = 3,
    num_key_value_heads: int = 1,
    head_dim: int = 32,
    query_pre_attn_scalar: int = 24,
    sliding_window: int = 9,
    eoi_token_index: int = 7,
    seed: int = 0,
) -> str:
    """Build a ``T5Gemma2ForConditionalGeneration`` folder as the hub stores it (tensors
    ``model.encoder.layers.N...``, ``model.encoder.embed_tokens.{weight,eoi_embedding}``,
    ``model.decoder...``, ``model.encoder.vision_tower...``) plus ``tokenizer.model``.

    Encoder and decoder share the text dimensions (T5Gemma 2 requires it); the SigLIP tower is
    one 16-wide layer on 28-pixel images. ``eoi_token_index`` defaults to 7, ``<end_of_image>``
    of ``train_sentencepiece``'s vocabulary, so the end-of-image embedding can be exercised.
    Weights follow ``randomize_weights`` (the zero-initialised ``eoi_embedding`` included).
    Returns ``out_dir``."""
    from transformers import SiglipVisionConfig
    from transformers import T5Gemma2Config
    from transformers import T5Gemma2ForConditionalGeneration

    vocab_size = sentencepiece.SentencePieceProcessor(model_file=spm_path).get_piece_size()
    text = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        query_pre_attn_scalar=query_pre_attn_scalar,
        sliding_window=sliding_window,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
    )
    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    config = T5Gemma2Config(
        encoder=dict(
            text_config=text,
            vision_config=vision.to_dict(),
            mm_tokens_per_image=4,
            eoi_token_index=eoi_token_index,
        ),
        decoder=dict(text),
        eoi_token_index=eoi_token_index,
        image_token_index=6,  # <img> in train_sentencepiece's vocabulary
    )
    model = randomize_weights(T5Gemma2ForConditionalGeneration(config), seed)
    model.save_pretrained(out_dir)
    shutil.copyfile(spm_path, os.path.join(out_dir, "tokenizer.model"))
    return out_dir


def t5gemma2_encoder_hidden_states(
    folder: str, token_ids: np.ndarray, padding_mask: np.ndarray
) -> np.ndarray:
    """The folder's T5Gemma 2 text encoder (loaded by transformers, eager attention) on
    ``token_ids``: ``last_hidden_state`` after the encoder's final norm."""
    from transformers import T5Gemma2ForConditionalGeneration

    model = T5Gemma2ForConditionalGeneration.from_pretrained(
        folder, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        out = model.get_encoder()(
            input_ids=torch.from_numpy(np.asarray(token_ids, np.int64)),
            attention_mask=torch.from_numpy(np.asarray(padding_mask, np.int64)),
        )
    return out.last_hidden_state.float().numpy()
