"""Rebuild a Gemma SentencePiece model from a Hugging Face `tokenizer.json`.

Used only when a checkpoint folder has `tokenizer.json` but no
`tokenizer.model`. Gemma's fast tokenizer is a byte-fallback BPE converted from
SentencePiece; SentencePiece's BPE merges the adjacent pair whose merged piece
scores highest, so giving each piece the score `-rank` of the first merge
that produces it reproduces the merge order of `tokenizer.json`.
"""

import json
import re

from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from keras_egemma.io.errors import CheckpointError

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def spm_proto_from_tokenizer_json(path):
    """Returns serialised SentencePiece `ModelProto` bytes for `path`."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}).") from None
    model = spec.get("model", {})
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise CheckpointError(
            f"{path}: only Gemma's byte-fallback BPE tokenizer can be converted "
            f"(got model type {model.get('type')!r}). Provide tokenizer.model."
        )
    vocab = model["vocab"]
    id_to_piece = {i: piece for piece, i in vocab.items()}
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    for i, token in added.items():
        id_to_piece[i] = token["content"]
    size = max(id_to_piece) + 1
    if len(id_to_piece) != size:
        raise CheckpointError(f"{path}: token ids are not contiguous.")

    scores = {}
    for rank, merge in enumerate(model.get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        scores.setdefault(left + right, -float(rank))

    proto = spm_pb2.ModelProto()
    trainer = proto.trainer_spec
    trainer.model_type = spm_pb2.TrainerSpec.BPE
    trainer.vocab_size = size
    trainer.byte_fallback = True
    trainer.split_digits = True
    unk = model.get("unk_token", "<unk>")
    ids = {piece: i for i, piece in id_to_piece.items()}
    trainer.unk_id = ids.get(unk, 3)
    trainer.bos_id = ids.get("<bos>", -1)
    trainer.eos_id = ids.get("<eos>", -1)
    trainer.pad_id = ids.get("<pad>", -1)
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True

    for i in range(size):
        piece = proto.pieces.add()
        piece.piece = id_to_piece[i]
        piece.score = scores.get(id_to_piece[i], 0.0)
        if id_to_piece[i] == unk:
            piece.type = spm_pb2.ModelProto.SentencePiece.UNKNOWN
        elif i in added:
            piece.type = (
                spm_pb2.ModelProto.SentencePiece.CONTROL
                if added[i].get("special")
                else spm_pb2.ModelProto.SentencePiece.USER_DEFINED
            )
        elif _BYTE_PIECE.match(id_to_piece[i]):
            piece.type = spm_pb2.ModelProto.SentencePiece.BYTE
        else:
            piece.type = spm_pb2.ModelProto.SentencePiece.NORMAL
    return proto.SerializeToString()


def tokenizer_json_from_spm_proto(proto, special_tokens=("<mask>",)):
    """The inverse: a Hugging Face `tokenizer.json` (as a dict) for a Gemma
    SentencePiece model, the one transformers' `GemmaTokenizer` builds.

    Merges follow `transformers`' `generate_merges`: every split of a piece
    into two pieces of the vocabulary, ordered by the merged piece's id. Control
    and unknown pieces, and `special_tokens`, are special added tokens; other
    user-defined pieces are added tokens that are not special.

    Args:
        proto: serialised SentencePiece `ModelProto` bytes.
        special_tokens: user-defined pieces marked special (Gemma's mask).

    Example:
    ```python
    spec = tokenizer_json_from_spm_proto(open("tokenizer.model", "rb").read())
    ```
    """
    model = spm_pb2.ModelProto()
    model.ParseFromString(proto)
    pieces = model.pieces
    vocab = {piece.piece: i for i, piece in enumerate(pieces)}
    merges = []
    for merged, i in vocab.items():
        local = [
            (merged[:cut], merged[cut:])
            for cut in range(1, len(merged))
            if merged[:cut] in vocab and merged[cut:] in vocab
        ]
        local.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        merges += [(i, left, right) for left, right in local]
    merges.sort(key=lambda m: (m[0], len(m[1]), len(m[2])))
    kinds = spm_pb2.ModelProto.SentencePiece
    added = [
        {
            "id": i, "content": piece.piece, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False,
            "special": piece.type in (kinds.CONTROL, kinds.UNKNOWN)
            or piece.piece in special_tokens,
        }
        for i, piece in enumerate(pieces)
        if piece.type in (kinds.CONTROL, kinds.UNKNOWN, kinds.USER_DEFINED)
    ]
    bos, eos = pieces[model.trainer_spec.bos_id].piece, pieces[model.trainer_spec.eos_id].piece
    ids = {token: {"id": token, "ids": [vocab[token]], "tokens": [token]} for token in (bos, eos)}

    def special(token, type_id):
        return {"SpecialToken": {"id": token, "type_id": type_id}}

    def sequence(name, type_id):
        return {"Sequence": {"id": name, "type_id": type_id}}

    single = [special(bos, 0), sequence("A", 0), special(eos, 0)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": {
            "type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
            "invert": False,
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": single,
            "pair": single + [special(bos, 1), sequence("B", 1), special(eos, 1)],
            "special_tokens": ids,
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
            ],
        },
        "model": {
            "type": "BPE", "dropout": None, "unk_token": pieces[model.trainer_spec.unk_id].piece,
            "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
            "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
            "merges": [[left, right] for _, left, right in merges],
        },
    }
