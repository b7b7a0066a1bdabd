"""EmbeddingGemma 2's published text configuration with random weights, built offline.

`build_published_checkpoint(out_dir)` saves a sentence-transformers folder (Transformer ->
mean Pooling -> Normalize, transformers' `EmbeddingGemma2TextModel` underneath) with
`EmbeddingGemma2TextConfig`'s own defaults (24 layers, hidden 512, sliding radius 512,
global heads of 512, PLE 512, projection to 768) and seeded random weights, `weights=`:

- "conditioned" (default): transformers' initialisation (linear weights and token table
  N(0, 0.02)), then every 1-D weight (each RMSNorm's scale, each layer's `layer_scalar`)
  times (1 + e), e ~ N(0, 0.1) per element, and the `q_norm`/`k_norm` scales also times
  head_dim ** -0.25, so that the attention scores q.k have unit variance (the model's
  attention scaling is 1: the learned q/k norms carry 1/sqrt(head_dim)).
- "transformers": transformers' initialisation as it is (norms and `layer_scalar` one).

Why: with q/k norms of one the scores have variance head_dim (256, 512), softmax is near
argmax, and the random network is chaotic: float32 rounding grows x1.5-2.5 per layer, so
transformers' own float32-vs-float64 gap (24 layers, 64 tokens: 0.056 max abs on the
token embeddings) swamps any parity or quantization bound. Conditioned, it grows x1.02
per layer (2.4e-6; run this module).

The tokenizer is a small SentencePiece model trained offline (`spm_vocab_size` pieces);
`vocab_size` sizes the embedding table (default: the tokenizer's; 262144, the published
size, gives the published parameter count, and every id of the small tokenizer fits). No
download. Shared by the benchmarks that need the published shapes:
`embedding_gemma2_long_parity.py`, `quantization_fidelity.py --embeddinggemma2` and
`inference_speed.py --model embeddinggemma2` (which keeps "transformers").

    checkpoint = build_published_checkpoint("/tmp/eg2", vocab_size=262144)

Run as a script, it measures the conditioning: transformers' own float32 against float64
on one random input, per layer (relative error of each layer's output) and at the end (max
abs of the token embeddings and of the mean-pooled, normalised embedding). Fewer `--layers`
and `--tokens` keep it small (6 layers, 128 tokens: about 0.85 GB, seconds):

    python benchmarks/embedding_gemma2_published.py [--weights conditioned] [--layers 6] [--tokens 128]
"""

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED_VOCAB_SIZE = 262144
WEIGHTS = ("conditioned", "transformers")
NORM_NOISE = 0.1


def published_text_overrides():
    """`EmbeddingGemma2TextConfig`'s own defaults in place of the tiny test values."""
    from transformers import EmbeddingGemma2TextConfig

    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "sliding_window", "hidden_size_per_layer_input",
            "embedding_dim")
    overrides = {key: getattr(EmbeddingGemma2TextConfig, key) for key in keys}
    # Builder-only arguments (not config attributes): their defaults, and the default
    # layer pattern (a global layer every 6th).
    overrides.update(global_head_dim=512, num_global_key_value_heads=1, layer_types=None)
    return overrides


def test_builders():
    """The test suite's checkpoint modules (`tests/` on the path)."""
    tests = os.path.join(HERE, "..", "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import embedding_gemma2_checkpoints
    import reference_checkpoints

    return embedding_gemma2_checkpoints, reference_checkpoints


def published_text_model(config, *, weights="conditioned", seed=0):
    """`EmbeddingGemma2TextModel(config)` with the `weights` of the module docstring."""
    import torch
    from transformers import EmbeddingGemma2TextModel

    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}: choose one of {', '.join(WEIGHTS)}")
    torch.manual_seed(seed)
    model = EmbeddingGemma2TextModel(config)
    if weights == "conditioned":
        noise = torch.Generator().manual_seed(seed)
        state = model.state_dict()
        with torch.no_grad():
            for name in sorted(state):
                tensor = state[name]
                if tensor.ndim != 1 or not tensor.is_floating_point():
                    continue
                scale = 1 + NORM_NOISE * torch.randn(tensor.shape, generator=noise)
                if name.endswith(("q_norm.weight", "k_norm.weight")):
                    scale *= tensor.numel() ** -0.25
                tensor.mul_(scale.to(tensor.dtype))
    return model


