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
