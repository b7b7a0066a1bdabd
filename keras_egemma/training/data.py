"""Training examples -> batched, tokenised `tf.data` pipelines.

An example is a dict: `query` (str), `positive` (str), optional `negative`
(a str or a list of k strs, the same k for every example), optional
`teacher` (a dict of teacher embeddings: `query` (D,), `positive` (D,),
`negative` (k, D)), optional `query_id` / `positive_id` (ints a dataset
carries to mark duplicates; by default duplicates are found by hashing the
texts), optional `query_prompt` / `document_prompt` (literal prompt strings
for this example's dataset, overriding the pipeline's task prompts; see
`single_source_batches(..., tasks=...)`).

The pipeline yields `(x, y)` batches for `EmbeddingGemma.fit`:
`x = {"query": {"token_ids", "padding_mask"}, "positive": {...},
"negatives": {... (B, k, L)}}` and `y = {"query_ids", "positive_ids",
"teacher": {...}}`. Tokenisation runs inside `tf.data` whatever the Keras
backend, as KerasHub's preprocessors do. Every text of a batch is padded to
one length L: by default the batch's longest text rounded up to a length
bucket (as `encode` does), so short texts do not train on padding and a
compiled train step sees few shapes.
"""

import sys
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_egemma.models.batching import bucket_lengths

TEXT_FIELDS = ("query", "positive", "negative")
PADDINGS = ("longest", "max_length")
PROMPT_FIELDS = ("query_prompt", "document_prompt")
_HASH_BUCKETS = 2**62


def _fail(index, message):
    raise ValueError(f"Training example {index}: {message}")


def _normalize_example(example, index, num_negatives, teacher_dim):
    """Validates one example; returns it in canonical form."""
    if not isinstance(example, dict):
        _fail(index, f"expected a dict with 'query' and 'positive', got {type(example).__name__}.")
    unknown = set(example) - {*TEXT_FIELDS, *PROMPT_FIELDS, "teacher", "query_id", "positive_id"}
    if unknown:
        _fail(index, f"unknown keys {sorted(unknown)}.")
    for key in ("query", "positive"):
        if key not in example:
            _fail(index, f"missing {key!r}.")
        if not isinstance(example[key], str):
            _fail(index, f"{key!r} must be a string, got {type(example[key]).__name__}.")
    out = {"query": example["query"], "positive": example["positive"]}
    negatives = example.get("negative", [])
    negatives = [negatives] if isinstance(negatives, str) else list(negatives)
    if not all(isinstance(n, str) for n in negatives):
        _fail(index, "'negative' must be a string or a list of strings.")
    if num_negatives is not None and len(negatives) != num_negatives:
        _fail(
            index,
            f"has {len(negatives)} negatives, earlier examples have {num_negatives}; "
            "every example needs the same number of hard negatives.",
        )
    if negatives:
        out["negative"] = negatives
    for key in ("query_id", "positive_id"):
        if key in example:
            out[key] = int(example[key])
    for key in PROMPT_FIELDS:
        if key in example:
            if not isinstance(example[key], str):
                _fail(index, f"{key!r} must be a string, got {type(example[key]).__name__}.")
            out[key] = example[key]
    if "teacher" in example:
        out["teacher"] = _check_teacher(example["teacher"], index, len(negatives), teacher_dim)
    return out


def _check_teacher(teacher, index, num_negatives, teacher_dim):
    if not isinstance(teacher, dict):
        _fail(index, "'teacher' must be a dict of embeddings (query, positive, negative).")
    out = {}
    for key in ("query", "positive", "negative"):
        if key == "negative" and not num_negatives:
            continue
        if key not in teacher:
            _fail(index, f"teacher embeddings lack {key!r}.")
        value = np.asarray(teacher[key], dtype="float32")
        expected = (num_negatives, teacher_dim) if key == "negative" else (teacher_dim,)
        if key == "negative" and value.ndim == 1 and num_negatives == 1:
            value = value[None]
        if teacher_dim is None:
            expected = value.shape
        if value.shape != expected:
            _fail(index, f"teacher {key!r} has shape {value.shape}, expected {expected}.")
        if not np.isfinite(value).all():
            _fail(index, f"teacher {key!r} embedding contains NaN or Inf.")
        out[key] = value
    return out


def _validated(examples):
    """Yields canonical examples, checking each agrees with the first one."""
    num_negatives = teacher_dim = has_teacher = None
    for index, example in enumerate(examples):
        example = _normalize_example(example, index, num_negatives, teacher_dim)
        keys = {k for k in (*PROMPT_FIELDS, "query_id", "positive_id") if k in example}
        if num_negatives is None:
            num_negatives = len(example.get("negative", []))
            has_teacher = "teacher" in example
            teacher_dim = example["teacher"]["query"].shape[0] if has_teacher else None
            optional_keys = keys
        if ("teacher" in example) != has_teacher:
            _fail(index, "either every example has 'teacher' embeddings or none has.")
        if keys != optional_keys:
            _fail(index, f"has the optional keys {sorted(keys)}, the first example has "
                         f"{sorted(optional_keys)}; give them to every example or none.")
        yield example


