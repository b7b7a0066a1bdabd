"""Writing presets so that an interrupted save never leaves a broken one."""

import json
import os
import shutil
import tempfile


def _umask():
    # Read by setting it: the only portable way. Set back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _give_usual_permissions(path):
    """Gives a staged file or folder the mode `open` / `os.makedirs` would
    have (0o666 / 0o777 less the umask): `tempfile` makes them private."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def read_json_object(path):
    """The JSON object in the file at `path`, or None if it is missing,
    unreadable or not an object (for deciding whether a folder may be replaced)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def is_replaceable_preset(directory):
    """True for an empty folder or a preset saved by this library."""
    if not os.listdir(directory):
        return True
    config = read_json_object(os.path.join(directory, "config.json")) or {}
    return str(config.get("registered_name", "")).startswith("keras_egemma>")


def save_atomically(
    save, preset_dir, replaceable=is_replaceable_preset, kind="a keras_egemma preset"
):
    """Runs `save(folder)` on a temporary sibling of `preset_dir`, then moves
    the finished folder into place.

    A crash or an exception during `save` leaves `preset_dir` as it was (the
    old preset, or nothing) and removes the temporary folder. An existing
    `preset_dir` is replaced only if `replaceable(preset_dir)` (by default:
    it is empty or a keras_egemma preset); any other existing path is refused
    untouched, the error naming what it is not (`kind`). The folder gets
    the usual permissions (0o777 less the umask), as `os.makedirs` gives.

    Example:
    ```python
    save_atomically(lambda folder: backbone.save_to_preset(folder), "./my_preset")
    ```
    """
    target = os.path.abspath(os.fspath(preset_dir))
    if os.path.exists(target) and not (
        os.path.isdir(target) and replaceable(target)
    ):
        raise ValueError(
            f"{target} exists and is not {kind}, so it will not be replaced. "
            "Choose a new folder, or remove it first."
        )
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.saving-", dir=parent)
    try:
        save(staging)
        _give_usual_permissions(staging)
        if not os.path.exists(target):
            os.rename(staging, target)
            return
        # A folder cannot be renamed over a non-empty one: move the old preset
        # aside, move the new one in, then delete the old one.
        old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
        os.rmdir(old)
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_file_atomically(write, path):
    """Calls `write(staging_path)` on a new file beside `path`, then renames
    it to `path`; on any failure the staging file is removed and `path` is
    left as it was. Creates `path`'s folder if needed. The file gets the
    usual permissions (0o666 less the umask), as `open` gives."""
    target = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{name}.saving-", dir=parent)
    os.close(handle)
    try:
        write(staging)
        _give_usual_permissions(staging)
        os.replace(staging, target)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise
