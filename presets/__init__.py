"""Registered preset names.

`embeddinggemma_300m` is the published model (downloaded on first use; its
weights are under the Gemma terms and never ship with this package).
`embeddinggemma_mini` ships inside the package: a small model of the same
architecture trained by distilling all-MiniLM-L6-v2 (`presets/build_mini_preset.py`),
the default of the command line. `embeddinggemma_tiny` ships too: random
weights, for tests.
"""

import os

PRESETS = {
    "embeddinggemma_300m": {
        "description": (
            "google/embeddinggemma-300m: 24 layers, 768 wide, 308M parameters, "
            "768-d embeddings (MRL 512/256/128). Requires accepting the Gemma "
            "terms on Kaggle or Hugging Face."
        ),
        "handles": [
            "kaggle://keras/embeddinggemma/keras/embedding_gemma3_300m/2",
            "hf://google/embeddinggemma-300m",
        ],
    },
    "embeddinggemma2": {
        "description": (
            "google/embeddinggemma-2, its text model: EmbeddingGemma 2 (Gemma 4-based, "
            "24 layers, 512 wide, per-layer embeddings, 8,192-token context, 768-d "
            "embeddings, MRL 512/256/128); vision and audio towers are not loaded."
        ),
        "handles": ["hf://google/embeddinggemma-2"],
        # What to do when no handle downloads (the default names the Gemma terms).
        "unavailable": (
            "Check the network connection, or download the repository where the Hub "
            "can be reached (`huggingface-cli download google/embeddinggemma-2 "
            "--local-dir ./embeddinggemma-2`) and pass that folder as the preset "
            "(`--preset ./embeddinggemma-2` on the command line)."
        ),
    },
    "embeddinggemma_mini": {
        "description": (
            "A small EmbeddingGemma-architecture model bundled with the package "
            "(4 layers, 192 wide, 384-d embeddings, MRL 256/128/64), distilled from "
            "all-MiniLM-L6-v2 on Python documentation and WordNet glosses; works "
            "offline (presets/build_mini_preset.py)."
        ),
        "path": os.path.join(os.path.dirname(__file__), "embeddinggemma_mini"),
    },
    "embeddinggemma_tiny": {
        "description": (
            "A small EmbeddingGemma-architecture model bundled with the package "
            "for tests and offline demos (a few MB)."
        ),
        "path": os.path.join(os.path.dirname(__file__), "embeddinggemma_tiny"),
    },
}


def list_presets():
    """`{name: description}` of the registered presets."""
    return {name: spec["description"] for name, spec in PRESETS.items()}
