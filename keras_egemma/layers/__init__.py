"""Keras layers of the EmbeddingGemma model."""

from keras_egemma.layers.attention import EmbeddingGemmaAttention
from keras_egemma.layers.attention_pooling import AttentionPooling
from keras_egemma.layers.encoder_block import EmbeddingGemmaEncoderBlock
from keras_egemma.layers.first_token_pooling import FirstTokenPooling
from keras_egemma.layers.l2_normalization import L2Normalization
from keras_egemma.layers.l2_normalization import l2_normalize
from keras_egemma.layers.last_token_pooling import LastTokenPooling
from keras_egemma.layers.matryoshka import MatryoshkaTruncation
from keras_egemma.layers.matryoshka import matryoshka_truncate
from keras_egemma.layers.mean_pooling import MeanPooling
from keras_egemma.layers.poolers import get_pooler
from keras_egemma.layers.projection_head import EmbeddingProjectionHead
from keras_egemma.layers.rms_normalization import RMSNormalization
