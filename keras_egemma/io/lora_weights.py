"""LoRA adapter files (`.lora.h5`): the low-rank factors of every adapted
layer and the settings that made them, written beside the target and renamed
into place, so that an interrupted save never leaves half a file."""

import os

import h5py
import numpy as np

from keras_egemma.io.atomic_saving import save_file_atomically
from keras_egemma.io.errors import CheckpointError

FORMAT = "keras_egemma.lora"
SUFFIX = ".lora.h5"


def check_lora_path(path):
    """Refuses a path that does not end in `.lora.h5` (KerasHub's suffix for
    adapter files)."""
    if not os.fspath(path).endswith(SUFFIX):
        raise ValueError(f"A LoRA adapter file name must end in `{SUFFIX}`. Received: {path}")


def _is_lora_file(path):
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False


def write_lora_file(path, settings, factors):
    """Writes an adapter file.

    Args:
        path: the `.lora.h5` file; an existing one is replaced only if it is
            an adapter file too.
        settings: dict of `rank` (int), `alpha` (float), `include_heads` (bool).
        factors: dict of layer key -> `(a, b)` numpy arrays, with shapes
            `kernel.shape[:-1] + (rank,)` and `(rank, kernel.shape[-1])`.

    Example:
    ```python
    write_lora_file("run.lora.h5", {"rank": 4, "alpha": 4.0, "include_heads": False},
                    {"backbone/encoder_block_0/attention/query": (a, b)})
    ```
    """
    check_lora_path(path)
    target = os.path.abspath(os.fspath(path))
    if os.path.exists(target) and not _is_lora_file(target):
        raise ValueError(
            f"{target} exists and is not a LoRA adapter file, so it will not be "
            "replaced. Choose another name, or remove it first."
        )
    def write(staging):
        with h5py.File(staging, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["rank"] = int(settings["rank"])
            f.attrs["alpha"] = float(settings["alpha"])
            f.attrs["include_heads"] = bool(settings["include_heads"])
            for key, (a, b) in factors.items():
                group = f.create_group(key)
                group["lora_kernel_a"] = np.asarray(a, "float32")
                group["lora_kernel_b"] = np.asarray(b, "float32")

    save_file_atomically(write, target)


def read_lora_file(path):
    """Reads an adapter file: `(settings, {layer key: (a, b)})`, as written
    by `write_lora_file`. Raises `CheckpointError` for anything else."""
    check_lora_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No LoRA adapter file at {path}.")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path} is not a keras_egemma LoRA adapter file (write one with "
                    "`model.save_lora_weights`)."
                )
            settings = {
                "rank": int(f.attrs["rank"]),
                "alpha": float(f.attrs["alpha"]),
                "include_heads": bool(f.attrs["include_heads"]),
            }
            factors = {}

            def collect(name, item):
                if isinstance(item, h5py.Group) and "lora_kernel_a" in item:
                    factors[name] = (item["lora_kernel_a"][()], item["lora_kernel_b"][()])

            f.visititems(collect)
    except (OSError, KeyError) as e:
        raise CheckpointError(
            f"{path} is truncated or corrupted ({e}). Save the adapter again."
        ) from None
    return settings, factors
