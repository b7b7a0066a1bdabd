"""Every use of Keras and KerasHub internals, in one module.

The rest of the library reaches private Keras / KerasHub attributes only
through the functions here. Each reliance is a `Patch`: named, with the
versions it was checked against (`KERAS_VERSIONS`, `KERAS_HUB_VERSIONS`,
the ranges `pyproject.toml` pins) and a `check()` that raises
`KerasCompatError` naming the patch when a release changes what it relies on
(`tests/test_keras_compat.py` runs every check, and each patch's behaviour).

Patches that replace something of Keras' (a class attribute, a module
attribute) do so only inside a context manager, and only for the calling
context: the replacement is installed while at least one block runs, and
outside a block (another thread, another asyncio task) it behaves exactly
as the original.
"""

import contextlib
import contextvars
import functools
import inspect
import re
import threading

import keras
import keras_hub
import numpy as np
from keras.src.backend.common import global_state
from keras.src.quantizers.quantizers import dequantize_with_sz_map as _dequantize_with_sz_map
from keras.src.saving import saving_lib
from keras_hub.tokenizers import SentencePieceTokenizer

# The releases every patch below was checked against: [lowest, highest).
KERAS_VERSIONS = ((3, 15), (3, 16))
KERAS_HUB_VERSIONS = ((0, 32), (0, 33))


class KerasCompatError(RuntimeError):
    """A Keras / KerasHub release no longer has what a patch relies on."""


class Patch:
    """One reliance on Keras / KerasHub internals.

    Args:
        name: what the patch is, e.g. `"zero_copy_h5_store"`.
        guards: the behaviour of this library that depends on it.
        check: a function that raises `AssertionError` (with the detail)
            when the installed release lacks what the patch relies on.
    """

    def __init__(self, name, guards, check):
        self.name = name
        self.guards = guards
        self._check = check

    def check(self):
        """Raises `KerasCompatError` naming the patch if it no longer fits."""
        try:
            self._check()
        except Exception as e:  # noqa: BLE001 - any failure means the patch no longer fits.
            raise KerasCompatError(
                f"keras_egemma's Keras patch {self.name!r} (checked on keras "
                f"{_range(KERAS_VERSIONS)}, keras-hub {_range(KERAS_HUB_VERSIONS)}; installed "
                f"keras {keras.__version__}, keras-hub {keras_hub.__version__}) no longer "
                f"fits: {e or type(e).__name__}. It guards: {self.guards}"
            ) from e

    def __repr__(self):
        return f"Patch({self.name!r})"


PATCHES = {}


def _patch(name, guards):
    def register(check):
        PATCHES[name] = Patch(name, guards, check)
        return check

    return register


def _range(versions):
    (lo_major, lo_minor), (hi_major, hi_minor) = versions
    return f">={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"


def _version_tuple(version):
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def check_versions():
    """Raises `KerasCompatError` when keras or keras-hub is outside the tested
    ranges (pip keeps them inside; this catches a forced install)."""
    for package, version, (low, high) in (
        ("keras", keras.__version__, KERAS_VERSIONS),
        ("keras-hub", keras_hub.__version__, KERAS_HUB_VERSIONS),
    ):
        if not low <= _version_tuple(version) < high:
            raise KerasCompatError(
                f"{package} {version} is outside the range keras_egemma was tested with "
                f"({_range((low, high))}). Install a tested release: "
                f"`pip install \"{package}{_range((low, high))}\"`."
            )


def _has_attribute(owner, name, kind=None):
    value = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    assert value is not None, f"{getattr(owner, '__name__', owner)}.{name} is gone"
    if kind is not None:
        assert isinstance(value, kind), (
            f"{owner.__name__}.{name} is a {type(value).__name__}, not a {kind.__name__}"
        )


