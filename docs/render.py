"""Render the result tables in the docs from the JSON in docs/results/.

Every figure table in the docs sits between two markers,

    <!-- table:NAME -->
    ...generated...
    <!-- /table:NAME -->

and is generated from the JSON files that `TABLES[NAME]` names, followed by a
line with each file's command, date and machine. Nothing between the markers
is edited by hand.

    python docs/render.py           # rewrite the tables in docs/*.md and README.md
    python docs/render.py --check   # exit 1, naming the stale tables, if any differ

To publish a new measurement: run the benchmark (it writes its JSON, with
`command`, `date` and `machine`, under `results/`), copy that file over the one
in docs/results/ with the same name, run `python docs/render.py`, and commit
both. Standard library only.
"""

import argparse
import json
import os
import re
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
RESULTS = os.path.join(DOCS, "results")

MARKERS = re.compile(
    r"(?P<open><!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /table:(?P=name) -->)",
    re.DOTALL,
)

BACKENDS = {"jax": "JAX", "tensorflow": "TensorFlow", "torch": "PyTorch"}
BACKEND_ORDER = list(BACKENDS)
DTYPE_ORDER = ["float32", "bfloat16", "int8", "int4", "mixed"]
GIB = 2**30


# --- Formatting ---------------------------------------------------------------


def table(header, rows, align=None):
    """A markdown table; `align` is a string of "l"/"r" per column."""
    align = align or "l" * len(header)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value, digits=2, missing="n/a"):
    if value is None:
        return missing
    return f"{value:,.{digits}f}"


def parse_run_name(name):
    """`"keras_egemma (jax, int8)"` -> ("keras_egemma", "jax", "int8")."""
    match = re.fullmatch(r"(.+?) \((.+)\)", name)
    if not match:
        return name, None, None
    parts = [p.strip() for p in match.group(2).split(",")]
    backend = parts[0] if len(parts) > 1 else (parts[0] if parts[0] in BACKENDS else None)
    dtype = parts[-1] if len(parts) > 1 else (None if parts[0] in BACKENDS else parts[0])
    return match.group(1), backend, dtype


def run_label(name):
    library, backend, dtype = parse_run_name(name)
    if library == "keras_egemma":
        return ", ".join(x for x in ("keras_egemma", BACKENDS.get(backend, backend), dtype) if x)
    if library == "sentence_transformers":
        return ", ".join(x for x in ("sentence-transformers", dtype) if x)
    return name


def run_order(name):
    library, backend, dtype = parse_run_name(name)
    return (
        library != "keras_egemma",
        DTYPE_ORDER.index(dtype) if dtype in DTYPE_ORDER else len(DTYPE_ORDER),
        BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER),
    )


def load(filename):
    path = os.path.join(RESULTS, filename)
    with open(path) as f:
        data = json.load(f)
    missing = [key for key in ("command", "date", "machine") if not data.get(key)]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)}")
    return data


def provenance_line(filename, data, doc_dir):
    date = data["date"]
    if "T" in date:  # the scripts write UTC ISO timestamps
        date = date[:16].replace("T", " ") + " UTC"
    parts = [f"`{data['command']}`", date, data["machine"]]
    if data.get("commit"):
        parts.append(f"commit {data['commit'][:7]}")
    elif data.get("reported_in_commit"):
        parts.append(f"reported in commit {data['reported_in_commit'][:7]}")
    link = os.path.relpath(os.path.join(RESULTS, filename), doc_dir).replace(os.sep, "/")
    transcribed = " (transcribed from an earlier report: see its note)" if "ranscribed" in data.get(
        "note", "") else ""
    return f"Measured with {'; '.join(parts)}. Data: [{filename}]({link}){transcribed}."


# --- Tables -------------------------------------------------------------------


