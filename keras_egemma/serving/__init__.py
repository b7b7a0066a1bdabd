"""HTTP serving: an OpenAI-compatible embeddings endpoint with dynamic batching.

Needs the `serve` extra (Starlette, uvicorn, prometheus-client):
`pip install "keras-egemma[serve]"`, then `keras-egemma serve` or, in Python,
`create_app(model)` run by any ASGI server. The names below are imported on
first use, so the command line imports this package without the extra.

Example:
```python
from keras_egemma.serving import create_app, serve
serve(create_app(model), port=8080)
```
"""

import importlib

_NAMES = {
    "create_app": "app",
    "served_dimensions": "app",
    "DynamicBatcher": "batcher",
    "EmbeddingResult": "batcher",
    "APIError": "errors",
    "Overloaded": "errors",
    "Limits": "schemas",
    "ServerMetrics": "metrics",
    "serve": "server",
}
__all__ = list(_NAMES)


def __getattr__(name):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
