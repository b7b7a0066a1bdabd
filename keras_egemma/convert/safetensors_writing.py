"""Writing `.safetensors` files, sharded above a size as `save_pretrained` does.

A tensor is given as an entry `(name, shape, dtype, get)`: the header is
written from the shapes and dtypes, then each `get()` is called and its bytes
written before the next one is produced, so a checkpoint is never held in
memory a second time.
"""

import json
import os
import struct

import numpy as np

from keras_egemma.convert.safetensors_file import DTYPES
from keras_egemma.convert.safetensors_file import SHARD_INDEX_SUFFIX

_CODES = {np.dtype(dtype): code for code, dtype in DTYPES.items()}
# transformers refuses a file whose metadata names no framework it knows.
_METADATA = {"format": "pt"}


def array_entry(name, array):
    """The entry of a tensor already in memory."""
    return name, tuple(array.shape), array.dtype, lambda: array


def _nbytes(shape, dtype):
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _header(entries):
    """The JSON header, padded with spaces to a multiple of 8 bytes (as the
    safetensors library does, so the data after it stays aligned)."""
    offset, header = 0, {"__metadata__": _METADATA}
    for name, shape, dtype, _ in entries:
        if np.dtype(dtype) not in _CODES:
            raise TypeError(f"Tensor {name!r}: dtype {dtype} has no safetensors code.")
        end = offset + _nbytes(shape, dtype)
        header[name] = {
            "dtype": _CODES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, end]
        }
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


def write_safetensors_file(path, entries):
    """Writes the tensors of `entries` (see the module docstring) to `path`.

    Example:
    ```python
    write_safetensors_file("2_Dense/model.safetensors", [array_entry("linear.weight", w)])
    ```
    """
    header = _header(entries)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for name, shape, dtype, get in entries:
            array = np.ascontiguousarray(get(), dtype=dtype)
            if tuple(array.shape) != tuple(shape):
                raise ValueError(f"Tensor {name!r} has shape {array.shape}, expected {shape}.")
            f.write(array.tobytes())


def write_sharded_safetensors(folder, entries, max_shard_bytes, name="model.safetensors"):
    """Writes `entries` to `folder/name`, or, when they hold more than
    `max_shard_bytes`, to shards `model-0000i-of-0000n.safetensors` plus
    `name.index.json` (the `save_pretrained` layout). Returns the file names.

    Example:
    ```python
    write_sharded_safetensors(folder, entries, max_shard_bytes=5 * 2**30)
    ```
    """
    shards, size = [[]], 0
    for entry in entries:
        nbytes = _nbytes(entry[1], entry[2])
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    if len(shards) == 1:
        write_safetensors_file(os.path.join(folder, name), shards[0])
        return [name]
    stem = name.rsplit(".", 1)[0]
    names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for file_name, shard in zip(names, shards):
        write_safetensors_file(os.path.join(folder, file_name), shard)
    index = {
        "metadata": {"total_size": sum(_nbytes(e[1], e[2]) for e in entries)},
        "weight_map": {e[0]: file_name for file_name, shard in zip(names, shards) for e in shard},
    }
    with open(os.path.join(folder, name + SHARD_INDEX_SUFFIX), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    return [*names, name + SHARD_INDEX_SUFFIX]