def inference_speed(data):
    (d,) = data
    runs = d["runs"]
    shapes = list(next(iter(runs.values()))["throughput"])
    best = {s: max(r["throughput"][s]["tokens_per_s"] for r in runs.values()) for s in shapes}
    rows = []
    for name in sorted(runs, key=run_order):
        run = runs[name]
        cells = []
        for s in shapes:
            t = run["throughput"][s]
            cell = f"{num(t['sentences_per_s'])} ({t['tokens_per_s']:,.0f})"
            cells.append(f"**{cell}**" if t["tokens_per_s"] == best[s] else cell)
        rows.append([run_label(name), *cells, f"{run['time_to_first_embedding_s']:.1f} s"])
    header = ["sentences/s (tokens/s)"] + [s.replace("x", " tokens x ", 1) for s in shapes]
    return table(header + ["time to first embedding"], rows, "l" + "r" * (len(shapes) + 1))


def inference_speedup(data):
    """Speed-ups over sentence-transformers, as the benchmark prints them
    (ratios of tokens/s, the more precise figure, at equal shapes)."""
    (d,) = data
    runs = d["runs"]
    shapes = list(next(iter(runs.values()))["throughput"])
    rows = []
    for reference_dtype, own_dtype, label in (
        ("float32", None, "fastest keras_egemma run over sentence-transformers float32"),
        ("float32", "float32", "fastest keras_egemma float32 run over sentence-transformers float32"),
        ("bfloat16", "bfloat16",
         "fastest keras_egemma bfloat16 run over sentence-transformers bfloat16"),
    ):
        reference = runs.get(f"sentence_transformers (torch, {reference_dtype})")
        own = {n: r for n, r in runs.items() if parse_run_name(n)[0] == "keras_egemma"
               and (own_dtype is None or parse_run_name(n)[2] == own_dtype)}
        if not reference or not own:
            continue
        cells = []
        for s in shapes:
            speed, name = max((r["throughput"][s]["tokens_per_s"], n) for n, r in own.items())
            ratio = speed / reference["throughput"][s]["tokens_per_s"]
            _, backend, dtype = parse_run_name(name)
            which = BACKENDS[backend] + ("" if own_dtype else f" {dtype}")
            cells.append(f"{ratio:.2f}x ({which})")
        rows.append([label, *cells])
    return table([""] + [s.replace("x", " tokens x ", 1) for s in shapes], rows)


def inference_shape_memory(data):
    """Peak RSS of each run's process while it encodes each shape."""
    (d,) = data
    runs = d["runs"]
    shapes = list(next(iter(runs.values()))["throughput"])
    rows = [[run_label(name), *(f"{runs[name]['throughput'][s]['peak_rss_bytes'] / GIB:.2f} GiB"
                                for s in shapes)] for name in sorted(runs, key=run_order)]
    header = ["peak RSS while encoding"] + [s.replace("x", " tokens x ", 1) for s in shapes]
    attention = sorted({r["attention_implementation"] for r in runs.values()
                        if "attention_implementation" in r})
    caption = ("The whole process, loaded model included; its high-water mark is reset before "
               "each shape. sentence-transformers ran transformers' attention implementation "
               f"{', '.join(f'`{a}`' for a in attention) or 'n/a'} (its default)")
    return table(header, rows, "l" + "r" * len(shapes)) + f"\n\n{caption}."


def inference_memory(data):
    memory = {}
    for d in data:
        memory.update(d["memory"])

    rows = []
    # By library, then backend, then format.
    for name in sorted(memory, key=lambda n: (run_order(n)[0], run_order(n)[2], run_order(n)[1])):
        m = memory[name]
        rows.append([run_label(name), f"{m['peak_rss_bytes'] / GIB:.2f} GiB",
                     f"{m['model_memory_bytes'] / GIB:.2f} GiB"])
    return table(["load, then embed 32 x 128 tokens", "peak RSS of the process",
                  "above RSS after imports + tokenizer"], rows, "lrr")


