"""Corpus embedding on Apache Beam (the `beam` extra): a RunInference model
handler and the pipeline behind `keras-egemma embed --runner`."""

from keras_egemma.beam.model_handler import EmbeddingGemmaModelHandler
from keras_egemma.beam.pipeline import build_pipeline
from keras_egemma.beam.pipeline import check_row
