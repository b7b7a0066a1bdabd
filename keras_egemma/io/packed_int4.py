"""Keras' weight saving and loading without unpacking int4 weights
(`int4_weights_left_packed`).

To find a layer's children, Keras' saving walk (run by `save_weights` and
`load_weights`) reads every attribute that `dir()` lists. On an int4 layer
three of them are properties that unpack the packed weights:
`Embedding.embeddings`, `Dense.kernel` and `EinsumDense.kernel`. For the
published model that is an int8 copy of the whole embedding table (reading
every page of a table mapped from the file) and a compiled unpacking program
per kernel shape, on every load and save (docs/performance.md has the
memory figures). None of these values is a child to walk into, so inside the
block the properties raise `AttributeError` on int4 layers, which the walk
skips.
"""

import contextlib

from keras_egemma import _keras_compat


def _left_packed(layer):
    # LoRA layers merge through the property when saving: left as they are.
    return layer.quantization_mode == "int4" and not layer.lora_enabled


@contextlib.contextmanager
def int4_weights_left_packed():
    """Within the block, Keras' `save_weights` / `load_weights` leave int4
    layers' packed weights packed (see the module docstring).

    Only the calling thread (or task) is affected: elsewhere `layer.kernel`
    of an int4 layer unpacks as usual, even while the block runs.

    Example:
    ```python
    with int4_weights_left_packed():
        model.load_weights("model.weights.h5")
    ```
    """
    with _keras_compat.unpacking_properties_raise(_left_packed):
        yield
