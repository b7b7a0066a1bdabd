"""The two ways the encoder computes attention: dense with a mask, or banded.

Both take grouped queries `(batch, length, kv_heads, groups, head_dim)`
(already scaled), keys and values `(batch, length, kv_heads, head_dim)`, and
return `(batch, length, kv_heads, groups, head_dim)`. Logits and softmax are
float32; masked logits get a finite value, so a query row that sees only
padding softmaxes to a finite (uniform) row instead of NaN.
"""

from keras import ops

MASKED_LOGIT = -1e9


def sliding_window_mask(length, sliding_window):
    """Bidirectional window: token i sees token j iff |i - j| <= window // 2.

    This is the rule of the reference implementation (which rewrites the
    window to `w // 2 + 1` and masks `|i - j| < w // 2 + 1`), symmetric on both
    sides. Returns a `(length, length)` boolean tensor.
    """
    positions = ops.arange(length, dtype="int32")
    distance = ops.abs(positions[:, None] - positions[None, :])
    return distance <= sliding_window // 2


def _softmax_attention(equation_logits, equation_out, query, key, value, mask, dropout):
    logits = ops.einsum(equation_logits, query, key)
    # Masked before the cast: in a bfloat16 model that halves the memory
    # traffic of the largest tensor (MASKED_LOGIT rounds to a bfloat16 value
    # just as far below every logit).
    logits = ops.where(mask, logits, ops.cast(MASKED_LOGIT, logits.dtype))
    probs = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), value.dtype)
    if dropout is not None:
        probs = dropout(probs)
    return ops.einsum(equation_out, probs, value)


def dense_attention(query, key, value, mask, dropout=None):
    """Every query against every key, masked.

    Args:
        mask: boolean, broadcastable to `(batch, kv_heads, groups, length,
            length)` (query positions on the second-to-last axis).
        dropout: optional callable applied to the attention probabilities.
    """
    return _softmax_attention(
        "btkgh,bskh->bkgts", "bkgts,bskh->btkgh", query, key, value, mask, dropout
    )


def band_is_cheaper(length, sliding_window):
    """Whether the banded form does fewer multiply-adds than the dense one.

    Both sides are known when the layer is traced: `length` is the static
    sequence length (`None` when it is not known, which keeps the dense form).
    """
    if length is None:
        return False
    block = max(sliding_window // 2, 1)
    padded = -(-length // block) * block
    return padded * 3 * block < length * length


def sliding_window_band_attention(query, key, value, padding_mask, sliding_window,
                                  dropout=None):
    """Sliding-window attention computed in blocks: O(length * window).

    The sequence is cut into blocks of `b = sliding_window // 2` positions.
    A query in block `n` can only see keys within `b` positions, all of which
    lie in blocks `n - 1`, `n` and `n + 1`; so each query block is scored
    against those `3 * b` keys, with the window rule `|i - j| <= b` and the
    padding mask applied inside the band. Equal to `dense_attention` with
    `sliding_window_mask` for every query that is not padding.

    Args:
        padding_mask: `(batch, length)`, true or 1 for real tokens.
        sliding_window: the window as checkpoints serialise it (512 published).
        dropout: optional callable applied to the attention probabilities.
    """
    block = max(sliding_window // 2, 1)
    batch, length = ops.shape(query)[0], ops.shape(query)[1]
    kv_heads, groups, head_dim = ops.shape(query)[2:]
    blocks = -(-length // block)
    pad = blocks * block - length

    def to_blocks(x, extra):
        # Pads the sequence axis (zeros) to whole blocks, plus `extra` blocks
        # on each side, and splits it into `(blocks + 2 * extra, block)`.
        widths = [[0, 0]] * len(x.shape)
        widths[1] = [extra * block, pad + extra * block]
        x = ops.pad(x, widths)
        return ops.reshape(x, (batch, blocks + 2 * extra, block) + tuple(x.shape[2:]))

    def neighbours(x):
        # Blocks n - 1, n and n + 1 side by side: `(batch, blocks, 3 * block, ...)`.
        x = to_blocks(x, 1)
        return ops.concatenate([x[:, :-2], x[:, 1:-1], x[:, 2:]], axis=2)

    def fold(x):
        # Blocks become batch rows (TensorFlow's softmax takes at most 5 axes).
        return ops.reshape(x, (batch * blocks,) + tuple(x.shape[2:]))

    query = fold(to_blocks(query, 0))
    key = fold(neighbours(key))
    value = fold(neighbours(value))
    valid = fold(neighbours(ops.cast(padding_mask, "bool")))

    # Query a of a block sits at offset a; key slot s of its band at s - block.
    offsets = ops.arange(3 * block, dtype="int32")[None, :] - block
    distance = ops.abs(ops.arange(block, dtype="int32")[:, None] - offsets)
    window = distance <= sliding_window // 2
    mask = ops.logical_and(window[None, None, None], valid[:, None, None, None, :])

    out = _softmax_attention(
        "bqkgh,bskh->bkgqs", "bkgqs,bskh->bqkgh", query, key, value, mask, dropout
    )
    out = ops.reshape(out, (batch, blocks * block, kv_heads, groups, head_dim))
    return out[:, :length]