LAYOUTS = {"keras_egemma": "this library's preset",
           "huggingface": "Hugging Face / sentence-transformers folder",
           "keras_hub": "KerasHub preset"}


def _loading_runs(data):
    (d,) = data
    return d["runs"], f"{d['texts']['count']} x {d['texts']['tokens']} tokens"


def loading_memory(data):
    """Peak above the post-import baseline, layout x backend."""
    runs, texts = _loading_runs(data)
    peaks = {(r["library"], r["backend"], r["layout"]): r["peak_bytes"] for r in runs}
    rows = []
    for layout, label in LAYOUTS.items():
        cells = [peaks.get(("keras_egemma", b, layout)) for b in BACKEND_ORDER]
        reference = peaks.get(("sentence_transformers", "torch", layout))
        rows.append([label] + [
            "n/a" if c is None else f"{c / GIB:.2f} GiB" for c in cells + [reference]])
    header = [f"load, then embed {texts}"] + [BACKENDS[b] for b in BACKEND_ORDER] + [
        "sentence-transformers"]
    return table(header, rows, "lrrrr")


def loading_memory_breakdown(data):
    """Per run: the load's peak, what the loaded model holds, the embed's peak."""
    runs, _ = _loading_runs(data)
    order = list(LAYOUTS)
    runs = sorted(runs, key=lambda r: (r["library"] != "keras_egemma",
                                       BACKEND_ORDER.index(r["backend"]),
                                       order.index(r["layout"])))
    rows = []
    for r in runs:
        who = (BACKENDS[r["backend"]] if r["library"] == "keras_egemma"
               else "sentence-transformers (PyTorch)")
        rows.append([who, LAYOUTS[r["layout"]], *(
            f"{r[k] / GIB:.2f} GiB" for k in ("load_peak_bytes", "after_load_bytes",
                                              "embed_peak_bytes"))])
    return table(["run", "from", "peak while loading", "held once loaded",
                  "peak while embedding"], rows, "llrrr")


def quantized_full_size(data):
    """Weights on disk and model memory per format and backend."""
    sizes, memory = {}, {}
    for d in data:
        sizes.update(d["sizes"])
        memory.update(d["memory"])
    formats = [f for f in DTYPE_ORDER if f"keras_egemma ({f})" in sizes]
    rows = []
    for f in formats:
        cells = []
        for backend in BACKEND_ORDER:
            m = memory.get(f"keras_egemma ({backend}, {f})")
            cells.append("n/a" if m is None else f"{m['model_memory_bytes'] / GIB:.2f} GiB")
        rows.append([f, f"{sizes[f'keras_egemma ({f})'] / 1e9:.3f} GB", *cells])
    header = ["format", "weights on disk"] + [
        f"model memory, {BACKENDS[b]}" for b in BACKEND_ORDER]
    return table(header, rows, "lr" + "r" * len(BACKEND_ORDER))


VARIANTS = {"full": "", "lora8": ", LoRA rank 8", "mixed_bfloat16": ", mixed bfloat16"}


def train_speed(data):
    configs = {k: v for d in data for k, v in d["config"]["configurations"].items()}
    runs = [r for d in data for r in d["runs"]]
    shapes = []
    for r in runs:
        if (r["config"], r["batch"], r["length"]) not in shapes:
            shapes.append((r["config"], r["batch"], r["length"]))
    rows = []
    for config, batch, length in shapes:
        c = configs[config]
        shape = (f"{config} ({c['num_layers']} layers, {c['hidden_size']} wide), "
                 f"{batch} pairs x {length} tokens")
        shape_runs = [r for r in runs if (r["config"], r["batch"], r["length"]) ==
                      (config, batch, length)]
        shape_runs.sort(key=lambda r: (r["library"] != "keras_egemma", list(VARIANTS).index(
            r["variant"]), BACKEND_ORDER.index(r["backend"])))
        for r in shape_runs:
            label = (f"keras_egemma, {BACKENDS[r['backend']]}{VARIANTS[r['variant']]}"
                     if r["library"] == "keras_egemma" else
                     "sentence-transformers MNRL (PyTorch)")
            speedup = r["speedup_vs_reference"]
            rows.append([shape, label, num(r["median_step_s"]), num(r["first_step_s"], 1),
                         f"{r['tokens_per_s']:,.0f}", f"{r['peak_rss_bytes'] / GIB:.1f} GiB",
                         "n/a" if speedup is None else f"{speedup:.2f}x"])
            shape = ""
    header = ["shape", "run", "median step (s)", "first step (s)", "tokens/s", "peak RSS",
              "vs reference"]
    steps = ", ".join(f"3 to {d['config']['steps']} ({', '.join(d['config']['configurations'])})"
                      for d in data)
    return table(header, rows, "llrrrrr") + (
        f"\n\nRandom weights; the median step is over steps {steps} of each run.")