class _ScopedSwap:
    """Replaces `owner.name` while at least one block is open anywhere, with
    a replacement that must itself fall back to the original outside
    `self.active` (a context variable, so threads and tasks that did not
    open a block see Keras' own behaviour)."""

    def __init__(self, owner, name, make_replacement):
        self.owner = owner
        self.name = name
        self.make_replacement = make_replacement
        self.active = contextvars.ContextVar(f"keras_egemma_{name}", default=False)
        self._lock = threading.Lock()
        self._open = 0
        self._original = None

    def _current(self):
        return self.owner.__dict__[self.name] if isinstance(self.owner, type) else getattr(
            self.owner, self.name
        )

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            if self._open == 0:
                self._original = self._current()
                setattr(self.owner, self.name, self.make_replacement(self._original, self.active))
            self._open += 1
        token = self.active.set(True)
        try:
            yield
        finally:
            self.active.reset(token)
            with self._lock:
                self._open -= 1
                if self._open == 0:
                    setattr(self.owner, self.name, self._original)
                    self._original = None


# --- zero_copy_h5_store ------------------------------------------------------


@_patch(
    "zero_copy_h5_store",
    "loading presets with aligned / memory-mapped reads (JAX adopts them without a "
    "copy) and saving large tensors page-aligned (keras_egemma.io.mapped_weights)",
)
def _check_zero_copy_h5_store():
    store = saving_lib.H5IOStore
    for method in ("_get_h5_file", "__getitem__", "__init__"):
        _has_attribute(store, method)
    assert callable(saving_lib.safe_get_h5_dataset), "saving_lib.safe_get_h5_dataset is gone"
    # `load_weights` / `save_weights` look the store class up on the module.
    for function in (saving_lib.load_weights_only, saving_lib.save_weights_only):
        assert "H5IOStore" in function.__code__.co_names, (
            f"saving_lib.{function.__name__} no longer builds `H5IOStore` by name"
        )


H5IOStore = saving_lib.H5IOStore


def h5_dataset(store, key):
    """The h5py dataset `key` of the store's current entry (Keras'
    `safe_get_h5_dataset`, which names the key when it is missing)."""
    return saving_lib.safe_get_h5_dataset(store._h5_entry_group, key)


def _contextual_store(store_cls):
    """The replacement for `saving_lib.H5IOStore`: `store_cls`, whose own
    methods run only inside a block and Keras' outside it (a subclass of
    Keras' class, so Keras' `isinstance` checks pass either way)."""

    def make(original, active):
        def dispatch(own, keras_own):
            @functools.wraps(own)
            def method(self, *args, **kwargs):
                return (own if active.get() else keras_own)(self, *args, **kwargs)

            return method

        methods = {
            name: dispatch(value, getattr(original, name))
            for name, value in vars(store_cls).items()
            if inspect.isfunction(value)
        }
        return type(original.__name__, (store_cls,), methods)

    return make


_STORE_SWAPS = {}


@contextlib.contextmanager
def weights_store(store_cls):
    """Within the block (and in this thread / task only), Keras'
    `save_weights` / `load_weights` of a `.weights.h5` file use `store_cls`,
    a subclass of Keras' `H5IOStore`.

    Example:
    ```python
    with weights_store(MyStore):
        model.load_weights("model.weights.h5")
    ```
    """
    swap = _STORE_SWAPS.get(store_cls)
    if swap is None:
        swap = _STORE_SWAPS[store_cls] = _ScopedSwap(
            saving_lib, "H5IOStore", _contextual_store(store_cls)
        )
    with swap():
        yield


# --- int4_properties_left_packed ----------------------------------------------

_UNPACKING_PROPERTIES = (
    (keras.layers.Embedding, "embeddings"),
    (keras.layers.Dense, "kernel"),
    (keras.layers.EinsumDense, "kernel"),
)


@_patch(
    "int4_properties_left_packed",
    "saving and loading int4 presets without unpacking every int4 weight "
    "(keras_egemma.io.packed_int4)",
)
def _check_int4_properties_left_packed():
    for cls, name in _UNPACKING_PROPERTIES:
        _has_attribute(cls, name, property)
    walk = saving_lib._walk_saveable
    assert "dir" in walk.__code__.co_names, "saving_lib._walk_saveable no longer walks dir()"