def build_published_checkpoint(out_dir, *, weights="conditioned", seed=0, spm_vocab_size=1024,
                               vocab_size=None, max_seq_length=8192, num_hidden_layers=None):
    """The folder described in the module docstring; returns `out_dir`. `num_hidden_layers`
    (default: the published 24) is for smoke runs."""
    from transformers import EmbeddingGemma2TextConfig

    e2, rc = test_builders()
    with tempfile.TemporaryDirectory() as tmp:
        spm = rc.train_sentencepiece(tmp, vocab_size=spm_vocab_size)
        overrides = published_text_overrides()
        if vocab_size is not None:
            overrides["vocab_size"] = vocab_size
        if num_hidden_layers is not None:
            overrides["num_hidden_layers"] = num_hidden_layers
        checkpoint = e2.build_embedding_gemma2_checkpoint(
            out_dir, spm_path=spm, seed=seed, max_seq_length=max_seq_length, **overrides,
        )
    config = EmbeddingGemma2TextConfig.from_pretrained(checkpoint)
    published_text_model(config, weights=weights, seed=seed).save_pretrained(checkpoint)
    return checkpoint


def float64_gap(weights, *, layers, tokens, seed=0, vocab_size=1024):
    """transformers' float32 against its float64 on one random input (module docstring)."""
    import numpy as np
    import torch

    e2, rc = test_builders()
    overrides = published_text_overrides()
    overrides["num_hidden_layers"] = layers
    config = e2.text_config(vocab_size, **overrides)
    config._attn_implementation = "eager"
    model = published_text_model(config, weights=weights, seed=seed).eval()
    ids = np.random.default_rng(seed).integers(3, vocab_size, size=(1, tokens))
    ids[0, 0], ids[0, -1] = rc.BOS_ID, rc.EOS_ID
    inputs = dict(input_ids=torch.from_numpy(ids), attention_mask=torch.ones(1, tokens))

    def run():
        captured = []
        hooks = [layer.register_forward_hook(lambda m, i, o: captured.append(o[0].double()))
                 for layer in model.layers]
        with torch.no_grad():
            out = model(**inputs).last_hidden_state[0].double()
        for hook in hooks:
            hook.remove()
        pooled = out.mean(0)
        return captured, out, pooled / pooled.norm()

    states32, tokens32, pooled32 = run()
    model.double()
    states64, tokens64, pooled64 = run()
    per_layer = [float((a - b).norm() / b.norm()) for a, b in zip(states32, states64)]
    return {
        "per_layer_relative": per_layer,
        # Geometric mean growth of the relative error from one layer to the next.
        "growth_per_layer": (per_layer[-1] / per_layer[0]) ** (1 / max(layers - 1, 1)),
        "token_embeddings_max_abs": float((tokens32 - tokens64).abs().max()),
        "token_embeddings_reference_max_abs": float(tokens64.abs().max()),
        "embedding_max_abs": float((pooled32 - pooled64).abs().max()),
    }


def main():
    parser = argparse.ArgumentParser(description="transformers' float32 against float64 "
                                     "on the published shapes (module docstring)")
    parser.add_argument("--weights", choices=WEIGHTS, default="conditioned")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    r = float64_gap(args.weights, layers=args.layers, tokens=args.tokens, seed=args.seed)
    print("relative error per layer: " + " ".join(f"{x:.2g}" for x in r["per_layer_relative"]))
    print(f"{args.weights} weights, {args.layers} layers, {args.tokens} tokens: growth "
          f"x{r['growth_per_layer']:.3f} per layer; token embeddings max abs "
          f"{r['token_embeddings_max_abs']:.3g} (of {r['token_embeddings_reference_max_abs']:.3g}); "
          f"normalised embedding max abs {r['embedding_max_abs']:.3g}")


if __name__ == "__main__":
    main()
