"""Training helpers: data pipelines for (query, positive, negatives, teacher)
examples, the paper's one-source-per-batch batching and hard-negative mining.
Model souping is `keras_egemma.soup` (`training/souping.py`)."""

from keras_egemma.training.batching import single_source_batches
from keras_egemma.training.data import as_training_dataset
from keras_egemma.training.mining import mine_hard_negatives
from keras_egemma.training.non_finite_loss import NonFiniteLossError
from keras_egemma.training.non_finite_loss import StopOnNonFiniteLoss
