"""`encode`'s compiled forward pass kept across processes (JAX's persistent
compilation cache, in the library's own folder): a new model, and a second
process, load it instead of compiling, with identical embeddings; nothing
else the process compiles goes there; a folder that cannot be written, or an
unreadable entry, still embeds the same."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma.models import compilation_cache

BACKEND = keras.backend.backend()
TEXTS = ["The quick brown fox.", "A cat sat on the mat, quietly."]
only_jax = pytest.mark.skipif(BACKEND != "jax", reason="the persistent cache is JAX's")


def embed():
    """Embeddings from a new model (so a new compile, on JAX)."""
    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny").encode(TEXTS)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """The folder this machine's programs go to, under a new cache root."""
    monkeypatch.setenv(compilation_cache.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "jax_compilation_cache" / compilation_cache.machine_name()
    if BACKEND == "jax":
        import jax

        # The tiny model compiles in well under JAX's 1 s threshold.
        previous = jax.config.jax_persistent_cache_min_compile_time_secs
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        yield folder
        jax.config.update("jax_persistent_cache_min_compile_time_secs", previous)
    else:
        yield folder


@pytest.fixture(scope="module")
def uncached():
    """Embeddings compiled with no cache at all."""
    saved = os.environ.get(compilation_cache.CACHE_DIR_VARIABLE)
    os.environ[compilation_cache.CACHE_DIR_VARIABLE] = ""
    try:
        return embed()
    finally:
        if saved is None:
            del os.environ[compilation_cache.CACHE_DIR_VARIABLE]
        else:
            os.environ[compilation_cache.CACHE_DIR_VARIABLE] = saved


def cache_hits():
    """A counter of JAX's persistent cache hits from now on."""
    import jax

    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kwargs: hits.append(event) if event.endswith("/cache_hits") else None
    )
    return hits


SECOND_PROCESS = """
import json, jax
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kwargs: hits.append(event) if event.endswith("/cache_hits") else None)
import keras_egemma as eg
x = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny").encode({texts!r})
print(json.dumps({{"hits": len(hits), "embeddings": x.tolist()}}))
"""


@only_jax
def test_compiled_forward_is_reused_by_a_new_model_and_a_new_process(cache_dir, uncached):
    first = embed()
    entries = sorted(os.listdir(cache_dir))
    assert entries and all(name.startswith("jit_call-") for name in entries), entries
    np.testing.assert_array_equal(first, uncached)

    hits = cache_hits()
    again = embed()
    assert hits, "a new model compiled its forward pass again"
    np.testing.assert_array_equal(again, uncached)

    out = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS.format(texts=TEXTS)],
        env=dict(os.environ, KERAS_BACKEND="jax"), capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["hits"] >= 1, out.stderr[-2000:]
    np.testing.assert_array_equal(np.array(result["embeddings"], "float32"), uncached)
    assert sorted(os.listdir(cache_dir)) == entries


@only_jax
def test_only_the_forward_pass_is_written_to_the_folder(cache_dir):
    import jax

    embed()
    entries = sorted(os.listdir(cache_dir))
    # The user's own program, compiled afterwards, is not cached there.
    jax.jit(lambda x: jax.numpy.sin(x) @ x.T + 3.0).lower(np.ones((7, 5), "float32")).compile()
    assert sorted(os.listdir(cache_dir)) == entries
    assert jax.config.jax_compilation_cache_dir is None


@only_jax
def test_a_cache_the_user_configured_is_left_alone(cache_dir, tmp_path, monkeypatch):
    import jax

    theirs = tmp_path / "theirs"
    jax.config.update("jax_compilation_cache_dir", str(theirs))
    try:
        embed()
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        from jax.experimental.compilation_cache import compilation_cache as jax_cache

        jax_cache.reset_cache()
    assert not (tmp_path / "cache").exists()
    assert any(name.startswith("jit_call-") for name in os.listdir(theirs))


def test_a_folder_that_cannot_be_written_still_embeds(tmp_path, monkeypatch, uncached):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(compilation_cache.CACHE_DIR_VARIABLE, str(blocked))
    assert compilation_cache.cache_folder() is None
    np.testing.assert_array_equal(embed(), uncached)
    assert blocked.read_text() == "not a folder"


def test_the_folder_follows_the_variables(tmp_path, monkeypatch):
    monkeypatch.setenv(compilation_cache.CACHE_DIR_VARIABLE, "")
    assert compilation_cache.cache_folder() is None
    monkeypatch.delenv(compilation_cache.CACHE_DIR_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = compilation_cache.cache_folder()
    name = compilation_cache.machine_name()
    assert folder == str(tmp_path / "keras_egemma" / "jax_compilation_cache" / name)
    assert os.path.isdir(folder)
    assert len(name) == 16 and int(name, 16) >= 0


@only_jax
def test_an_unreadable_entry_is_compiled_anew(cache_dir, uncached):
    embed()
    for name in os.listdir(cache_dir):
        (cache_dir / name).write_bytes(b"not a compiled program")
    with pytest.warns(RuntimeWarning, match="could not be read.*compiled anew"):
        again = embed()
    np.testing.assert_array_equal(again, uncached)


@only_jax
def test_a_failed_write_still_embeds_without_a_warning(cache_dir, uncached, monkeypatch):
    import warnings

    from jax._src import lru_cache

    def refuse(self, key, value):
        raise OSError("read-only file system")

    monkeypatch.setattr(lru_cache.LRUCache, "put", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        np.testing.assert_array_equal(embed(), uncached)
    assert not [w for w in caught if "compilation cache" in str(w.message)]
    assert not os.listdir(cache_dir)
