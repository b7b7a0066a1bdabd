"""Compressed embeddings: int8 / uint8 codes per dimension, or one bit per dimension.

The codes are sentence-transformers' (`quantize_embeddings`), bit for bit, so
embeddings compressed by either library search the same way:

- `"int8"` / `"uint8"`: each dimension's range `[low, high]` (from calibration
  embeddings) is cut into 255 equal steps; a value's code is
  `clip(floor((x - low) / step), 0, 255)` (uint8), minus 128 for int8.
- `"binary"` / `"ubinary"`: one bit per dimension, `x > 0`, packed 8 to a
  byte with `np.packbits` (big-endian bit order, the last byte padded with
  zeros); `"binary"` stores the byte minus 128 as int8.
"""

import numpy as np

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
# Codes per dimension of the scalar precisions (`floor` puts the range's top
# value in the last, 256th, bucket through the clip).
SCALAR_STEPS = 255


def _float_embeddings(embeddings, name):
    array = np.asarray(embeddings)
    if array.dtype.kind != "f":
        raise ValueError(
            f"`{name}` must be float embeddings (the model's output), got dtype "
            f"{array.dtype}. Quantize float embeddings, not codes."
        )
    if array.ndim not in (1, 2) or array.shape[-1] == 0:
        raise ValueError(
            f"`{name}` must be a (num_embeddings, dim) or (dim,) array, got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` holds NaN or infinite values.")
    return array


def _check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")


def quantization_ranges(calibration):
    """Per-dimension `[min, max]` of calibration embeddings: the `ranges` of
    int8 / uint8 quantization.

    Args:
        calibration: `(num_embeddings, dim)` float embeddings representative
            of what will be quantized (a sample of the corpus; at least 2
            rows, better a few hundred or more).

    Returns:
        float32 `(2, dim)`: row 0 the minimum, row 1 the maximum.

    Example:
    ```python
    ranges = quantization_ranges(corpus_embeddings[:1000])
    codes = quantize_embeddings(corpus_embeddings, "int8", ranges=ranges)
    ```
    """
    calibration = _float_embeddings(calibration, "calibration")
    if calibration.ndim != 2 or calibration.shape[0] < 2:
        raise ValueError(
            "int8 / uint8 ranges need at least 2 calibration embeddings as a "
            f"(num_embeddings, dim) array, got shape {calibration.shape}. Pass a "
            "representative sample of the corpus as `calibration=`, or `ranges=`."
        )
    return np.stack([calibration.min(axis=0), calibration.max(axis=0)]).astype(np.float32)


def _check_ranges(ranges, dim):
    ranges = np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, dim) or not np.all(np.isfinite(ranges)):
        raise ValueError(
            f"`ranges` must be a finite (2, {dim}) array (min and max per dimension, "
            f"see `quantization_ranges`), got shape {ranges.shape}."
        )
    return ranges


def _steps(ranges):
    steps = (ranges[1] - ranges[0]) / SCALAR_STEPS
    # A dimension constant in the calibration set: every value gets code 0
    # (sentence-transformers' convention), instead of a division by zero.
    return np.where(steps == 0, 1, steps).astype(np.float32)


def quantize_embeddings(embeddings, precision, *, ranges=None, calibration=None):
    """Compresses float embeddings to int8 / uint8 codes or packed bits.

    Compatible with sentence-transformers' `quantize_embeddings`: the same
    inputs give the same codes (its `calibration_embeddings` is
    `calibration` here). Bytes per vector: `dim` for int8 / uint8,
    `ceil(dim / 8)` for binary / ubinary (4 * dim as float32).

    Args:
        embeddings: float `(num_embeddings, dim)` or `(dim,)` array.
        precision: `"int8"`, `"uint8"`, `"binary"`, `"ubinary"` (or
            `"float32"`, a plain copy as float32).
        ranges: int8 / uint8 only: float `(2, dim)` per-dimension min and max
            (`quantization_ranges`). Keep them: searching a compressed corpus
            (`semantic_search`) needs the same ranges.
        calibration: int8 / uint8 only, instead of `ranges`: float
            `(num_calibration, dim)` embeddings whose per-dimension min and
            max become the ranges. When neither is given, the ranges come
            from `embeddings` themselves (at least 2 rows). Like
            sentence-transformers, the other precisions ignore both, so one
            call can loop over precisions.

    Returns:
        int8 / uint8: `(num_embeddings, dim)` of that dtype. binary / ubinary:
        `(num_embeddings, ceil(dim / 8))` int8 / uint8. A `(dim,)` input
        gives one row without the leading axis.

    Example:
    ```python
    docs = model.encode_document(texts)                       # (n, 768) float32
    ranges = eg.quantization_ranges(docs)
    codes = eg.quantize_embeddings(docs, "int8", ranges=ranges)   # (n, 768) int8
    bits = eg.quantize_embeddings(docs, "ubinary")                # (n, 96) uint8
    ```
    """
    _check_precision(precision)
    embeddings = _float_embeddings(embeddings, "embeddings")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision in ("binary", "ubinary"):
        bits = np.packbits(embeddings > 0, axis=-1)
        return bits if precision == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)
    if ranges is not None and calibration is not None:
        raise ValueError("Pass `ranges` or `calibration`, not both.")
    if ranges is None:
        ranges = quantization_ranges(embeddings if calibration is None else calibration)
    ranges = _check_ranges(ranges, embeddings.shape[-1])
    codes = np.clip(np.floor((embeddings - ranges[0]) / _steps(ranges)), 0, SCALAR_STEPS)
    return codes.astype(np.uint8) if precision == "uint8" else (codes - 128).astype(np.int8)


def dequantize_embeddings(codes, precision, ranges):
    """Float values of int8 / uint8 codes: the centre of each code's bucket.

    Args:
        codes: `(num_embeddings, dim)` int8 / uint8 from `quantize_embeddings`.
        precision: `"int8"` or `"uint8"`.
        ranges: the float `(2, dim)` ranges the codes were made with.

    Returns:
        float32 `(num_embeddings, dim)`, within half a step of the inputs that
        were quantized (inside the ranges).

    Example:
    ```python
    approx = dequantize_embeddings(codes, "int8", ranges)
    ```
    """
    if precision not in ("int8", "uint8"):
        raise ValueError(f"Only int8 / uint8 codes dequantize, got {precision!r}.")
    codes = np.asarray(codes)
    ranges = _check_ranges(ranges, codes.shape[-1])
    offset = 128.5 if precision == "int8" else 0.5
    return ((codes.astype(np.float32) + offset) * _steps(ranges) + ranges[0]).astype(np.float32)