def _signature(example):
    spec = {
        "query": tf.TensorSpec((), tf.string),
        "positive": tf.TensorSpec((), tf.string),
    }
    if "negative" in example:
        spec["negative"] = tf.TensorSpec((len(example["negative"]),), tf.string)
    for key in ("query_id", "positive_id"):
        if key in example:
            spec[key] = tf.TensorSpec((), tf.int64)
    for key in PROMPT_FIELDS:
        if key in example:
            spec[key] = tf.TensorSpec((), tf.string)
    if "teacher" in example:
        spec["teacher"] = {
            k: tf.TensorSpec(v.shape, tf.float32) for k, v in example["teacher"].items()
        }
    return spec


def _dataset_from_python(data):
    """A list of dicts, a generator function or an iterator -> unbatched tf.data.

    Examples are validated as they stream, so a bad one is reported with its
    index (for generators, its position in the stream).
    """
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("The training data is empty: pass at least one example.")
        examples = list(_validated(data))
        ds = tf.data.Dataset.from_generator(
            lambda: iter(examples), output_signature=_signature(examples[0])
        )
        return ds.apply(tf.data.experimental.assert_cardinality(len(examples)))
    if callable(data):
        first = next(iter(data()), None)
        source = lambda: _validated(data())  # noqa: E731 - re-iterable per epoch
    else:
        iterator = iter(data)
        first = next(iterator, None)
        source = lambda: _validated(_chain(first, iterator))  # noqa: E731
    if first is None:
        raise ValueError("The training data is empty: the generator yielded nothing.")
    signature = _signature(next(_validated([first])))
    return tf.data.Dataset.from_generator(source, output_signature=signature)


def _chain(first, rest):
    yield first
    yield from rest


def _pack(preprocessor, texts, sequence_length):
    packed = preprocessor(texts, sequence_length=sequence_length)
    # int32 masks: tf.distribute cannot move bool tensors between replicas.
    return {key: tf.cast(value, tf.int32) for key, value in packed.items()}


def _trim_to_longest(x, sequence_length):
    """Cuts every group of `x` (padded to `sequence_length`) to the bucket of
    the batch's longest text; queries, positives and negatives keep one
    length, since the model embeds them as one batch."""
    lengths = tf.constant(bucket_lengths(sequence_length), tf.int32)
    longest = tf.reduce_max(
        [tf.reduce_max(tf.reduce_sum(group["padding_mask"], axis=-1)) for group in x.values()]
    )
    width = tf.reduce_min(tf.boolean_mask(lengths, lengths >= longest))
    return {
        name: {key: value[..., :width] for key, value in group.items()}
        for name, group in x.items()
    }


def _tokenize_batch(preprocessor, sequence_length, query_prompt, document_prompt, padding):
    def fn(batch):
        # Per-example prompts (one per source dataset) win over the defaults.
        query_prefix = batch.get("query_prompt", query_prompt)
        document_prefix = batch.get("document_prompt", document_prompt)
        x = {
            "query": _pack(
                preprocessor, tf.strings.join([query_prefix, batch["query"]]), sequence_length
            ),
            "positive": _pack(
                preprocessor, tf.strings.join([document_prefix, batch["positive"]]), sequence_length
            ),
        }
        if "negative" in batch:
            negatives = batch["negative"]
            shape = tf.shape(negatives)
            if "document_prompt" in batch:
                document_prefix = tf.repeat(document_prefix, shape[1])
            flat = tf.strings.join([document_prefix, tf.reshape(negatives, [-1])])
            packed = _pack(preprocessor, flat, sequence_length)
            x["negatives"] = {
                k: tf.reshape(v, [shape[0], shape[1], sequence_length]) for k, v in packed.items()
            }
        if padding == "longest":
            x = _trim_to_longest(x, sequence_length)
        y = {
            "query_ids": batch.get("query_id", tf.strings.to_hash_bucket_fast(batch["query"], _HASH_BUCKETS)),
            "positive_ids": batch.get(
                "positive_id", tf.strings.to_hash_bucket_fast(batch["positive"], _HASH_BUCKETS)
            ),
        }
        if "teacher" in batch:
            # Keys as the model's outputs name them ("negatives", plural).
            y["teacher"] = {
                {"negative": "negatives"}.get(k, k): tf.debugging.assert_all_finite(
                    v, f"teacher {k} embeddings contain NaN or Inf"
                )
                for k, v in batch["teacher"].items()
            }
        return x, y

    return fn


def _splits_batches():
    """True under a data-parallel distribution, which splits every batch
    evenly over the devices: there a partial last batch cannot be used."""
    if keras.distribution.distribution() is not None:
        return True
    return keras.backend.backend() == "tensorflow" and tf.distribute.has_strategy()


