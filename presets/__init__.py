"""Registered preset names.

`embeddinggemma_300m` is the published model (downloaded on first use; its
weights are under the Gemma terms and never ship with this package).
`embeddinggemma_tiny` ships inside the package: a small model of the same
architecture for tests and offline demos.
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
