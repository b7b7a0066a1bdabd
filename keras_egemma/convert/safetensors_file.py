"""A minimal, validating reader for `.safetensors` files.

The format is an 8-byte little-endian header size, a JSON header mapping
tensor names to dtype, shape and byte offsets, then raw little-endian data.
Reading it directly (memory-mapped) supports bfloat16, which numpy lacks,
never copies the whole file, and lets us name the file and the tensor when a
file is truncated or corrupted.
"""

import json
import os
import struct

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or does not fit."""


def check_vocabulary_fits(tokenizer_size, table_rows, tokenizer_source, table_source):
    """Refuses a tokenizer with ids beyond the embedding table.

    Such ids would be out of range (JAX clamps them silently, giving wrong
    vectors). A table with more rows than the tokenizer has tokens is fine:
    published tables are often padded.
    """
    if tokenizer_size > table_rows:
        raise CheckpointError(
            f"The tokenizer has {tokenizer_size} tokens ({tokenizer_source}) but the "
            f"embedding table has only {table_rows} rows ({table_source}): tokenizer "
            "and weights come from different models. Use the tokenizer saved with "
            "these weights."
        )


class SafetensorsFile:
    """Read-only access to the tensors of one `.safetensors` file.

    Example:
    ```python
    f = SafetensorsFile("model.safetensors")
    f.keys(); f.shape("norm.weight"); f.get("norm.weight")
    ```
    """

    def __init__(self, path):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise CheckpointError(f"Weights file not found: {self.path}")
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(
                    f"{self.path} is not a safetensors file (only {size} bytes)."
                )
            (header_size,) = struct.unpack("<Q", head)
            if header_size > size - 8:
                raise CheckpointError(
                    f"{self.path} is truncated or not a safetensors file: its "
                    f"header claims {header_size} bytes but the file has {size}."
                )
            try:
                header = json.loads(f.read(header_size))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CheckpointError(
                    f"{self.path} has a corrupted safetensors header ({e})."
                ) from None
        header.pop("__metadata__", None)
        self._data_start = 8 + header_size
        self._header = header
        end = max((v["data_offsets"][1] for v in header.values()), default=0)
        if self._data_start + end > size:
            raise CheckpointError(
                f"{self.path} is truncated: the tensors need "
                f"{self._data_start + end} bytes but the file has {size}. "
                "Download or copy it again."
            )
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if end else None

    def keys(self):
        return list(self._header)

    def __contains__(self, name):
        return name in self._header

    def shape(self, name):
        return tuple(self._entry(name)["shape"])

    def _entry(self, name):
        if name not in self._header:
            raise CheckpointError(f"Tensor {name!r} is missing from {self.path}.")
        return self._header[name]

    def get(self, name):
        """The tensor as a numpy array (bfloat16 as `ml_dtypes.bfloat16`)."""
        entry = self._entry(name)
        if entry["dtype"] not in _DTYPES:
            raise CheckpointError(
                f"Tensor {name!r} in {self.path} has unsupported dtype "
                f"{entry['dtype']}."
            )
        dtype = np.dtype(_DTYPES[entry["dtype"]])
        begin, end = entry["data_offsets"]
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            raise CheckpointError(
                f"Tensor {name!r} in {self.path} is corrupted: shape "
                f"{entry['shape']} needs {count * dtype.itemsize} bytes, the "
                f"header gives {end - begin}."
            )
        raw = self._map[self._data_start + begin : self._data_start + end]
        return raw.view(dtype).reshape(entry["shape"])