def _packed_only_property(raise_for):
    def make(original, active):
        def get(layer):
            if active.get() and raise_for(layer):
                raise AttributeError(
                    f"`{original.fget.__name__}` of an int4 layer is not unpacked while "
                    "weights are saved or loaded."
                )
            return original.fget(layer)

        return property(get, original.fset, original.fdel, original.__doc__)

    return make


_PROPERTY_SWAPS = {}


@contextlib.contextmanager
def unpacking_properties_raise(raise_for):
    """Within the block (this thread / task only), reading the unpacking
    properties `Embedding.embeddings`, `Dense.kernel` and `EinsumDense.kernel`
    raises `AttributeError` on layers where `raise_for(layer)` is true;
    Keras' saving walk (`dir()` + `getattr`) skips them.

    Example:
    ```python
    with unpacking_properties_raise(lambda layer: layer.quantization_mode == "int4"):
        model.save_weights("model.weights.h5")
    ```
    """
    with contextlib.ExitStack() as stack:
        for cls, name in _UNPACKING_PROPERTIES:
            key = (cls, name, raise_for)
            swap = _PROPERTY_SWAPS.get(key)
            if swap is None:
                swap = _PROPERTY_SWAPS[key] = _ScopedSwap(
                    cls, name, _packed_only_property(raise_for)
                )
            stack.enter_context(swap())
        yield


# --- deferred_variables -----------------------------------------------------

_PENDING = "uninitialized_variables"


@_patch(
    "deferred_variables",
    "building a model whose weights come from a file without random initial values "
    "(keras_egemma.io.deferred_variables)",
)
def _check_deferred_variables():
    from keras.src.backend.common import variables

    source = variables.register_uninitialized_variable.__code__.co_consts
    assert _PENDING in source, f"uninitialised variables are no longer kept as {_PENDING!r}"
    with variables_created_uninitialized() as created:
        probe = keras.Variable(initializer="ones", shape=(2,), name="probe")
    assert [v for v in created if v is probe], "the variable was not registered as uninitialised"
    assert not variable_has_value(probe), "the variable got a value in the block"
    give_variable_value(probe, keras.ops.full((2,), 3.0))
    assert variable_has_value(probe), "the value given was not adopted"
    assert np.allclose(keras.ops.convert_to_numpy(probe), 3.0), "the variable holds another value"


@contextlib.contextmanager
def variables_created_uninitialized():
    """Variables created in the block get no value; yields a list that holds
    them once the block ends. They are no longer Keras' to initialise (a
    later `initialize_all_variables` would overwrite loaded weights), and
    have no initializer: the caller gives each a value with
    `give_variable_value`.

    Example:
    ```python
    with variables_created_uninitialized() as created:
        layer = keras.layers.Dense(4); layer.build((None, 3))
    for v in created:
        give_variable_value(v, keras.ops.zeros(v.shape))
    ```
    """
    already = list(global_state.get_global_attribute(_PENDING, []) or [])
    created = []
    with keras.StatelessScope(initialize_variables=False):
        yield created
    registered = global_state.get_global_attribute(_PENDING, []) or []
    known = {id(v) for v in already}
    created.extend(v for v in registered if id(v) not in known)
    global_state.set_global_attribute(_PENDING, already)
    for variable in created:
        variable._initializer = None


def give_variable_value(variable, value):
    """Makes `value` the buffer of an uninitialised variable (no copy where
    the backend adopts the array)."""
    variable._initialize(value)


def variable_has_value(variable):
    """False for a variable from `variables_created_uninitialized` that was
    never given a value."""
    return variable._value is not None


# --- first_assign_gives_value -------------------------------------------------


