"""Length-sorted, bucketed batching for `EmbeddingGemma.encode`."""

import numpy as np

from keras_egemma.models.inference import inference_function
from keras_egemma.models.progress import progress_bar

# Batches are padded up to one of these lengths, so a compiled predict
# function sees few distinct shapes while short texts stay cheap.
_BUCKETS = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def bucket_lengths(max_length):
    """Every length a batch is padded to when no text exceeds `max_length`:
    the buckets below it, then multiples of 1024 past 2048, then
    `max_length` itself.

    Example:
    ```python
    bucket_lengths(100)    # [16, 32, 64, 100]
    ```
    """
    lengths = [bucket for bucket in _BUCKETS if bucket < max_length]
    step = _BUCKETS[-1] // 2
    lengths += list(range(_BUCKETS[-1] + step, max_length, step))
    return lengths + [max_length]


def bucket_length(length, max_length):
    """The padded length used for a batch whose longest input is `length`."""
    return next(bucket for bucket in bucket_lengths(max_length) if bucket >= length)


def embed_token_ids(model, token_ids, pad_id, max_length, batch_size, verbose="auto"):
    """Runs `model` over id lists, longest first, and returns rows in input order.

    Texts are sorted by length so each batch holds texts of similar length
    and is padded only to its own bucket, not to the longest text overall.

    Args:
        model: a Keras model taking `{"token_ids", "padding_mask"}`.
        token_ids: list of int lists (already with `<bos>`/`<eos>`).
        pad_id: the `<pad>` id.
        max_length: the longest allowed padded length.
        batch_size: rows per forward pass.
        verbose: `"auto"` (a progress bar when there are several batches),
            `True` or `False`.

    Returns:
        numpy array `(len(token_ids), d)`.
    """
    lengths = np.array([len(ids) for ids in token_ids])
    order = np.argsort(-lengths, kind="stable")
    starts = range(0, len(order), batch_size)
    show = verbose is True or (verbose == "auto" and len(starts) > 1)
    progress = progress_bar(len(order), "encode", "text") if show else None
    outputs = np.empty((len(order),), dtype=object)
    forward = inference_function(model)
    for start in starts:
        rows = order[start : start + batch_size]
        width = bucket_length(int(lengths[rows].max()), max_length)
        # Rows are padded to a power of two too (filler rows are discarded),
        # so a final short batch rarely needs a new compilation.
        height = min(1 << (len(rows) - 1).bit_length(), batch_size)
        ids = np.full((height, width), pad_id, dtype="int32")
        row_lengths = np.ones(height, dtype="int64")
        row_lengths[: len(rows)] = lengths[rows]
        for r, row in enumerate(rows):
            ids[r, : lengths[row]] = token_ids[row]
        # The mask follows the lengths, not the ids, so a <pad> id that a
        # text genuinely contains is still attended to.
        mask = np.arange(width)[None, :] < row_lengths[:, None]
        batch = {"token_ids": ids, "padding_mask": mask.astype("int32")}
        result = forward(batch)
        for r, row in enumerate(rows):
            outputs[row] = result[r]
        if progress is not None:
            progress.update(len(rows))
    if progress is not None:
        progress.close()
    return np.stack(list(outputs))
