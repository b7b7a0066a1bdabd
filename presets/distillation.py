"""Helpers shared by the bundled models' build scripts (`build_mini_preset.py`,
`build_general_preset.py`): the teacher-initialised token table and the
weights digest of the reproducibility check."""

import hashlib

import keras
import numpy as np


def teacher_token_embeddings(model, encode):
    """Starts the token embeddings from the teacher: each piece's text (e.g.
    "import", "ing") embedded by `encode` (texts -> `(n, d)` array), reduced
    to the model width by PCA and scaled to the initial table's standard
    deviation. Returns the PCA components, `(hidden_dim, d)`."""
    tokenizer = model.preprocessor.tokenizer
    pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.vocabulary_size())]
    vectors = encode([p.replace("\u2581", " ").strip() or p for p in pieces])
    vectors = vectors.astype("float64") - vectors.mean(0)
    _, _, components = np.linalg.svd(vectors, full_matrices=False)
    vectors = vectors @ components[: model.backbone.hidden_dim].T
    table = model.backbone.token_embedding.embeddings
    initial = keras.ops.convert_to_numpy(table)
    table.assign((vectors * (initial.std() / vectors.std())).astype("float32"))
    return components[: model.backbone.hidden_dim]


def identity_start(model, components):
    """Starts the model as a bag of teacher token embeddings: every encoder
    block the identity (its post-attention and post-feed-forward norms'
    zero-centred scales at -1, so both residual branches add 0 until training
    opens them), and the projection head mapping the pooled PCA coordinates
    back into the teacher's space (`components`, `(hidden_dim, d)`, from
    `teacher_token_embeddings`; the head's other directions start at 0)."""
    for block in model.backbone.transformer_layers:
        for norm in (block.post_attention_norm, block.post_ffw_norm):
            norm.scale.assign(-np.ones(norm.scale.shape, "float32"))
    maps = [np.eye(a, b, dtype="float32") for a, b in zip(
        (model.backbone.hidden_dim,) + model.projection_units[:-1], model.projection_units)]
    maps[-1][:] = 0
    maps[-1][: len(components)] = components
    for layer, kernel in zip(model.projection_head.dense_layers, maps):
        layer.kernel.assign(kernel)


def weights_digest(model):
    """SHA-256 of all the model's weights, in order."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()
