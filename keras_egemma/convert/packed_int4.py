"""Keras' weight saving and loading without unpacking int4 weights
(`int4_weights_left_packed`).

To find a layer's children, Keras' saving walk (`saving_lib._walk_saveable`,
run by `save_weights` and `load_weights`) reads every attribute that `dir()`
lists. On an int4 layer three of them are properties that unpack the packed
weights: `Embedding.embeddings`, `Dense.kernel` and `EinsumDense.kernel`.
For the published model that is a 192 MiB int8 copy of the embedding table
(reading every page of a table mapped from the file) and a compiled
unpacking program per kernel shape, on every load and save: the int4 model's
load peaked at 0.61 GiB above the process for 0.19 GiB of weights. None of
these values is a child to walk into, so inside the block the properties
raise `AttributeError` on int4 layers, which the walk skips.
"""

import contextlib

import keras

_UNPACKING_PROPERTIES = (
    (keras.layers.Embedding, "embeddings"),
    (keras.layers.Dense, "kernel"),
    (keras.layers.EinsumDense, "kernel"),
)


def _packed_only(unpacking, name):
    def get(layer):
        # LoRA layers merge through the property when saving: left as they are.
        if layer.quantization_mode == "int4" and not layer.lora_enabled:
            raise AttributeError(
                f"`{name}` of an int4 layer is not unpacked while weights are saved or loaded."
            )
        return unpacking.fget(layer)

    return property(get, unpacking.fset, unpacking.fdel, unpacking.__doc__)


@contextlib.contextmanager
def int4_weights_left_packed():
    """Within the block, Keras' `save_weights` / `load_weights` leave int4
    layers' packed weights packed (see the module docstring).

    The properties are swapped on the classes while the block runs, so other
    threads reading `layer.kernel` of an int4 layer meanwhile get an
    `AttributeError`.

    Example:
    ```python
    with int4_weights_left_packed():
        model.load_weights("model.weights.h5")
    ```
    """
    originals = [(cls, name, cls.__dict__[name]) for cls, name in _UNPACKING_PROPERTIES]
    for cls, name, unpacking in originals:
        setattr(cls, name, _packed_only(unpacking, name))
    try:
        yield
    finally:
        for cls, name, unpacking in originals:
            setattr(cls, name, unpacking)