def memory_soak(data):
    (d,) = data
    rows = []
    for name, s in d["phases"].items():
        slope = s["slope_mb_per_1000_texts"]
        arrays = ("n/a" if s["live_arrays_end"] is None
                  else f"{s['live_arrays_after_warmup']} -> {s['live_arrays_end']}")
        growth = s["rss_end_mb"] - s["rss_after_warmup_mb"]
        rows.append([
            name, f"{s['texts']:,}", num(s["rss_after_warmup_mb"], 0) + " MB",
            num(s["rss_end_mb"], 0) + " MB", f"{growth:+,.0f} MB",
            num(s["rss_max_mb"], 0, "n/a") + ("" if s["rss_max_mb"] is None else " MB"),
            "n/a" if slope is None else f"{slope:+.2f} MB",
            arrays,
        ])
    out = table(["phase", "texts", "RSS after warm-up", "RSS at the end", "growth",
                 "max RSS", "slope per 1,000 texts after warm-up", "live JAX arrays"], rows,
                "lrrrrrrl")
    a = d["args"]
    summary = (f"Preset `{a['preset']}`, batch {a['batch_size']}, sequence length "
               f"{d['sequence_length']}; RSS after loading {num(d['rss_after_loading_mb'], 0)} MB, "
               f"peak RSS {num(d['peak_rss_mb'], 0)} MB; MB = 10^6 bytes.")
    return f"{out}\n\n{summary}"


def bundled_model(data):
    (d,) = data
    names = {"python docs": "Python docs", "wordnet": "WordNet"}
    models = [("all-MiniLM-L6-v2 (teacher)", "all-MiniLM-L6-v2 (teacher)"),
              ("embeddinggemma_mini", "`embeddinggemma_mini`"),
              ("random init", "same shape, random weights")]
    rows = []
    for key, results in d["held_out"].items():
        pairs = d.get("held_out_pairs", {}).get(key)
        label = names.get(key, key) + (f" ({pairs:,} pairs)" if pairs else "")
        for i, (model, model_label) in enumerate(models):
            r = results[model]
            rows.append([label if i == 0 else "", model_label, num(r["ndcg@10"], 3),
                         num(r["mrr@10"], 3), num(r["recall@10"], 3),
                         num(r["teacher_cosine"], 3)])
        mini, teacher = results["embeddinggemma_mini"], results["all-MiniLM-L6-v2 (teacher)"]
        rows.append(["", "*mini / teacher*",
                     f"*{mini['ndcg@10'] / teacher['ndcg@10']:.0%}*", "",
                     f"*{mini['recall@10'] / teacher['recall@10']:.0%}*", ""])
    return table(["held-out set", "model", "nDCG@10", "MRR@10", "recall@10", "teacher cosine"],
                 rows, "llrrrr")


