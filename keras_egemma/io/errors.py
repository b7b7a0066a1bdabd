"""The error a bad checkpoint or preset raises, and the checks shared by every
layout's loader."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or does not fit."""


def check_vocabulary_fits(tokenizer_size, table_rows, tokenizer_source, table_source):
    """Refuses a tokenizer with ids beyond the embedding table.

    Such ids would be out of range (JAX clamps them silently, giving wrong
    vectors). A table with more rows than the tokenizer has tokens is fine:
    published tables are often padded.
    """
    if tokenizer_size > table_rows:
        raise CheckpointError(
            f"The tokenizer has {tokenizer_size} tokens ({tokenizer_source}) but the "
            f"embedding table has only {table_rows} rows ({table_source}): tokenizer "
            "and weights come from different models. Use the tokenizer saved with "
            "these weights."
        )
