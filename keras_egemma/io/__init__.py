"""The library's own preset format: atomic saving, loading (large tensors
mapped from the file, variables allocated only when their values arrive,
int4 weights left packed) and `CheckpointError`. Foreign layouts are read
and written by `keras_egemma.convert`."""

from keras_egemma.io.errors import CheckpointError
