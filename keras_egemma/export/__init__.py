"""Export an `EmbeddingGemma` for serving without Keras.

- `export_saved_model`: TensorFlow SavedModel, raw strings in (prompt and
  SentencePiece tokenisation inside), embeddings out. TensorFlow and JAX.
- `export_litert`: LiteRT `.tflite`, token ids in. TensorFlow and PyTorch.
- `export_onnx`: ONNX, token ids in. TensorFlow, JAX and PyTorch.
- `prepare_inputs`: texts -> padded token ids for the LiteRT and ONNX files.
"""

from keras_egemma.export.common import prepare_inputs
from keras_egemma.export.litert import export_litert
from keras_egemma.export.onnx import export_onnx
from keras_egemma.export.saved_model import export_saved_model