@_patch(
    "first_assign_gives_value",
    "loading weights into deferred variables on TensorFlow and PyTorch without first "
    "allocating them (keras_egemma.io.deferred_variables)",
)
def _check_first_assign_gives_value():
    for name in ("_direct_assign", "_initialize"):
        _has_attribute(_BACKEND_VARIABLE, name)
    with variables_created_uninitialized():
        probe = keras.Variable(initializer="ones", shape=(2, 3), name="probe")
    with first_assign_gives_value():
        probe.assign(np.full((2, 3), 3.0, "float32"))
    assert variable_has_value(probe), "assigning gave the variable no value"
    assert np.allclose(keras.ops.convert_to_numpy(probe), 3.0), "the variable holds another value"
    probe.assign(np.full((2, 3), 4.0, "float32"))
    assert np.allclose(keras.ops.convert_to_numpy(probe), 4.0), "a later assign did not write"
    if keras.backend.backend() == "tensorflow":
        _has_attribute(_CONVERTING_VARIABLE, "_convert_to_tensor")
        with variables_created_uninitialized():
            probe = keras.Variable(initializer="ones", shape=(16,), name="probe")
        raw = np.empty(16 * 4 + 64, np.uint8)
        start = -raw.ctypes.data % 64
        value = raw[start : start + 16 * 4].view(np.float32)
        value[...] = 3.0
        with first_assign_gives_value():
            probe.assign(value)
        value[0] = 5.0
        assert float(keras.ops.convert_to_numpy(probe)[0]) == 5.0, (
            "the variable did not take the aligned array as its buffer"
        )


def _first_assign_initializes(original, active):
    def _direct_assign(self, value):
        if active.get() and self._value is None:
            self._initialize(value)
        else:
            original(self, value)

    return _direct_assign


def _tensorflow_adopts(value, dtype):
    return (
        isinstance(value, np.ndarray)
        and value.flags.writeable
        and value.flags.c_contiguous
        and value.ctypes.data % 64 == 0
        and value.dtype.kind in "fiu"
        and dtype is not None
        and keras.backend.standardize_dtype(value.dtype) == keras.backend.standardize_dtype(dtype)
    )


def _first_conversion_shares(original, active):
    # Keras' `assign` converts the value before `_direct_assign`, and
    # TensorFlow copies a numpy array it converts (then the new variable
    # owns that copy): an aligned array of the variable's dtype is handed
    # over as a tensor over its memory (DLPack), which the variable takes as
    # its buffer.
    def _convert_to_tensor(self, value, dtype=None):
        if active.get() and self._value is None and _tensorflow_adopts(value, dtype):
            import tensorflow as tf

            return tf.experimental.dlpack.from_dlpack(value.__dlpack__())
        return original(self, value, dtype=dtype)

    return _convert_to_tensor


# The backend's own class (`keras.Variable` is a subclass of it).
_BACKEND_VARIABLE = next(
    (c for c in keras.Variable.__mro__ if "_direct_assign" in c.__dict__), keras.Variable
)
_FIRST_ASSIGN = _ScopedSwap(_BACKEND_VARIABLE, "_direct_assign", _first_assign_initializes)
_CONVERTING_VARIABLE = next(
    (c for c in keras.Variable.__mro__ if "_convert_to_tensor" in c.__dict__), keras.Variable
)
_FIRST_CONVERSION = _ScopedSwap(
    _CONVERTING_VARIABLE, "_convert_to_tensor", _first_conversion_shares
)


@contextlib.contextmanager
def first_assign_gives_value():
    """Within the block (this thread / task only), assigning to a variable
    that has no value (from `variables_created_uninitialized`) makes the
    value its buffer, as `give_variable_value` does, instead of writing into
    a buffer it lacks. JAX's own assign already does so. On TensorFlow a
    64-byte aligned, writable numpy array of the variable's dtype becomes
    the buffer itself, with no copy (PyTorch's caller hands over a tensor
    sharing the array's memory).

    Example:
    ```python
    with variables_created_uninitialized():
        v = keras.Variable(initializer="ones", shape=(2,))
    with first_assign_gives_value():
        v.assign(np.zeros(2, "float32"))
    ```
    """
    backend = keras.backend.backend()
    if backend == "jax":
        # JAX's `_initialize` assigns through `_direct_assign` itself.
        yield
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(_FIRST_ASSIGN())
        if backend == "tensorflow":
            stack.enter_context(_FIRST_CONVERSION())
        yield


