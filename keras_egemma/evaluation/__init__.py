"""Evaluation: retrieval (TREC metrics) and STS on local datasets, and an mteb encoder."""

from keras_egemma.evaluation.datasets import load_retrieval_dataset
from keras_egemma.evaluation.datasets import load_sts_dataset
from keras_egemma.evaluation.evaluate import evaluate_retrieval
from keras_egemma.evaluation.evaluate import evaluate_sts
from keras_egemma.evaluation.mteb_encoder import MTEBEncoder
from keras_egemma.evaluation.retrieval import retrieval_metrics
from keras_egemma.evaluation.sts import spearman
from keras_egemma.evaluation.sts import sts_metrics