def bundled_model_speed(data):
    (d,) = data
    rows = [[f"{r['tokens_per_text']:,}", f"{r['sentences_per_s']:,.0f}",
             f"{r['tokens_per_s']:,.0f}"] for r in d["rows"]]
    caption = (f"`{d['preset']}` on {BACKENDS[d['backend']]}, {d['dtype']}, batch "
               f"{d['batch_size']}, {d['num_texts']} texts per length, best of {d['repeats']}")
    return table(["tokens per text", "sentences/s", "tokens/s"], rows, "rrr") + f"\n\n{caption}."


def quantization_fidelity(data):
    (d,) = data
    # A run on a shared machine keeps its speeds in the JSON, not in the table.
    speed = not d.get("shared_machine")
    rows = []
    for fmt, r in d["results"].items():
        cosine = "1" if fmt == "float32" else f"{r['cosine_mean']:.5f} / {r['cosine_min']:.5f}"
        rows.append([f"`{fmt}`", f"{r['weights_bytes'] / 1e6:.2f} MB",
                     f"{r['model_memory_bytes'] / 2**20:,.0f} MiB"]
                    + ([f"{r['sentences_per_s']:.1f}"] if speed else [])
                    + [cosine, f"{r['top10_overlap']:.3f}"])
    header = (["mode", "weights on disk", "model memory"] + (["sentences/s"] if speed else [])
              + ["cosine to float32 (mean / min)", "top-10 agreement"])
    model = d.get("model") or f"`{d['preset']}`"
    caption = f"{model} on {BACKENDS[d['backend']]}, {d['texts']} texts, batch {d['batch_size']}"
    note = f" {d['note']}" if d.get("note") else ""
    return table(header, rows, "lrr" + ("r" if speed else "") + "ll") + f"\n\n{caption}.{note}"


def qat_vs_ptq(data):
    (d,) = data
    rows = []
    for backend, r in d["results"].items():
        ratio = (r["qat"] - r["float"]) / (r["ptq"] - r["float"])
        rows.append([BACKENDS[backend], num(r["before"]), num(r["float"]), num(r["ptq"]),
                     num(r["qat"]), f"{ratio:.2f}"])
    return table(["backend", "before finetuning", "finetuned, float", "PTQ", "QAT",
                  "QAT's gap to float / PTQ's"], rows, "lrrrrr")


def serve_load(data):
    (d,) = data
    rows = []
    for backend, run in d["runs"].items():
        rows.append([BACKENDS[backend], "`encode`, batches of 32", "",
                     num(run["encode_texts_per_s"], 1), "100%", "", "", ""])
        for level in run["levels"]:
            rows.append(["", f"{level['clients']} concurrent clients", f"{level['requests']:,}",
                         num(level["texts_per_s"], 1), f"{level['of_encode']:.0%}",
                         num(level["p50_ms"], 0), num(level["p99_ms"], 0), str(level["errors"])])
    shortest, _, longest = next(iter(d["runs"].values()))["tokens_per_text"]
    load = d["load_average"]
    caption = (f"Served model: {d['model']}; one text of {shortest}-{longest} tokens "
               "per request, each client sending its next request when the answer arrives; "
               "`encode` timed in the server's process on the same texts; load average "
               f"{num(load['before'], 1)} before and {num(load['after'], 1)} after the run")
    note = f" {d['note']}" if d.get("note") else ""
    return table(["backend", "load", "requests", "texts/s", "of `encode`", "p50 ms", "p99 ms",
                  "errors"], rows, "llrrrrrr") + f"\n\n{caption}.{note}"