# --- int4_embedding_lookup ----------------------------------------------------


@_patch(
    "int4_embedding_lookup",
    "int4 token embedding lookups that unpack only the gathered rows "
    "(keras_egemma.layers.int4_row_lookup)",
)
def _check_int4_embedding_lookup():
    layer = keras.layers.Embedding(8, 4)
    layer.build()
    layer.quantize("int4", config=keras.quantizers.Int4QuantizationConfig(block_size=2))
    state = int4_embedding_state(layer)
    assert state is not None, "int4 Embedding no longer keeps `_orig_output_dim`"
    packed, width, block = state
    assert tuple(packed.shape) == (8, 2) and width == 4 and block == 2, (
        f"int4 Embedding state changed: packed {tuple(packed.shape)}, width {width}, "
        f"block {block}"
    )
    ids = np.array([[1, 5]])
    expected = keras.ops.convert_to_numpy(layer(ids))
    calls = []
    set_int4_embedding_call(
        layer, lambda inputs, training=None: calls.append(1) or keras_int4_embedding_call(
            layer, inputs, training
        )
    )
    got = keras.ops.convert_to_numpy(layer(ids))
    assert calls, "Embedding no longer dispatches int4 lookups to `self._int4_call`"
    assert np.array_equal(got, expected), "Keras' own int4 lookup changed its result"


def keras_int4_embedding_call(layer, inputs, training=None):
    """Keras' own int4 embedding lookup (unpacks the whole table)."""
    return keras.layers.Embedding._int4_call(layer, inputs, training=training)


def int4_embedding_state(layer):
    """`(packed table, unpacked width, block size or None)` of an int4
    `Embedding`, or None when the layer is not set up as Keras' int4 lookup
    expects."""
    if not hasattr(layer, "_orig_output_dim"):
        return None
    return layer._embeddings, layer._orig_output_dim, getattr(layer, "_int4_block_size", None)


def dequantize_with_sz_map(values, scale, zero, g_idx, group_axis):
    """Keras' per-group dequantisation (scale and zero point mapped to
    columns by `g_idx`)."""
    return _dequantize_with_sz_map(values, scale, zero, g_idx, group_axis=group_axis)


def set_int4_embedding_call(layer, call):
    """Makes the instance's int4 lookup `call(inputs, training=None)`.

    Set on the instance (through `__dict__`, which Keras does not track)
    rather than by subclassing: Keras names a layer's weights in saved files
    after its class, and presets store this one as an `Embedding`.
    """
    layer.__dict__["_int4_call"] = call


# --- layer_call_override --------------------------------------------------


@_patch(
    "layer_call_override",
    "quantization-aware training's fake-quantized forward (keras_egemma.quantization.qat)",
)
def _check_layer_call_override():
    probe = keras.layers.Dense(2)
    probe.build((None, 2))
    calls = []
    probe.__dict__["call"] = lambda inputs, training=None: calls.append(1) or inputs
    probe(keras.ops.ones((1, 2)))
    assert calls, "Layer.__call__ no longer looks `call` up on the instance"


def set_layer_call(layer, call):
    """Replaces `layer.call` on this instance only; Keras' `__call__` runs it."""
    layer.__dict__["call"] = call


def instance_layer_call(layer):
    """The `call` set by `set_layer_call`, or None."""
    return layer.__dict__.get("call")


def reset_layer_call(layer):
    """Goes back to the class's `call`."""
    layer.__dict__.pop("call", None)


# --- unchecked_quantize -----------------------------------------------------


@_patch(
    "unchecked_quantize",
    "EmbeddingGemma.quantize('mixed') (Keras wraps `quantize` per instance with a "
    "check that knows only its own modes)",
)
def _check_unchecked_quantize():
    layer = keras.layers.Dense(2)
    assert "quantize" in layer.__dict__, "Keras no longer wraps `quantize` on the instance"