_SINGLE_LEFT_OUT = (
    "keras_egemma: the last batch of the epoch has a single example, which is left out "
    "(in-batch negatives need at least 2). Add an example or change `batch_size`."
)


def _batch(ds, batch_size, full_batches):
    """Batches `ds`, keeping a partial last batch where it can be trained on.

    A last batch of one example cannot be (its query has no in-batch
    negative) and is left out with a one-line message; so is any partial
    batch where batches must be full (gradient caching splits them into
    equal chunks, a data-parallel distribution over equal devices).
    """
    count = int(ds.cardinality())
    known = count >= 0
    if full_batches or _splits_batches():
        if known and count % batch_size:
            reason = "gradient caching" if full_batches else "a distributed batch"
            warnings.warn(
                f"The last {count % batch_size} of {count} training examples are left out of "
                f"each epoch: {reason} needs full batches of {batch_size}. Use a batch size "
                "that divides the number of examples to train on all of them.",
                stacklevel=4,
            )
        return ds.batch(batch_size, drop_remainder=True)
    ds = ds.batch(batch_size)
    if known:
        if count % batch_size == 1:
            warnings.warn(_SINGLE_LEFT_OUT, stacklevel=4)
            ds = ds.take(count // batch_size)
        return ds

    def left_out(batch):
        with tf.control_dependencies([tf.print(_SINGLE_LEFT_OUT, output_stream=sys.stderr)]):
            return tf.constant(False)

    def more_than_one(batch):
        single = tf.shape(batch["query"])[0] < 2
        return tf.cond(single, lambda: left_out(batch), lambda: tf.constant(True))

    return ds.filter(more_than_one)


def as_training_dataset(
    data,
    preprocessor,
    *,
    batch_size=32,
    sequence_length=None,
    padding="longest",
    full_batches=False,
    query_task="query",
    document_task="document",
    shuffle=False,
    seed=None,
):
    """Builds the tokenised `(x, y)` pipeline that `EmbeddingGemma.fit` trains on.

    Args:
        data: a list of example dicts, a generator (function or iterator) of
            them, or a `tf.data.Dataset` of them (unbatched, or already
            batched: then `batch_size` is ignored).
        preprocessor: the model's `EmbeddingGemmaPreprocessor`.
        batch_size: examples per batch. A partial last batch is trained on,
            except a single example (no in-batch negative) or under a
            data-parallel distribution, which are left out with a warning.
        sequence_length: longest text in tokens (longer ones are
            truncated). Defaults to the preprocessor's.
        padding: `"longest"` pads each batch to its longest text rounded up
            to a length bucket (16, 32, 64, 128, 192, 256, ...);
            `"max_length"` pads every batch to `sequence_length` (one shape
            throughout, e.g. for TPUs).
        full_batches: leave out a partial last batch (with a warning), as
            gradient caching needs; also the case under a data-parallel
            distribution.
        query_task / document_task: prompt names for queries and for
            positives and negatives (defaults: retrieval query / document).
        shuffle: shuffle examples (buffer of 10,000) before batching.
        seed: shuffle seed.

    Returns:
        A `tf.data.Dataset` of `(x, y)` batches: `x` token ids and padding
        masks `(B, L)` (negatives `(B, k, L)`), `y` duplicate ids and
        teacher embeddings.

    Example:
    ```python
    ds = as_training_dataset(
        [{"query": "red planet?", "positive": "Mars is red.", "negative": "Venus."}] * 4,
        model.preprocessor, batch_size=2,
    )
    ```
    """
    if padding not in PADDINGS:
        raise ValueError(f"`padding` must be one of {PADDINGS}, got {padding!r}.")
    sequence_length = sequence_length or preprocessor.sequence_length
    query_prompt = preprocessor.prompt_for(query_task) if query_task else ""
    document_prompt = preprocessor.prompt_for(document_task) if document_task else ""
    if isinstance(data, tf.data.Dataset):
        ds = data
        spec = ds.element_spec
        if not isinstance(spec, dict) or "query" not in spec or "positive" not in spec:
            raise ValueError(
                "A training tf.data.Dataset must yield dicts with 'query' and 'positive' "
                f"strings; got element_spec {spec}."
            )
        batched = spec["query"].shape.rank == 1
    else:
        ds = _dataset_from_python(data)
        batched = False
    if not batched:
        if shuffle:
            ds = ds.shuffle(10_000, seed=seed)
        if not isinstance(batch_size, int) or batch_size < 2:
            raise ValueError(
                f"`batch_size` must be an int >= 2 for in-batch negatives, got {batch_size!r}."
            )
        ds = _batch(ds, batch_size, full_batches)
    fn = _tokenize_batch(preprocessor, sequence_length, query_prompt, document_prompt, padding)
    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
