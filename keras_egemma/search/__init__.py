"""Search over embeddings: exact search of a float or compressed corpus with
rescoring (`semantic_search`), and an approximate nearest-neighbour index
(`EmbeddingIndex`, FAISS: the `index` extra)."""

from keras_egemma.search.compressed_search import semantic_search
from keras_egemma.search.index import EmbeddingIndex