def use_class_quantize(model):
    """Makes `model.quantize` the method its class defines, without Keras'
    per-instance mode check."""
    model.__dict__["quantize"] = type(model).quantize.__get__(model)


@_patch(
    "post_quantize",
    "PyTorch releasing the float weights that quantizing replaced",
)
def _check_post_quantize():
    _has_attribute(keras.Model, "_post_quantize")


def after_quantize(model, mode):
    """What `keras.Model.quantize` does once its layers are quantized
    (PyTorch: re-track the variables so dropped float weights are freed)."""
    model._post_quantize(mode)


@_patch(
    "own_dtype_policy",
    "re-saving a loaded quantized preset (each rebuilt layer given its own policy)",
)
def _check_own_dtype_policy():
    layer = keras.layers.Dense(2)
    assert hasattr(layer, "_dtype_policy"), "Layer._dtype_policy is gone"


def layer_dtype_policy(layer):
    """The policy the layer holds (a whole `DTypePolicyMap` for layers
    rebuilt from a quantized config), not the one it resolves to."""
    return layer._dtype_policy


def set_layer_dtype_policy(layer, policy):
    layer._dtype_policy = policy


# --- task_preset_any_backbone -------------------------------------------------


@_patch(
    "task_preset_any_backbone",
    "loading this library's presets (task and preprocessor) of a model whose backbone "
    "class is not the task's `backbone_cls` (EmbeddingGemma 2: an `EmbeddingGemma` over "
    "`EmbeddingGemma2Backbone`)",
)
def _check_task_preset_any_backbone():
    from keras_hub.src.utils import preset_utils

    _has_attribute(preset_utils, "get_preset_loader")
    _has_attribute(preset_utils.KerasPresetLoader, "load_task")
    parameters = list(inspect.signature(preset_utils.KerasPresetLoader.load_task).parameters)
    assert parameters[:4] == ["self", "cls", "load_weights", "load_task_weights"], (
        f"KerasPresetLoader.load_task takes {parameters}"
    )
    _has_attribute(preset_utils.KerasPresetLoader, "load_preprocessor")
    _has_attribute(preset_utils.KerasPresetLoader, "check_backbone_class")


def load_task_preset(cls, preset, load_weights=True, **kwargs):
    """KerasHub's `Task.from_preset(preset, ...)` for the task class `cls`,
    without its requirement that the preset's backbone be `cls.backbone_cls`
    (which would look for another subclass of `cls` instead).

    Example:
    ```python
    model = load_task_preset(EmbeddingGemma, "./my_embeddinggemma2", compile=False)
    ```
    """
    from keras_hub.src.utils.preset_utils import get_preset_loader

    return get_preset_loader(preset).load_task(cls, load_weights, True, **kwargs)


def preset_backbone_class(preset):
    """The backbone class a KerasHub preset's config names."""
    from keras_hub.src.utils.preset_utils import get_preset_loader

    return get_preset_loader(preset).check_backbone_class()


def load_preprocessor_preset(cls, preset, **kwargs):
    """KerasHub's `Preprocessor.from_preset(preset, ...)` for the class `cls`,
    without its requirement that the preset's backbone be `cls.backbone_cls`.

    Example:
    ```python
    pre = load_preprocessor_preset(EmbeddingGemmaPreprocessor, "./my_embeddinggemma2")
    ```
    """
    from keras_hub.src.utils.preset_utils import get_preset_loader

    return get_preset_loader(preset).load_preprocessor(cls, **kwargs)


# --- sublayers ------------------------------------------------------------


@_patch("sublayers", "finding every layer to quantize (keras_egemma.quantization)")
def _check_sublayers():
    inner = keras.layers.Dense(1)
    outer = keras.Sequential([keras.layers.Dense(2), inner])
    assert inner in sublayers(outer), "Layer._flatten_layers no longer lists nested layers"


def sublayers(layer):
    """Every layer nested in `layer`, itself included, depth first."""
    return list(layer._flatten_layers())


