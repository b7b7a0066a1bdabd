"""In-batch negatives across devices.

On JAX, `keras.distribution.DataParallel` runs one program over the global
batch (SPMD), so the similarity matrix already spans every device's examples
and nothing is needed here. Under `tf.distribute`, each replica sees only its
own slice: the embeddings (and ids, teacher vectors) are all-gathered so the
loss is the loss of the global batch, as on one device.
"""

import keras


def _replica_context():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas():
    """Replicas that each compute a slice of the batch (1 outside tf.distribute)."""
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def gather_across_replicas(structure):
    """Concatenates every replica's slice of each tensor along the batch axis.

    `all_gather`'s gradient sums every replica's gradient for the local
    slice, so each replica backpropagates the global loss into its own
    examples.
    """
    context = _replica_context()
    if context is None:
        return structure
    import tensorflow as tf

    def gather(t):
        # all_gather drops static inner dims, which the losses check.
        return tf.reshape(context.all_gather(t, axis=0), [-1, *t.shape[1:]])

    return keras.tree.map_structure(gather, structure)