def compressed_search(data):
    (d,) = data
    targets = d["targets"]
    rows = []
    for dim, run in d["runs"].items():
        for r in run:
            target = targets.get(r["family"])
            recall = f"{r['recall_at_10']:.3f}"
            if target is not None:
                recall += f" ({'meets' if r['recall_at_10'] >= target else 'below'} {target})"
            rows.append([dim, r["method"], num(r["bytes_per_vector"], 0), recall,
                         num(r["p50_ms_single_query"], 2), num(r["ms_per_query_batched"], 3),
                         r["note"]])
    threads = d["threads"]["OMP_NUM_THREADS"] or "all cores"
    caption = (f"`{d['model']}` on {BACKENDS[d['backend']]}: {d['documents']:,} documents "
               f"({d['corpus']}), {d['queries']} queries, recall@{d['k']} against exact "
               f"float32 search; threads: {threads}; FAISS {d['faiss_version']}")
    note = f" {d['note']}" if d.get("note") else ""
    return table(["dim", "method", "bytes / vector", f"recall@{d['k']} (target)",
                  "p50 ms, one query", "ms / query, batched", "note"], rows,
                 "llrrrrl") + f"\n\n{caption}.{note}"


def beam_embed(data):
    (d,) = data
    rows = [[f"{d['texts']:,}", str(d["workers"]), f"{d['input_shards']} / {d['output_shards']}",
             "yes" if d["every_id_once"] else "no",
             f"{d['max_abs_difference_to_encode']:.1e} (bound {d['bound']:.0e})",
             f"{d['pipeline_seconds']:.1f}", f"{d['texts_per_second']:.1f}"]]
    caption = (f"`{d['preset']}` on {BACKENDS[d['backend']]}, DirectRunner in multi-process mode; "
               "the wall time includes starting the workers and loading the model in each")
    return table(["texts", "workers", "shards in / out", "every id once",
                  "max abs difference to `encode`", "pipeline s", "texts/s"], rows,
                 "rrrlrrr") + f"\n\n{caption}."


def gguf_parity(data):
    (d,) = data
    rows = []
    for file_type, r in d["results"].items():
        if "error" in r:
            rows.append([file_type, f"failed: {r['error']}", "", "", "", "", "", "no"])
            continue
        rows.append([file_type, f"{r['min_cosine']:.7f} (bound {r['bound']})",
                     f"{r['mean_cosine']:.7f}", f"{r['min_cosine_600_plus']:.7f}",
                     f"{r['max_abs_diff']:.1e}", r["same_token_ids"],
                     f"{r['file_bytes'] / 2**20:,.0f}", "yes" if r["passes"] else "no"])
    run = next((r for r in d["results"].values() if "error" not in r), {})
    lengths = d["token_lengths"]
    caption = (f"{d['texts']} texts of {min(lengths):,}-{max(lengths):,} tokens "
               f"({sum(n >= 600 for n in lengths)} of 600+), llama-cpp-python "
               f"{run.get('llama_cpp_python', 'n/a')}; llama.cpp's CPU features: "
               f"`{run.get('llama_cpp_system_info', 'n/a')}`")
    return table(["type", "min cosine to ours", "mean cosine", "min cosine, 600+ tokens",
                  "max abs difference", "same token ids", "file MiB", "passes"], rows,
                 "llrrrrrl") + f"\n\n{caption}."


def embedding_gemma2_long_parity(data):
    """Ours against transformers on one long input, with float64's floor."""
    rows = []
    for d in data:
        floor = d.get("float64_floor", {})
        rows.append([d.get("weights", "transformers"), f"{d.get('layers', 24)}",
                     f"{d['tokens']:,}", f"{d['token_embeddings_max_abs']:.1e}",
                     f"{d['embedding_max_abs']:.1e}", f"{d['embedding_cosine']:.7f}",
                     "n/a" if not floor else f"{floor['transformers_float32_max_abs']:.1e}",
                     "n/a" if not floor else f"{floor['ours_max_abs']:.1e}",
                     "yes" if d["within_bound"] else "no"])
    return table(["random weights", "layers", "tokens", "token embeddings, max abs",
                  "embedding, max abs", "embedding cosine",
                  "transformers float32 to its float64", "ours to transformers' float64",
                  f"within {data[0]['bound']:g}"], rows, "lrrrrrrrl")


