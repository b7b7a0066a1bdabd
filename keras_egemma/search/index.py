"""An approximate nearest-neighbour index of embeddings: FAISS HNSW, cosine similarity.

FAISS (the `faiss-cpu` wheel: `pip install "keras-egemma[index]"`) is the
library: one wheel with no dependency beyond numpy, maintained by Meta's FAISS
team, with HNSW graphs over inner product (cosine on unit vectors) and its
own serialisation. The index records what its vectors are (size, model,
prompt), so that searching it with other embeddings fails with the reason
instead of returning nonsense.
"""

import json

import numpy as np

from keras_egemma.io.atomic_saving import save_file_atomically

FORMAT = "keras_egemma.EmbeddingIndex"
FORMAT_VERSION = 1
INSTALL = 'pip install "keras-egemma[index]"'


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ModuleNotFoundError(
            f"EmbeddingIndex needs FAISS, which is not installed. Install it with: {INSTALL}"
        ) from None
    return faiss


def _unit_rows(embeddings, name, dim=None):
    array = np.asarray(embeddings)
    if array.dtype.kind != "f":
        raise ValueError(f"`{name}` must be float embeddings, got dtype {array.dtype}.")
    array = np.atleast_2d(array)
    if array.ndim != 2 or array.shape[1] == 0 or not np.all(np.isfinite(array)):
        raise ValueError(
            f"`{name}` must be a finite (num, dim) or (dim,) array, got shape {np.shape(embeddings)}."
        )
    if dim is not None and array.shape[1] != dim:
        raise ValueError(
            f"`{name}` have {array.shape[1]} dimensions but the index holds {dim}-dimensional "
            f"embeddings: embed them at the index's Matryoshka size (`dim={dim}`), or build an "
            "index at this size."
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


def _id_array(ids, count):
    ids = np.arange(count, dtype=np.int64) if ids is None else np.asarray(ids)
    if ids.ndim != 1 or len(ids) != count:
        raise ValueError(f"`ids` must be a list of {count} ids (one per embedding), got {ids.shape}.")
    if ids.dtype.kind in "iu":
        ids = ids.astype(np.int64)
    elif ids.dtype.kind == "U":
        pass
    elif count:
        raise ValueError(f"`ids` must be all ints or all strings, got dtype {ids.dtype}.")
    return ids


class EmbeddingIndex:
    """An HNSW index of unit embeddings for approximate cosine search (FAISS).

    Build it from embeddings of any Matryoshka size; it records that size,
    and optionally the model and document prompt they came from, and refuses
    queries of another size. `save` writes one file atomically (a staging
    file renamed into place); `load` reads it back with the same graph, so a
    reloaded index returns the same results.

    Shapes: `build` / `add` take float `(num, dim)`; `search` takes float
    `(num_queries, dim)` (or `(dim,)`) and returns `(num_queries, k)` scores
    and ids.

    Args of `build`:
        embeddings: float `(num, dim)` (normalised here to unit length).
        ids: `num` ints or strings (default `0 .. num - 1`), unique.
        model: name of the model (preset) that embedded them, or None.
        prompt: the prompt the documents were embedded with, or None.
        connectivity: HNSW links per node (`M`); more: better recall, more
            memory (about `8 * M` bytes per vector) and slower building.
        ef_construction: candidate list while building.
        ef_search: candidate list while searching (raised to `k` if lower);
            the recall / speed knob.
        metadata: a JSON-serialisable dict kept with the index.

    Example:
    ```python
    docs = model.encode_document(texts, dim=256)                  # (n, 256)
    index = eg.EmbeddingIndex.build(docs, ids=doc_ids, model="embeddinggemma_300m")
    index.save("docs.index")
    index = eg.EmbeddingIndex.load("docs.index")
    scores, ids = index.search(model.encode_query(queries, dim=256), k=10)   # (q, 10) each
    ```
    """

    def __init__(self, faiss_index, ids, config):
        self._index = faiss_index
        self._ids = ids
        self._config = dict(config)

    @classmethod
    def build(
        cls,
        embeddings,
        ids=None,
        *,
        model=None,
        prompt=None,
        connectivity=32,
        ef_construction=200,
        ef_search=128,
        metadata=None,
    ):
        """A new index of `embeddings` (see the class docstring).

        Example:
        ```python
        index = EmbeddingIndex.build(model.encode_document(texts), ids=names,
                                     model="embeddinggemma_mini", prompt="title: none | text: ")
        ```
        """
        for name, value in (
            ("connectivity", connectivity),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        vectors = _unit_rows(embeddings, "embeddings")
        if metadata is not None:
            try:
                json.dumps(metadata)
            except TypeError as e:
                raise ValueError(f"`metadata` must be JSON-serialisable: {e}") from None
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(vectors.shape[1], connectivity, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        config = {
            "dim": int(vectors.shape[1]),
            "metric": "cosine",
            "model": model,
            "prompt": prompt,
            "connectivity": connectivity,
            "ef_construction": ef_construction,
            "ef_search": ef_search,
            "metadata": metadata or {},
        }
        built = cls(index, np.empty(0, np.int64), config)
        built.add(vectors, ids)
        return built

    def add(self, embeddings, ids=None):
        """Adds float `(num, dim)` embeddings with their `num` ids (new ones;
        default: the next integers, for an index with integer ids).

        Example:
        ```python
        index.add(model.encode_document(new_texts), ids=new_names)
        ```
        """
        vectors = _unit_rows(embeddings, "embeddings", self.dim)
        if ids is None:
            if self._ids.dtype.kind == "U" and len(self._ids):
                raise ValueError("This index has string ids: pass `ids` for the new embeddings.")
            ids = np.arange(len(self), len(self) + len(vectors), dtype=np.int64)
        ids = _id_array(ids, len(vectors))
        if len(self._ids) and ids.dtype.kind != self._ids.dtype.kind:
            raise ValueError(
                f"This index has {'string' if self._ids.dtype.kind == 'U' else 'integer'} ids; "
                "new ids must be of the same kind."
            )
        all_ids = np.concatenate([self._ids, ids]) if len(self._ids) else ids
        unique, counts = np.unique(all_ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"Ids must be unique; repeated: {unique[counts > 1][:5].tolist()}.")
        self._index.add(vectors)
        self._ids = all_ids

    @property
    def dim(self):
        """Size of the indexed embeddings."""
        return self._config["dim"]

    def __len__(self):
        return int(self._index.ntotal)

    def get_config(self):
        """What the index holds and how it was built: `dim`, `metric`,
        `model`, `prompt`, HNSW settings, `metadata`, `size`, the FAISS
        version. JSON-serialisable.

        Example:
        ```python
        index.get_config()["dim"]   # 768
        ```
        """
        return {**self._config, "size": len(self), "faiss_version": _faiss().__version__}

    def check_compatible(self, *, model=None, dim=None, prompt=None, source="The index"):
        """Raises ValueError, naming both sides, when the index was built with
        another model, Matryoshka size or prompt than given (None: not checked;
        an index that did not record a field is not checked on it).

        Example:
        ```python
        index.check_compatible(model="embeddinggemma_300m", dim=256)
        ```
        """
        for name, wanted in (("model", model), ("dim", dim), ("prompt", prompt)):
            held = self._config.get(name)
            if wanted is not None and held is not None and held != wanted:
                raise ValueError(
                    f"{source} was built with {name} {held!r}, not {wanted!r}: search it with "
                    f"the same {name}, or build a new index."
                )

    def search(self, queries, k=10):
        """The `k` nearest embeddings to each query by cosine similarity.

        Args:
            queries: float `(num_queries, dim)` or `(dim,)`.
            k: results per query (at most `len(index)`).

        Returns:
            `(scores, ids)`: float32 `(num_queries, k)` cosines, best first,
            and the ids (int64 or strings) `(num_queries, k)`; `(k,)` each for
            a `(dim,)` query. Where the graph search found fewer than `k`
            vectors, the rest are score `-inf` and id -1 (or "").

        Example:
        ```python
        scores, ids = index.search(model.encode_query(["red planet"]), k=5)   # (1, 5) each
        ```
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"`k` must be a positive int, got {k!r}.")
        if len(self) == 0:
            raise ValueError("The index is empty: add embeddings first.")
        single = np.ndim(queries) == 1
        vectors = _unit_rows(queries, "queries", self.dim)
        k = min(int(k), len(self))
        faiss = _faiss()
        params = faiss.SearchParametersHNSW(efSearch=max(self._config["ef_search"], k))
        scores, positions = self._index.search(vectors, k, params=params)
        found = positions >= 0
        ids = self._ids[np.where(found, positions, 0)]
        ids[~found] = "" if ids.dtype.kind == "U" else -1
        scores = np.where(found, scores, -np.inf).astype(np.float32)
        return (scores[0], ids[0]) if single else (scores, ids)

    def save(self, path):
        """Writes the index to one file (`.npz`: the FAISS index, the ids and
        the config), atomically: written beside `path`, then renamed.

        Example:
        ```python
        index.save("docs.index")
        ```
        """
        faiss = _faiss()
        config = {**self._config, "format": FORMAT, "format_version": FORMAT_VERSION}

        def write(staging):
            with open(staging, "wb") as f:
                np.savez(
                    f,
                    faiss_index=faiss.serialize_index(self._index),
                    ids=self._ids,
                    config=np.array(json.dumps(config)),
                )

        save_file_atomically(write, path)

    @classmethod
    def load(cls, path):
        """Reads an index written by `save`.

        Raises:
            FileNotFoundError: no such file. ValueError: not an index written
            by `save` (or by a newer version of this library).

        Example:
        ```python
        index = eg.EmbeddingIndex.load("docs.index")
        ```
        """
        faiss = _faiss()
        try:
            with np.load(path, allow_pickle=False) as data:
                config = json.loads(str(data["config"]))
                serialized, ids = data["faiss_index"], data["ids"]
        except FileNotFoundError:
            raise FileNotFoundError(f"No such index file: {path!r}.") from None
        except (ValueError, KeyError, OSError, json.JSONDecodeError):
            raise ValueError(
                f"{path} is not an index saved by EmbeddingIndex.save (remove it, or pass "
                "another path)."
            ) from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"{path} is not an index saved by EmbeddingIndex.save.")
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{path} was saved by a newer keras_egemma (index format "
                f"{config['format_version']}); upgrade keras_egemma to read it."
            )
        index = faiss.deserialize_index(serialized)
        if index.d != config["dim"] or index.ntotal != len(ids):
            raise ValueError(f"{path} is damaged: its FAISS index does not match its config.")
        config.pop("format")
        config.pop("format_version")
        return cls(index, ids, config)
