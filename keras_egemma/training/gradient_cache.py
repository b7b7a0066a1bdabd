"""Gradient caching: large contrastive batches on small memory.

The contrastive loss couples every example of a batch, so a batch cannot be
split into independent micro-batches. Gradient caching (Gao et al., 2021)
splits the work instead: (1) embed the batch chunk by chunk without keeping
activations, (2) compute the loss and its gradient with respect to the
cached embeddings, (3) re-embed each chunk and backpropagate that chunk's
embedding gradient into the weights, summing over chunks. The result equals
the plain gradient; peak activation memory is that of one chunk. The
forward pass must be deterministic (no dropout), as the published model is.

Each backend computes gradients its own way, so each gets a small
`train_step`; the chunking and the algorithm are shared.
"""

import keras

from keras_egemma import _keras_compat


def split_rows(structure, chunk_size):
    """Splits every tensor of a training batch into row chunks."""
    batch = keras.tree.flatten(structure)[0].shape[0]
    if batch % chunk_size:
        raise ValueError(
            f"The batch size {batch} is not a multiple of gradient_cache_chunk_size="
            f"{chunk_size}."
        )
    return [
        keras.tree.map_structure(lambda t: t[start : start + chunk_size], structure)
        for start in range(0, batch, chunk_size)
    ]


def concat_rows(chunks):
    return keras.tree.map_structure(lambda *ts: keras.ops.concatenate(ts, axis=0), *chunks)


def jax_gradient_cache_train_step(model, state, data, chunk_size):
    """A drop-in for the JAX trainer's `train_step` with gradient caching."""
    import jax

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    chunks = split_rows(x, chunk_size)

    def embed(trainable_values, chunk):
        y_pred, _ = model.stateless_call(trainable_values, non_trainable, chunk, training=True)
        return y_pred

    cached = concat_rows(
        [jax.lax.stop_gradient(embed(trainable, chunk)) for chunk in chunks]
    )

    def loss_of_embeddings(y_pred):
        loss, variables = model.stateless_compute_loss(
            trainable, non_trainable, metrics_variables, x=x, y=y, y_pred=y_pred,
            sample_weight=sample_weight, training=True,
        )
        return loss, variables

    (loss, variables), embedding_grads = jax.value_and_grad(
        loss_of_embeddings, has_aux=True
    )(cached)
    metrics_variables = variables[2]

    grads = None
    for chunk, chunk_grads in zip(chunks, split_rows(embedding_grads, chunk_size)):
        _, backward = jax.vjp(lambda values: embed(values, chunk), trainable)
        (chunk_param_grads,) = backward(chunk_grads)
        grads = chunk_param_grads if grads is None else jax.tree_util.tree_map(
            lambda a, b: a + b, grads, chunk_param_grads
        )

    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, grads, trainable
    )
    logs, metrics_variables = _keras_compat.update_metrics_variables(
        model, metrics_variables, loss, x, y, cached, sample_weight
    )
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


def _batch_size(x):
    return keras.tree.flatten(x)[0].shape[0]


def tensorflow_gradient_cache_train_step(model, data, chunk_size):
    """A drop-in for the TensorFlow trainer's `train_step`."""
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    chunks = split_rows(x, chunk_size)
    cached = keras.tree.map_structure(
        tf.stop_gradient, concat_rows([model(c, training=True) for c in chunks])
    )
    with tf.GradientTape() as tape:
        tape.watch(cached)
        loss = _keras_compat.compute_loss(model, x, y, cached, sample_weight)
    embedding_grads = tape.gradient(loss, cached)
    _keras_compat.loss_tracker(model).update_state(loss, sample_weight=_batch_size(x))

    weights = model.trainable_weights
    grads = [tf.zeros_like(w) for w in weights]
    for chunk, chunk_grads in zip(chunks, split_rows(embedding_grads, chunk_size)):
        with tf.GradientTape() as tape:
            embeddings = keras.tree.flatten(model(chunk, training=True))
            # d/dθ of sum(e · g) with g held fixed is g backpropagated through e.
            surrogate = tf.add_n([
                tf.reduce_sum(e * tf.stop_gradient(g))
                for e, g in zip(embeddings, keras.tree.flatten(chunk_grads))
            ])
        grads = [a + b for a, b in zip(grads, tape.gradient(surrogate, weights))]
    model.optimizer.apply_gradients(zip(grads, weights))
    return model.compute_metrics(x, y, cached, sample_weight=sample_weight)


def torch_gradient_cache_train_step(model, data, chunk_size):
    """A drop-in for the PyTorch trainer's `train_step`."""
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    chunks = split_rows(x, chunk_size)
    with torch.no_grad():
        cached = concat_rows([model(c, training=True) for c in chunks])
    cached = keras.tree.map_structure(lambda t: t.detach().requires_grad_(True), cached)
    loss = _keras_compat.compute_loss(model, x, y, cached, sample_weight)
    leaves = keras.tree.flatten(cached)
    embedding_grads = torch.autograd.grad(loss, leaves)
    _keras_compat.loss_tracker(model).update_state(loss.detach(), sample_weight=_batch_size(x))

    model.zero_grad()
    offsets = range(0, _batch_size(x), chunk_size)
    for chunk, start in zip(chunks, offsets):
        embeddings = keras.tree.flatten(model(chunk, training=True))
        torch.autograd.backward(
            embeddings, [g[start : start + chunk_size] for g in embedding_grads]
        )
    weights = model.trainable_weights[:]
    with torch.no_grad():
        model.optimizer.apply([w.value.grad for w in weights], weights)
    cached = keras.tree.map_structure(lambda t: t.detach(), cached)
    return model.compute_metrics(x, y, cached, sample_weight=sample_weight)