# --- trainer_internals --------------------------------------------------------


@_patch(
    "trainer_internals",
    "gradient-cached train steps (keras_egemma.training.gradient_cache), which "
    "compute the loss and update the loss tracker as Keras' trainers do",
)
def _check_trainer_internals():
    names = ["_compute_loss"]
    if keras.backend.backend() == "jax":
        names.append("_update_metrics_variables")
    for name in names:
        assert hasattr(keras.Model, name), f"keras.Model.{name} is gone"
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    assert isinstance(loss_tracker(model), keras.metrics.Mean), (
        "compiled models no longer have a `_loss_tracker` Mean"
    )


def compute_loss(model, x, y, y_pred, sample_weight):
    """The loss as Keras' trainers compute it (`compute_loss` plus the
    trainer's scaling and losses of layers)."""
    return model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)


def loss_tracker(model):
    """The `Mean` metric behind the `loss` Keras reports."""
    return model._loss_tracker


def update_metrics_variables(model, metrics_variables, loss, x, y, y_pred, sample_weight):
    """JAX trainer: the stateless metrics update; returns `(logs, variables)`."""
    return model._update_metrics_variables(metrics_variables, loss, x, y, y_pred, sample_weight)


# --- weights_shape_error ----------------------------------------------------

# Keras names the variable and both shapes when a weights file does not fit
# (torch prints the file's shape as `torch.Size([a, b])`).
_SHAPE_ERROR = re.compile(
    r"variable\.shape=\(([^)]*)\), Received: value\.shape=(?:torch\.Size\(\[|\()"
    r"([^)\]]*)[)\]]+\. Target variable: <Variable path=([^,]+),"
)


@_patch(
    "weights_shape_error",
    "CheckpointError naming the variable and both shapes when a weights file does not "
    "fit (keras_egemma.io.preset_loading)",
)
def _check_weights_shape_error():
    variable = keras.Variable(keras.ops.zeros((2, 3)), name="probe")
    try:
        variable.assign(keras.ops.zeros((3, 2)))
    except ValueError as e:
        assert weights_shape_mismatch(e) is not None, f"Keras' message changed: {e}"
    else:
        raise AssertionError("assigning a value of another shape no longer raises")


def weights_shape_mismatch(error):
    """`(variable path, expected shape, file shape)` read from the
    `ValueError` Keras raises when assigning a value of the wrong shape, or
    None when the error is another one."""
    match = _SHAPE_ERROR.search(str(error))
    return None if match is None else (match[3], match[1], match[2])


# --- jax_arange_for_onnx ----------------------------------------------------


@_patch(
    "jax_arange_for_onnx",
    "ONNX export from the JAX backend through jax2onnx (keras_egemma.export.onnx)",
)
def _check_jax_arange_for_onnx():
    if keras.backend.backend() != "jax":
        return
    from keras.src.backend.jax import numpy as jax_numpy

    assert callable(jax_numpy.arange), "keras.src.backend.jax.numpy.arange is gone"


@contextlib.contextmanager
def jax_arange_with_explicit_start():
    """Within the block, Keras' JAX `arange(n)` calls `jnp.arange(0, n, 1)`
    instead of `jnp.arange(n, None, ...)`: jax2onnx (0.17) replaces
    `jnp.arange` while tracing and reads that explicit `None` as a value.
    The same range either way."""
    from keras.src.backend.jax import numpy as jax_numpy

    original = jax_numpy.arange

    def arange(start, stop=None, step=None, dtype=None):
        if stop is None and step is None:
            return original(0, start, 1, dtype=dtype)
        return original(start, stop, step, dtype=dtype)

    jax_numpy.arange = arange
    try:
        yield
    finally:
        jax_numpy.arange = original


# --- sentencepiece_in_graph -------------------------------------------------


