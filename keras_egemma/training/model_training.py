"""`EmbeddingGemma`'s training methods: `compile` with the paper's objective,
`fit` on text examples, and the train step and loss Keras runs.

`EmbeddingGemma` inherits them; they read the model's graph only through
its Keras model interface (`self(...)`, `embedding_dim`, `preprocessor`).
"""

import contextlib

import keras

from keras_egemma import _keras_compat
from keras_egemma.training import gradient_cache
from keras_egemma.training.data import as_training_dataset
from keras_egemma.training.distributed import gather_across_replicas
from keras_egemma.training.distributed import num_replicas
from keras_egemma.training.heap import freed_memory_kept
from keras_egemma.training.non_finite_loss import StopOnNonFiniteLoss
from keras_egemma.training.objective import EmbeddingGemmaObjective
from keras_egemma.training.owned_buffers import take_ownership


class TrainingMethods:
    """Training with the paper's objective through plain `compile` / `fit`;
    mixed into `EmbeddingGemma` (a `keras.Model`)."""

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        *,
        mrl_dims=(768, 512, 256, 128),
        temperature=0.05,
        hardness_alpha=5.0,
        include_positive_in_denominator=False,
        nce_weight=1.0,
        spread_out_weight=1.0,
        distillation_weight=1.0,
        distillation_distance="l2",
        teacher_dim=None,
        gradient_cache_chunk_size=None,
        **kwargs,
    ):
        """Configures training; with no arguments, the paper's objective.

        `loss="auto"` trains with NCE (in-batch and hardness-weighted hard
        negatives, duplicates masked) plus the spread-out regulariser, both
        summed over the Matryoshka sizes, plus embedding distillation when
        the data carries teacher embeddings (`keras_egemma.training.objective`).
        Any other `loss` is passed to `keras.Model.compile` unchanged, for
        training on token ids with your own targets.

        Args:
            optimizer: `"auto"` is Adam with learning rate 5e-5.
            mrl_dims: Matryoshka sizes (those above the embedding size are
                dropped), or `None` for the full size only.
            temperature, hardness_alpha, include_positive_in_denominator: NCE
                settings (`keras_egemma.losses.nce`).
            nce_weight, spread_out_weight, distillation_weight: weights of
                the three terms (the paper weighs them uniformly).
            distillation_distance: `"l2"`, `"cosine"` or `"mse"`.
            teacher_dim: size of the teacher embeddings in the data, when it
                differs from the model's: a learnable projection (trained with
                the model, unused at inference) maps student embeddings to it.
            gradient_cache_chunk_size: embed each batch in chunks of this many
                examples and backpropagate chunk by chunk (gradient caching,
                `keras_egemma.training.gradient_cache`): the same gradients
                with the activation memory of one chunk. Every backend.

        Example:
        ```python
        model.compile()                       # the paper's objective
        model.fit(examples, batch_size=32, epochs=1)
        ```
        """
        if gradient_cache_chunk_size is not None:
            if not isinstance(gradient_cache_chunk_size, int) or gradient_cache_chunk_size < 1:
                raise ValueError(
                    "gradient_cache_chunk_size must be a positive int, got "
                    f"{gradient_cache_chunk_size!r}."
                )
        self.gradient_cache_chunk_size = gradient_cache_chunk_size
        self._objective_config = {
            "mrl_dims": None if mrl_dims is None else list(mrl_dims),
            "temperature": temperature,
            "hardness_alpha": hardness_alpha,
            "include_positive_in_denominator": include_positive_in_denominator,
            "nce_weight": nce_weight,
            "spread_out_weight": spread_out_weight,
            "distillation_weight": distillation_weight,
            "distillation_distance": distillation_distance,
            "teacher_dim": teacher_dim,
            "gradient_cache_chunk_size": gradient_cache_chunk_size,
        }
        self.objective = None
        if isinstance(loss, str) and loss == "auto":
            objective_args = dict(self._objective_config)
            objective_args.pop("gradient_cache_chunk_size")
            self.objective = EmbeddingGemmaObjective(self.embedding_dim, **objective_args)
            projection = self.objective.distillation.projection
            if projection is not None:
                projection.build((None, self.embedding_dim))
                # An attribute, so the model tracks and trains its weights.
                self.distillation_projection = projection
            loss = None
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        # PyTorch: Keras' Adam step allocates five parameter-sized temporaries.
        _keras_compat.use_fused_adam(getattr(self.optimizer, "inner_optimizer", self.optimizer))
        if self.objective is not None:
            self._term_trackers = {
                name: keras.metrics.Mean(name=name) for name in ("nce", "spread_out")
            }

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config.update(self._objective_config)
            if self.objective is not None:
                config["loss"] = "auto"
            # Whether the saved file holds optimizer slots to restore.
            config["optimizer_built"] = bool(getattr(self.optimizer, "built", False))
        return config

    def compile_from_config(self, config):
        # `.keras` files restore the objective's settings and the optimizer.
        config = keras.saving.deserialize_keras_object(config)
        optimizer_built = config.pop("optimizer_built", False)
        self.compile(**config)
        if optimizer_built and self.built:
            self.optimizer.build(self.trainable_variables)

    def __call__(self, inputs, *args, **kwargs):
        # Training batches are a dict of text groups, which the functional
        # input checks would reject; `call` embeds each group.
        if isinstance(inputs, dict) and "query" in inputs:
            return self.call(inputs, training=kwargs.get("training"))
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if not (isinstance(inputs, dict) and "query" in inputs):
            return super().call(inputs, training=training, mask=mask)
        # Training batches: queries, positives and hard negatives (all packed
        # to one length) go through the encoder as one batch.
        parts = [inputs["query"], inputs["positive"]]
        negatives = inputs.get("negatives")
        if negatives is not None:
            batch, k, length = keras.ops.shape(negatives["token_ids"])
            parts.append({
                key: keras.ops.reshape(value, (batch * k, length))
                for key, value in negatives.items()
            })
        joined = {
            key: keras.ops.concatenate(
                [keras.ops.cast(part[key], "int32") for part in parts], axis=0
            )
            for key in ("token_ids", "padding_mask")
        }
        embeddings = super().call(joined, training=training)
        size = keras.ops.shape(inputs["query"]["token_ids"])[0]
        out = {"query": embeddings[:size], "positive": embeddings[size : 2 * size]}
        if negatives is not None:
            out["negatives"] = keras.ops.reshape(
                embeddings[2 * size :], (size, k, keras.ops.shape(embeddings)[-1])
            )
        return out

    def train_step(self, *args):
        if not getattr(self, "gradient_cache_chunk_size", None):
            return super().train_step(*args)
        step = getattr(gradient_cache, f"{keras.backend.backend()}_gradient_cache_train_step")
        return step(self, *args, self.gradient_cache_chunk_size)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if getattr(self, "objective", None) is None or not isinstance(y_pred, dict):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        total, terms = self.objective(*gather_across_replicas((y, y_pred)))
        for name, value in terms.items():
            self._term_trackers[name].update_state(value)
        # Keras sums gradients over replicas and expects each replica's loss
        # to be its share of the global loss.
        return total / num_replicas()

    def _training_data(self, data, batch_size, sequence_length, padding, query_task,
                       document_task, shuffle):
        if self.preprocessor is None:
            raise ValueError("Training on text needs the model's preprocessor.")
        return as_training_dataset(
            data,
            self.preprocessor,
            batch_size=batch_size,
            sequence_length=sequence_length,
            padding=padding,
            full_batches=bool(getattr(self, "gradient_cache_chunk_size", None)),
            query_task=query_task,
            document_task=document_task,
            shuffle=shuffle,
        )

    def fit(
        self,
        x=None,
        y=None,
        batch_size=32,
        epochs=1,
        *,
        validation_data=None,
        sequence_length=None,
        padding="longest",
        query_task="query",
        document_task="document",
        shuffle=True,
        **kwargs,
    ):
        """Trains on (query, positive, negatives, teacher) examples.

        Args:
            x: a list of example dicts, a generator (function or iterator) of
                them, or a `tf.data.Dataset` of them (batched or not). An
                example: `{"query": str, "positive": str, "negative": str or
                [str, ...] (optional), "teacher": {"query": (D,), "positive":
                (D,), "negative": (k, D)} (optional), "query_id"/"positive_id"
                (optional ints marking duplicates), "query_prompt"/
                "document_prompt" (optional per-example prompts, as
                `single_source_batches(..., tasks=...)` sets them)}`.
            y: must be `None` (targets come from the examples).
            batch_size: examples per batch (in-batch negatives). Default 32.
                A partial last batch is trained on; a last batch of a
                single example is left out with a one-line message, and so
                is any partial batch with gradient caching or under a
                data-parallel distribution (they need full batches).
            epochs: passes over the data.
            validation_data: examples in the same forms, for `val_loss`.
            sequence_length: longest text in tokens, longer ones are
                truncated; defaults to the preprocessor's.
            padding: `"longest"` (default) pads each batch to its longest
                text, rounded up to a few length buckets; `"max_length"`
                pads every batch to `sequence_length` (one shape, e.g. for
                TPUs).
            query_task, document_task: prompt names for queries and for
                positives / negatives (retrieval query / document).
            shuffle: shuffle examples each epoch (Python lists and unbatched
                datasets). Use `False` with `single_source_batches`.
            **kwargs: passed to `keras.Model.fit` (callbacks, steps_per_epoch,
                initial_epoch, verbose, ...).

        The progress bar shows the total loss and its terms (`nce`,
        `spread_out`, `distillation`). The total can go below zero: the
        NCE of eq. (3) leaves the positive out of its denominator, so a
        positive far closer than every negative gives a negative log. A
        loss that becomes NaN or infinite stops training with
        `NonFiniteLossError`, naming the step.

        Example:
        ```python
        model.compile()
        model.fit(
            [{"query": "red planet?", "positive": "Mars is red.",
              "negative": "Venus is hot."}, ...],
            batch_size=16, epochs=2, sequence_length=128,
        )
        ```
        """
        # TensorFlow pools its own CPU memory; PyTorch and XLA call malloc.
        kept = keras.backend.backend() != "tensorflow"
        take_ownership(self.weights)
        with freed_memory_kept() if kept else contextlib.nullcontext():
            return self._fit(x, y, batch_size, epochs, validation_data, sequence_length,
                             padding, query_task, document_task, shuffle, **kwargs)

    def _fit(self, x, y, batch_size, epochs, validation_data, sequence_length, padding,
             query_task, document_task, shuffle, **kwargs):
        if getattr(self, "objective", None) is None:
            return super().fit(x, y, batch_size=batch_size, epochs=epochs,
                               validation_data=validation_data, **kwargs)
        if y is not None:
            raise ValueError("With the default objective, `y` must be None: targets come "
                             "from the examples.")
        prepare = lambda data, mix: self._training_data(  # noqa: E731
            data, batch_size, sequence_length, padding, query_task, document_task, mix
        )
        train = prepare(x, shuffle)
        validation = None if validation_data is None else prepare(validation_data, False)
        if "teacher" in train.element_spec[1] and "distillation" not in self._term_trackers:
            self._term_trackers["distillation"] = keras.metrics.Mean(name="distillation")
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(isinstance(c, StopOnNonFiniteLoss) for c in callbacks):
            callbacks.append(StopOnNonFiniteLoss())
        if keras.backend.backend() == "tensorflow" and not self.optimizer.built:
            # Built before the step is traced: TensorFlow traces a function
            # that creates variables twice, which doubles the first step.
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        # Shuffling happened in the pipeline; Keras cannot shuffle a dataset.
        return keras.Model.fit(
            self, train, epochs=epochs, validation_data=validation, shuffle=False,
            callbacks=callbacks, **kwargs
        )
