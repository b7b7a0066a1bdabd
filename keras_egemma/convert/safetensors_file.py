"""A minimal, validating reader for `.safetensors` files.

The format is an 8-byte little-endian header size, a JSON header mapping
tensor names to dtype, shape and byte offsets, then raw little-endian data.
Reading it directly supports bfloat16, which numpy lacks, reads each tensor
only when it is asked for (into an array of its own, 64-byte aligned so that
JAX adopts it without a copy, or memory-mapped: `SafetensorsFile.get`), and
lets us name the file and the tensor when a file is truncated or corrupted.
The file is never mapped whole: pages of a map count in the process's
resident memory while it lives, so a whole-file map grows by every tensor
read until the last one is.
"""

import json
import os
import struct

import ml_dtypes
import numpy as np

from keras_egemma.io.errors import CheckpointError
from keras_egemma.io.mapped_weights import aligned_empty
from keras_egemma.io.mapped_weights import maps_tensor

DTYPES = {
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


# A sharded checkpoint's index sits beside its shards: `model.safetensors`
# becomes `model.safetensors.index.json` + `model-00001-of-0000N.safetensors`...
SHARD_INDEX_SUFFIX = ".index.json"


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

    def get(self, name, map_mode=None):
        """The tensor as a numpy array (bfloat16 as `ml_dtypes.bfloat16`).

        Read from the file into a 64-byte aligned array of its own; with
        `map_mode` ("r" read-only, "c" copy-on-write: `mapped_weights.
        file_map_mode`), a large tensor (`mapped_weights.maps_tensor`) is
        memory-mapped instead, so only the pages used are ever read.
        """
        entry = self._entry(name)
        if entry["dtype"] not in DTYPES:
            raise CheckpointError(
                f"Tensor {name!r} in {self.path} has unsupported dtype "
                f"{entry['dtype']}."
            )
        dtype = np.dtype(DTYPES[entry["dtype"]])
        begin, end = entry["data_offsets"]
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            raise CheckpointError(
                f"Tensor {name!r} in {self.path} is corrupted: shape "
                f"{entry['shape']} needs {count * dtype.itemsize} bytes, the "
                f"header gives {end - begin}."
            )
        offset, shape = self._data_start + begin, tuple(entry["shape"])
        if maps_tensor(map_mode, offset, end - begin):
            return np.memmap(self.path, dtype=dtype, mode=map_mode, offset=offset, shape=shape)
        value = aligned_empty(shape, dtype)
        with open(self.path, "rb") as f:
            f.seek(offset)
            read = f.readinto(value.reshape(-1).view(np.uint8))
        if read != end - begin:
            raise CheckpointError(
                f"Tensor {name!r} in {self.path} is truncated: read {read} of "
                f"{end - begin} bytes. Download or copy the file again."
            )
        return value


class ShardedSafetensors:
    """A sharded checkpoint (`model.safetensors.index.json` and the shards it
    lists) read through the `SafetensorsFile` interface.

    The index is checked when it is opened, so a broken download fails
    before any weight is read: the index must be valid JSON with a
    `weight_map` of tensor name -> shard file name, every shard must be a
    `.safetensors` file in the index's folder and pass `SafetensorsFile`'s
    checks, and every tensor the index lists must be in its shard.

    Example:
    ```python
    f = ShardedSafetensors("ckpt/model.safetensors.index.json")
    f.shape("norm.weight"); f.get("norm.weight")
    ```
    """

    def __init__(self, path):
        self.path = str(path)
        directory = os.path.dirname(self.path)
        redownload = (
            "Download the checkpoint again (the index and every shard it lists "
            "come from one save_pretrained call)."
        )
        try:
            with open(self.path, encoding="utf-8") as f:
                index = json.load(f)
        except FileNotFoundError:
            raise CheckpointError(f"Shard index not found: {self.path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(
                f"{self.path} is not valid JSON ({e}). {redownload}"
            ) from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if (
            not isinstance(weight_map, dict)
            or not weight_map
            or not all(isinstance(v, str) for v in weight_map.values())
        ):
            raise CheckpointError(
                f"{self.path} has no weight_map (a non-empty mapping of tensor "
                f"names to shard file names). {redownload}"
            )
        shard_names = sorted(set(weight_map.values()))
        for name in shard_names:
            if (
                os.path.basename(name) != name
                or name in ("", ".", "..")
                or not name.endswith(".safetensors")
            ):
                raise CheckpointError(
                    f"{self.path} lists the shard {name!r}, which is not a "
                    ".safetensors file in the index's folder; only safetensors "
                    f"shards beside the index are read. {redownload}"
                )
        missing = [n for n in shard_names if not os.path.isfile(os.path.join(directory, n))]
        if missing:
            raise CheckpointError(
                f"{len(missing)} of the {len(shard_names)} shards that {self.path} "
                f"lists are missing from {directory}: {', '.join(missing)}. The "
                "download is incomplete; download the missing shards (or the "
                "whole checkpoint) again."
            )
        self._shards = {n: SafetensorsFile(os.path.join(directory, n)) for n in shard_names}
        for tensor, name in weight_map.items():
            if tensor not in self._shards[name]:
                raise CheckpointError(
                    f"Tensor {tensor!r} is listed in {self.path} as stored in "
                    f"{name}, but {self._shards[name].path} does not hold it: the "
                    f"index and the shards come from different saves. {redownload}"
                )
        self._shard_of = weight_map

    def keys(self):
        return list(self._shard_of)

    def __contains__(self, name):
        return name in self._shard_of

    def _shard(self, name):
        if name not in self._shard_of:
            raise CheckpointError(f"Tensor {name!r} is missing from {self.path}.")
        return self._shards[self._shard_of[name]]

    def shape(self, name):
        return self._shard(name).shape(name)

    def get(self, name, map_mode=None):
        """The tensor as a numpy array (`SafetensorsFile.get`)."""
        return self._shard(name).get(name, map_mode)
