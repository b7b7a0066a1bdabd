"""Plain-numpy EmbeddingGemma pieces written from the equations in docs/reference.md.

Independent of the library (no keras, no keras_egemma): the layer tests
compare against these.
"""

import numpy as np


def rms_norm(x, w, eps=1e-6):
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * (1.0 + w)


def rope(x, base):
    """Rotate-half RoPE on `(batch, length, heads, head_dim)`."""
    length, dim = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / base ** (np.arange(0, dim, 2) / dim)
    angles = np.arange(length)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)[None, :, None, :]
    half = dim // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * np.cos(angles) + rotated * np.sin(angles)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def attention(x, mask, w, *, heads, kv_heads, head_dim, scalar, window, base, eps):
    """One attention layer. `w`: dict of q/k/v/o kernels and q/k norm scales.

    Kernels use the layout q: (heads, d, h), k/v: (kv_heads, d, h),
    o: (heads, h, d). `mask`: (batch, length) 1 for real tokens.
    """
    q = np.einsum("btd,ndh->btnh", x, w["q"])
    k = np.einsum("btd,kdh->btkh", x, w["k"])
    v = np.einsum("btd,kdh->btkh", x, w["v"])
    q = rope(rms_norm(q, w["q_norm"], eps), base)
    k = rope(rms_norm(k, w["k_norm"], eps), base)
    group = heads // kv_heads
    k = np.repeat(k, group, axis=2)
    v = np.repeat(v, group, axis=2)
    scores = np.einsum("btnh,bsnh->bnts", q, k) * scalar**-0.5
    length = x.shape[1]
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    allowed = np.broadcast_to(mask[:, None, None, :].astype(bool), scores.shape)
    if window is not None:
        allowed = allowed & (np.abs(i - j) <= window // 2)[None, None]
    scores = np.where(allowed, scores, -np.inf)
    # Rows with nothing allowed (padding far from text) are dropped later.
    peak = np.max(np.where(allowed, scores, -1e300), axis=-1, keepdims=True)
    probs = np.where(allowed, np.exp(scores - peak), 0.0)
    probs = probs / np.maximum(probs.sum(-1, keepdims=True), 1e-300)
    out = np.einsum("bnts,bsnh->btnh", probs, v)
    return np.einsum("btnh,nhd->btd", out, w["o"])


def encoder_block(x, mask, w, **kw):
    eps = kw["eps"]
    h = x + rms_norm(attention(rms_norm(x, w["pre_attn"], eps), mask, w, **kw), w["post_attn"], eps)
    n = rms_norm(h, w["pre_ffw"], eps)
    ffw = (gelu_tanh(n @ w["gate"]) * (n @ w["up"])) @ w["down"]
    return h + rms_norm(ffw, w["post_ffw"], eps)


def mean_pool(x, mask):
    m = mask.astype(bool)[:, :, None]
    return np.where(m, x, 0.0).sum(1) / m.sum(1)


def l2_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
