"""Model memory and encoding speed of a preset, measured in a process of its own.

Peak resident memory is a high-water mark of the whole process, so it says
something about one model only in a fresh process: `measure_in_fresh_process`
starts one (`python -c`, so it works the same from a script, a notebook kernel
or a test), which runs `measure` and hands back its figures and embeddings.
The process inherits the environment, `KERAS_BACKEND` included.
Reads `/proc/self/status`, so Linux only.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_egemma.models.embedding_gemma import EmbeddingGemma
from keras_egemma.models.preprocessor import EmbeddingGemmaPreprocessor
from keras_egemma.presets import PRESETS


def rss_bytes(field):
    """`VmRSS` (now) or `VmHWM` (peak) of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(preset, documents, queries=(), titles=None, batch_size=32):
    """Loads `preset` and embeds `documents` and `queries`, in this process.

    The baseline is the resident memory once Keras and the tokenizer are
    loaded; "model memory" is the peak above it while loading the model and
    embedding everything once. Speed is a second pass over the documents (the
    first compiles each padded shape).

    Returns:
        dict: `model_memory_bytes`, `peak_rss_bytes`, `sentences_per_s`,
        `document_embeddings` and `query_embeddings` (numpy arrays).
    """
    bundled = PRESETS.get(preset, {}).get("path")
    EmbeddingGemmaPreprocessor.from_preset(bundled or preset)
    baseline = rss_bytes("VmRSS")
    model = EmbeddingGemma.from_preset(preset)
    encode = dict(titles=titles, batch_size=batch_size, verbose=False)
    document_embeddings = model.encode_document(documents, **encode)
    query_embeddings = model.encode_query(list(queries), batch_size=batch_size, verbose=False)
    peak = rss_bytes("VmHWM")
    start = time.perf_counter()
    model.encode_document(documents, **encode)
    seconds = time.perf_counter() - start
    return {
        "model_memory_bytes": peak - baseline,
        "peak_rss_bytes": peak,
        "sentences_per_s": len(documents) / seconds,
        "document_embeddings": np.asarray(document_embeddings),
        "query_embeddings": np.asarray(query_embeddings),
    }


def _worker(job_path):
    """The fresh process' side: reads the job, measures, writes the results."""
    with open(job_path) as f:
        job = json.load(f)
    output = job.pop("output")
    result = measure(**job)
    np.savez(
        output,
        documents=result.pop("document_embeddings"),
        queries=result.pop("query_embeddings"),
    )
    with open(output + ".json", "w") as f:
        json.dump(result, f)


def measure_in_fresh_process(preset, documents, queries=(), titles=None, batch_size=32):
    """`measure`, run in a new Python process; same arguments and result.

    Raises:
        RuntimeError: the process failed (the end of its stderr included).
    """
    with tempfile.TemporaryDirectory() as work:
        job_path = os.path.join(work, "job.json")
        output = os.path.join(work, "result.npz")
        job = dict(
            preset=preset,
            documents=list(documents),
            queries=list(queries),
            titles=None if titles is None else list(titles),
            batch_size=batch_size,
            output=output,
        )
        with open(job_path, "w") as f:
            json.dump(job, f)
        code = f"from {__name__} import _worker; _worker({job_path!r})"
        process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if process.returncode:
            raise RuntimeError(f"measuring {preset} failed:\n{process.stderr[-3000:]}")
        with open(output + ".json") as f:
            result = json.load(f)
        with np.load(output) as saved:
            result["document_embeddings"] = saved["documents"]
            result["query_embeddings"] = saved["queries"]
    return result
