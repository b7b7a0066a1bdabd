"""Training helpers: data pipelines for (query, positive, negatives, teacher)
examples, the paper's one-source-per-batch batching, and model souping."""

from keras_egemma.training.batching import single_source_batches
from keras_egemma.training.data import as_training_dataset
from keras_egemma.training.mining import mine_hard_negatives
from keras_egemma.training.souping import soup
