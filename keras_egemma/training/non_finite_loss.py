"""Stopping a run whose loss stops being a number."""

import math

import keras


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` naming the step at which the training loss
    became NaN or infinite (the update of that step has already made the
    weights non-finite, so training further is pointless).

    `EmbeddingGemma.fit` adds it unless `callbacks` holds one already.

    Example:
    ```python
    model.fit(examples, callbacks=[StopOnNonFiniteLoss()])
    ```
    """

    def on_train_begin(self, logs=None):
        self.step = 0
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"The training loss became {float(loss)} at step {self.step} (epoch "
                f"{self.epoch + 1}, batch {batch + 1}); training stopped, and the weights of "
                "that step are not finite. Lower the learning rate, train in float32 rather "
                "than float16, or check the examples of that batch (empty texts, NaN teacher "
                "embeddings)."
            )