@_patch(
    "sentencepiece_in_graph",
    "tokenising inside tf.data pipelines after `keras.utils.set_random_seed` "
    "(keras_egemma.models.tokenizer)",
)
def _check_sentencepiece_in_graph():
    for name in ("_tokenize_tf", "_add_special_token"):
        assert hasattr(SentencePieceTokenizer, name), f"SentencePieceTokenizer.{name} is gone"
    assert "_sentence_piece" in SentencePieceTokenizer.set_proto.__code__.co_names, (
        "SentencePieceTokenizer no longer keeps its op in `_sentence_piece`"
    )


def add_special_token(tokenizer, token, attribute):
    """KerasHub's way for a tokenizer subclass to declare a special token
    (`tokenizer.<attribute>` and `<attribute>_id`)."""
    tokenizer._add_special_token(token, attribute)


@contextlib.contextmanager
def sentencepiece_op(tokenizer, op):
    """Within the block the tokenizer runs `op` (a tensorflow-text
    `SentencepieceTokenizer`) instead of the one it built."""
    own = tokenizer._sentence_piece
    tokenizer._sentence_piece = op
    try:
        yield
    finally:
        tokenizer._sentence_piece = own


# --- torch_fused_adam ---------------------------------------------------------


@_patch(
    "torch_fused_adam",
    "Adam / AdamW steps on the PyTorch backend in one fused pass per tensor "
    "(keras_egemma.training.model_training)",
)
def _check_torch_fused_adam():
    if keras.backend.backend() != "torch":
        return
    import torch
    from keras.src.backend.torch.optimizers import torch_adam

    _has_attribute(torch_adam.Adam, "_parallel_update_step")
    optimizer = keras.optimizers.Adam()
    optimizer.build([keras.Variable(np.zeros(2, "float32"))])
    for name in ("_momentums", "_velocities", "_get_variable_index"):
        assert hasattr(optimizer, name), f"keras Adam has no {name}"
    assert hasattr(torch, "_fused_adam_"), "torch._fused_adam_ is gone"


def use_fused_adam(optimizer):
    """Makes a Keras Adam / AdamW (not AMSGrad) on the PyTorch backend update
    each tensor in one fused pass (`torch._fused_adam_`, the kernel of
    `torch.optim.Adam(fused=True)`).

    Keras' own step builds five temporaries the size of every parameter,
    which at the published size (300M parameters) is most of a CPU step.
    The fused update is Keras' rule exactly: its epsilon is added to
    `sqrt(v)` before the bias correction, torch's after, so torch's gets
    `epsilon / sqrt(1 - beta_2 ** t)`. Weight decay stays Keras' own (an
    in-place multiply before the update). Returns whether it applied; only
    this optimizer instance changes.
    """
    if keras.backend.backend() != "torch":
        return False
    import torch
    from keras.src.backend.torch.optimizers import torch_adam

    if not isinstance(optimizer, torch_adam.Adam) or optimizer.amsgrad:
        return False
    if not all(isinstance(b, float) for b in (optimizer.beta_1, optimizer.beta_2)):
        return False

    def update(grads, variables, learning_rate):
        step = float(optimizer.iterations.value) + 1.0
        lr = float(learning_rate)
        epsilon = optimizer.epsilon / (1.0 - optimizer.beta_2**step) ** 0.5
        groups = {}
        for grad, variable in zip(grads, variables):
            index = optimizer._get_variable_index(variable)
            tensors = (variable.value, grad, optimizer._momentums[index].value,
                       optimizer._velocities[index].value)
            for group, tensor in zip(groups.setdefault(variable.value.dtype, ([], [], [], [])),
                                     tensors):
                group.append(tensor)
        steps = torch.tensor(step)
        for params, group_grads, momentums, velocities in groups.values():
            torch._fused_adam_(
                params, group_grads, momentums, velocities, [], [steps] * len(params),
                amsgrad=False, lr=lr, beta1=optimizer.beta_1, beta2=optimizer.beta_2,
                weight_decay=0.0, eps=epsilon, maximize=False, grad_scale=None, found_inf=None,
            )

    optimizer._parallel_update_step = update
    return True
