"""Evaluation metrics for embedding models."""

from keras_egemma.evaluation.retrieval import retrieval_metrics