# name: (JSON files in docs/results/, function of their contents -> markdown)
TABLES = {
    "loading_memory": (["loading_memory.json"], loading_memory),
    "loading_memory_breakdown": (["loading_memory.json"], loading_memory_breakdown),
    "inference_speed": (["inference_speed.json"], inference_speed),
    "inference_speedup": (["inference_speed.json"], inference_speedup),
    "inference_memory": (["inference_memory.json", "inference_memory_torch.json"],
                         inference_memory),
    "quantized_full_size": (["inference_memory.json", "inference_memory_torch.json"],
                            quantized_full_size),
    "train_speed": (["train_speed.json", "train_speed_small.json"], train_speed),
    "train_speed_variants": (["train_speed_variants.json"], train_speed),
    "train_speed_lora": (["train_speed_lora_jax.json", "train_speed_lora_tensorflow.json"],
                         train_speed),
    "memory_soak": (["memory_soak.json"], memory_soak),
    "bundled_model": (["bundled_model.json"], bundled_model),
    "bundled_model_speed": (["bundled_model_speed.json"], bundled_model_speed),
    "quantization_fidelity": (["quantization_fidelity.json"], quantization_fidelity),
    "quantization_fidelity_embeddinggemma2": (["quantization_fidelity_embeddinggemma2.json"],
                                              quantization_fidelity),
    "embeddinggemma2_speed": (["inference_speed_embeddinggemma2.json"], inference_speed),
    "embeddinggemma2_speedup": (["inference_speed_embeddinggemma2.json"], inference_speedup),
    "embeddinggemma2_memory": (["inference_speed_embeddinggemma2.json"], inference_shape_memory),
    "qat_vs_ptq": (["qat_vs_ptq.json"], qat_vs_ptq),
    "serve_load": (["serve_load.json"], serve_load),
    "beam_embed": (["beam_embed.json"], beam_embed),
    "compressed_search": (["compressed_search.json"], compressed_search),
    "gguf_parity": (["gguf_parity.json"], gguf_parity),
    "embedding_gemma2_long_parity": (["embedding_gemma2_long_parity.json",
                                      "embedding_gemma2_long_parity_transformers_init.json"],
                                     embedding_gemma2_long_parity),
}


# --- Driver -------------------------------------------------------------------


def render_block(name, doc_dir):
    files, function = TABLES[name]
    data = [load(f) for f in files]
    lines = "\n\n".join(provenance_line(f, d, doc_dir) for f, d in zip(files, data))
    return f"{function(data)}\n\n{lines}\n"


def documents():
    paths = [os.path.join(ROOT, "README.md")]
    paths += sorted(os.path.join(DOCS, n) for n in os.listdir(DOCS) if n.endswith(".md"))
    return [p for p in paths if os.path.exists(p)]


def render_text(text, doc_dir):
    """(new text, names of the tables whose body changed, tables that cannot be
    rendered: an unknown name, or a JSON file missing or without a field)."""
    stale, unknown = [], []

    def replace(match):
        name = match.group("name")
        if name not in TABLES:
            unknown.append(name)
            return match.group(0)
        try:
            body = render_block(name, doc_dir)
        except (OSError, ValueError, KeyError, TypeError) as error:
            unknown.append(f"{name} ({type(error).__name__}: {error})")
            return match.group(0)
        if body != match.group("body"):
            stale.append(name)
        return match.group("open") + body + match.group("close")

    return MARKERS.sub(replace, text), stale, unknown


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if any table differs from its JSON")
    args = parser.parse_args(argv)
    problems = []
    for path in documents():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new, stale, unknown = render_text(text, os.path.dirname(path))
        rel = os.path.relpath(path, ROOT)
        problems += [f"{rel}: cannot render table {name}" for name in unknown]
        if args.check:
            problems += [f"{rel}: table {name!r} is stale" for name in stale]
        elif new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"rendered {rel}: {', '.join(stale)}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        if args.check:
            print("run `python docs/render.py` to bring the tables up to date", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
