"""The Keras / KerasHub compatibility layer: every patch still fits the
installed release, a patch that no longer fits fails naming itself, and the
scoped patches reach only the calling thread, only inside their block."""

import re
import threading

import keras
import numpy as np
import pytest

from keras_egemma import _keras_compat as compat


def _pinned_range(package):
    with open("pyproject.toml", encoding="utf-8") as f:
        text = f.read()
    match = re.search(rf'"{re.escape(package)}>=(\d+)\.(\d+),<(\d+)\.(\d+)"', text)
    assert match, f"pyproject.toml does not pin {package} to a range"
    low_major, low_minor, high_major, high_minor = map(int, match.groups())
    return (low_major, low_minor), (high_major, high_minor)


def test_installed_releases_are_the_tested_ones_and_pinned():
    compat.check_versions()
    assert _pinned_range("keras") == compat.KERAS_VERSIONS
    assert _pinned_range("keras-hub") == compat.KERAS_HUB_VERSIONS


@pytest.mark.parametrize("name", sorted(compat.PATCHES))
def test_patch_fits_installed_keras(name):
    compat.PATCHES[name].check()


@pytest.mark.parametrize(
    "name, owner, attribute",
    [
        ("int4_embedding_lookup", keras.layers.Embedding, "_int4_call"),
        ("int4_properties_left_packed", keras.layers.Dense, "kernel"),
        ("zero_copy_h5_store", compat.saving_lib.H5IOStore, "_get_h5_file"),
        ("post_quantize", keras.Model, "_post_quantize"),
    ],
)
def test_a_patch_that_no_longer_fits_names_itself(monkeypatch, name, owner, attribute):
    monkeypatch.delattr(owner, attribute)
    with pytest.raises(compat.KerasCompatError, match=f"(?s)patch '{name}'.*It guards: "):
        compat.PATCHES[name].check()


def test_version_outside_the_tested_range_is_refused(monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.raises(compat.KerasCompatError, match=r'pip install "keras>=3\.'):
        compat.check_versions()


def _in_thread(function):
    result = {}

    def run():
        try:
            result["value"] = function()
        except Exception as e:  # noqa: BLE001 - reported to the test.
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result


def test_weights_store_reaches_only_this_thread_inside_the_block(tmp_path):
    path = str(tmp_path / "layer.weights.h5")
    layer = keras.layers.Dense(3)
    layer.build((None, 2))
    model = keras.Sequential([keras.Input((2,)), layer])
    model.save_weights(path)
    reads = []

    class CountingStore(compat.H5IOStore):
        def __getitem__(self, key):
            reads.append(threading.get_ident())
            return super().__getitem__(key)

    original = compat.saving_lib.H5IOStore
    with compat.weights_store(CountingStore):
        other = _in_thread(lambda: model.load_weights(path))
        assert "error" not in other, other
        assert reads == [], "another thread's load used the patched store"
        model.load_weights(path)
        assert reads and set(reads) == {threading.get_ident()}
    assert compat.saving_lib.H5IOStore is original
    count = len(reads)
    model.load_weights(path)
    assert len(reads) == count, "the store is still used after the block"


def test_unpacking_properties_raise_only_in_this_thread_inside_the_block():
    layer = keras.layers.Dense(4)
    layer.build((None, 8))
    layer.quantize("int4", config=keras.quantizers.Int4QuantizationConfig(block_size=4))
    original = keras.layers.Dense.__dict__["kernel"]
    expected = keras.ops.convert_to_numpy(layer.kernel)
    int4 = lambda layer: layer.quantization_mode == "int4"  # noqa: E731
    with compat.unpacking_properties_raise(int4):
        # (PyTorch's `Module.__getattr__` rewords the message.)
        with pytest.raises(AttributeError):
            layer.kernel
        other = _in_thread(lambda: keras.ops.convert_to_numpy(layer.kernel))
        assert "error" not in other, other
        np.testing.assert_array_equal(other["value"], expected)
    assert keras.layers.Dense.__dict__["kernel"] is original
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), expected)


def test_nested_blocks_restore_on_the_last_exit():
    original = keras.layers.Dense.__dict__["kernel"]
    int4 = lambda layer: False  # noqa: E731
    with compat.unpacking_properties_raise(int4):
        with compat.unpacking_properties_raise(int4):
            pass
        assert keras.layers.Dense.__dict__["kernel"] is not original
    assert keras.layers.Dense.__dict__["kernel"] is original


def test_weights_shape_mismatch_reads_keras_message():
    variable = keras.Variable(np.zeros((2, 3), "float32"), name="probe")
    with pytest.raises(ValueError) as error:
        variable.assign(np.zeros((4, 5), "float32"))
    path, expected, got = compat.weights_shape_mismatch(error.value)
    assert path.endswith("probe")
    assert expected.replace(" ", "") == "2,3" and got.replace(" ", "") == "4,5"
    assert compat.weights_shape_mismatch(ValueError("something else")) is None


@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_adam_follows_keras_adam(amsgrad):
    """On PyTorch the fused step is Keras' AdamW rule (its epsilon, weight
    decay and learning-rate schedule); elsewhere, and for AMSGrad, Keras' own
    step is kept."""
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(7, 5)).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    grads = [[rng.normal(size=x.shape).astype("float32") for x in init] for _ in range(20)]
    finals = []
    for fused in (False, True):
        variables = [keras.Variable(x) for x in init]
        optimizer = keras.optimizers.AdamW(
            keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.9), weight_decay=0.01,
            epsilon=1e-3, amsgrad=amsgrad,
        )
        optimizer.build(variables)
        if fused:
            applies = keras.backend.backend() == "torch" and not amsgrad
            assert compat.use_fused_adam(optimizer) is applies
        for step in grads:
            optimizer.apply([keras.ops.convert_to_tensor(g) for g in step], variables)
        finals.append([keras.ops.convert_to_numpy(v) for v in variables])
    for keras_value, fused_value, start in zip(*finals, init):
        assert np.abs(keras_value - start).max() > 0.05
        np.testing.assert_allclose(fused_value, keras_value, atol=2e-6)
