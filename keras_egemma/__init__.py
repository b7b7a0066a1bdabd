"""keras_egemma: EmbeddingGemma for Keras 3 on JAX, TensorFlow and PyTorch."""

# First: drops TensorFlow's native log lines while it loads (before Keras does).
from keras_egemma import _quiet
from keras_egemma import export
from keras_egemma import layers
from keras_egemma import losses
from keras_egemma import training
from keras_egemma.io.errors import CheckpointError
from keras_egemma.models.backbone import EmbeddingGemmaBackbone
from keras_egemma.models.embedding_gemma import EmbeddingGemma
from keras_egemma.models.embedding_gemma2_backbone import EmbeddingGemma2Backbone
from keras_egemma.models.preprocessor import EmbeddingGemmaPreprocessor
from keras_egemma.models.prompts import DEFAULT_PROMPTS
from keras_egemma.models.tokenizer import EmbeddingGemmaTokenizer
from keras_egemma.presets import list_presets
from keras_egemma.quantization.embedding_quantization import quantization_ranges
from keras_egemma.quantization.embedding_quantization import quantize_embeddings
from keras_egemma.search import EmbeddingIndex
from keras_egemma.search import semantic_search
from keras_egemma.training.souping import soup
from keras_egemma.version import __version__
