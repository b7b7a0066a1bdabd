"""Where a benchmark result came from: the command, the date and the machine.

Every benchmark script puts these fields in the JSON it writes, so that a
result copied into `docs/results/` is rendered with them (`docs/render.py`).
"""

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit():
    """The commit of the checkout the benchmark runs from, or None."""
    try:
        return subprocess.run(
            ["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(env=()):
    """`{"command", "date", "machine", "commit"}` of this run.

    `env` names environment variables that change what is measured (e.g.
    KERAS_BACKEND); those that are set are written in front of the command.
    """
    prefix = [f"{name}={os.environ[name]}" for name in env if os.environ.get(name)]
    return {
        "command": " ".join(prefix + ["python", shlex.join(sys.argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {cpu_model()}, "
                   f"{os.cpu_count()} cores",
        "commit": git_commit(),
    }


def write_result(result, path):
    """Writes `result` as JSON at `path` (folders made as needed), through a
    staging file renamed into place, and says where on stderr."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    staging = f"{path}.tmp"
    with open(staging, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    os.replace(staging, path)
    print(f"wrote {path}", file=sys.stderr)
