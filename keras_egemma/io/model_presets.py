"""`EmbeddingGemma`'s preset methods: `from_preset` (every supported layout),
the decoder / T5Gemma initialisations, atomic `save_to_preset`, and the
exports to sentence-transformers, KerasHub and GGUF (`keras_egemma.convert`)."""

import os
import shutil
import tempfile

from keras_egemma import _keras_compat
from keras_egemma.convert.gguf_file import save_gguf
from keras_egemma.convert.initialization import embedding_gemma_from_decoder
from keras_egemma.convert.initialization import embedding_gemma_from_t5gemma
from keras_egemma.convert.keras_hub_preset_writing import save_keras_hub_preset
from keras_egemma.convert.sentence_transformers_folder import save_sentence_transformers_folder
from keras_egemma.io.atomic_saving import save_atomically
from keras_egemma.io.mapped_weights import zero_copy_weight_files
from keras_egemma.io.packed_int4 import int4_weights_left_packed
from keras_egemma.io.preset_loading import load_embedding_gemma
from keras_egemma.io.saved_dtype import check_saved_dtype
from keras_egemma.io.saved_dtype import computing_in_variable_dtype
from keras_egemma.io.saved_dtype import variable_dtype
from keras_egemma.models.backbone import EmbeddingGemmaBackbone
from keras_egemma.models.dtypes import check_dtype


def _refuse_other_backbones(model, layout):
    """The foreign-format writers know the first model's layout only."""
    if not isinstance(model.backbone, EmbeddingGemmaBackbone):
        raise ValueError(
            f"Writing {layout} is supported for EmbeddingGemma (Gemma 3) models only; this "
            f"model's backbone is a {type(model.backbone).__name__} (EmbeddingGemma 2), whose "
            "layout (per-layer embeddings, its own global layers) that writer does not know "
            "yet. Save it with `save_to_preset`."
        )


class PresetMethods:
    """Loading from and saving to presets; mixed into `EmbeddingGemma` (a
    KerasHub `TextEmbedder`, whose own preset loading it builds on)."""

    @classmethod
    def from_preset(cls, preset, load_weights=True, dtype=None, **kwargs):
        """Loads a model from a name, a directory or a hub handle.

        Resolved automatically:
        - a registered name (`keras_egemma.presets.list_presets()`), e.g.
          `"embeddinggemma_300m"` (the published model) or the bundled small
          `"embeddinggemma_tiny"`;
        - a preset directory saved by `save_to_preset`;
        - a Hugging Face / sentence-transformers checkpoint folder
          (`config.json` + `model.safetensors` + tokenizer + `2_Dense`/`3_Dense`)
          or an `hf://owner/name` handle;
        - a KerasHub `Gemma3Backbone(is_embedding_model=True)` preset folder or
          its `kaggle://...` handle.

        Weights are read from safetensors or `.weights.h5` only; nothing is
        unpickled.

        Args:
            preset: name, path or handle.
            load_weights: `False` builds the architecture with random weights.
            dtype: `"float32"` (default), `"bfloat16"`, or `"mixed_bfloat16"`
                (float32 weights, bfloat16 compute: mixed-precision
                training). `None` follows the global policy
                (`keras.config.dtype_policy()`).

        Example:
        ```python
        model = EmbeddingGemma.from_preset("hf://google/embeddinggemma-300m")
        ```
        """
        check_dtype(dtype)
        return load_embedding_gemma(
            cls, preset, load_weights=load_weights, dtype=dtype, **kwargs
        )

    @classmethod
    def from_decoder(cls, source, **kwargs):
        """A new embedding model initialised from a decoder-only Gemma 3.

        The transformer of a Hugging Face `Gemma3ForCausalLM` /
        `Gemma3TextModel` folder or a KerasHub `Gemma3Backbone` preset, its
        attention made bidirectional, with a new pooler and projection head
        (the "Gemma 3 decoder" initialisation of the paper's Table 2). See
        `keras_egemma.convert.initialization.embedding_gemma_from_decoder` for
        the arguments (`projection_units`, `sliding_window`, `seed`, ...).

        Example:
        ```python
        model = EmbeddingGemma.from_decoder("./gemma-3-270m", seed=0)
        ```
        """
        return embedding_gemma_from_decoder(cls, source, **kwargs)

    @classmethod
    def from_t5gemma(cls, source, **kwargs):
        """A new embedding model from the text encoder of a T5Gemma 2 checkpoint.

        The paper's initialisation (Table 2): Gemma 3 adapted to an
        encoder-decoder, then its encoder kept. See
        `keras_egemma.convert.initialization.embedding_gemma_from_t5gemma`.

        Example:
        ```python
        model = EmbeddingGemma.from_t5gemma("./t5gemma-2-270m-270m", seed=0)
        ```
        """
        return embedding_gemma_from_t5gemma(cls, source, **kwargs)

    @classmethod
    def _from_keras_preset(cls, preset, **kwargs):
        """KerasHub's own preset loading, for presets saved by this library
        (whichever backbone class they hold)."""
        return _keras_compat.load_task_preset(cls, preset, **kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10, dtype=None):
        """Saves the model, its tokenizer and its prompts to a preset folder.

        The files are written to a temporary folder beside `preset_dir` and
        moved into place once complete, so an interrupted save leaves the old
        preset (or nothing), never a mix. An existing `preset_dir` is replaced
        if it is empty or a preset saved by this library; any other existing
        path raises `ValueError` and is left untouched.

        A model trained in mixed precision (`mixed_bfloat16`) is saved as a
        float32 preset, and a model with LoRA adapters as a plain preset with
        the adapters merged into its kernels (`save_lora_weights` saves the
        adapters alone).

        Args:
            preset_dir: folder to write.
            max_shard_size: largest weights file in GB before KerasHub shards.
            dtype: `None` (the dtype of the model's variables: float32 for
                float32 and mixed_bfloat16 models), `"float32"` or
                `"bfloat16"` (half the size; `from_preset(..., dtype="bfloat16")`
                loads it as a bfloat16 model, and by default it loads in
                the global policy, as every preset does).

        Example:
        ```python
        model.save_to_preset("./my_embeddinggemma")
        EmbeddingGemma.from_preset("./my_embeddinggemma")
        ```
        """
        target = check_saved_dtype(self, dtype)
        save_preset = super().save_to_preset

        def save_own(folder):
            # Large tensors on page boundaries: JAX maps them when loading.
            with zero_copy_weight_files(), int4_weights_left_packed(), \
                    computing_in_variable_dtype(self):
                save_preset(folder, max_shard_size=max_shard_size)

        def save_cast(folder):
            # Cast through a copy loaded in the target dtype (Keras casts each
            # weight as it loads): the model itself stays as it is.
            scratch = tempfile.mkdtemp(prefix=".cast-", dir=os.path.dirname(folder))
            try:
                save_own(scratch)
                copy = type(self).from_preset(scratch, dtype=target)
                copy.save_to_preset(folder, max_shard_size=max_shard_size)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

        save_atomically(save_own if target == variable_dtype(self) else save_cast, preset_dir)

    def save_to_sentence_transformers(self, path, max_shard_size=5, dequantize=False,
                                      **model_card):
        """Saves the model as a sentence-transformers / Hugging Face folder.

        The folder of `google/embeddinggemma-300m`: a `Gemma3TextModel`
        (`config.json`, `model.safetensors`), the tokenizer, Pooling, one Dense
        module per projection layer, Normalize, every prompt of the
        preprocessor and a `README.md` model card. sentence-transformers,
        transformers and the servers built on them load it; so does
        `from_preset`. Written atomically, like `save_to_preset`.

        Refused, with nothing written: attention pooling (sentence-transformers
        has no learned pooling) and a quantized model unless `dequantize=True`.

        Args:
            path: folder to write; an existing one is replaced only if empty or
                written by this method.
            max_shard_size: largest `model.safetensors` in GB before sharding.
            dequantize: for a quantized model, write the float weights its
                quantized layers compute with (equal outputs for int4 layers;
                int8 layers also round activations, which the float copy does
                not).
            **model_card: `base_model`, `license`, `training_data`,
                `evaluation` (see `keras_egemma.convert.model_card.model_card`).

        Example:
        ```python
        model.fit(examples, batch_size=32)
        model.save_to_sentence_transformers(
            "./my-embeddinggemma", training_data="our FAQ pairs"
        )
        SentenceTransformer("./my-embeddinggemma").encode_query(["a query"])
        ```
        """
        _refuse_other_backbones(self, "a sentence-transformers folder")
        with computing_in_variable_dtype(self):
            save_sentence_transformers_folder(
                self, path, max_shard_size=max_shard_size, dequantize=dequantize, **model_card
            )

    def save_to_keras_hub(self, preset_dir, max_shard_size=10, dequantize=False):
        """Saves the model as a KerasHub `Gemma3Backbone(is_embedding_model=True)`
        preset with its `Gemma3Tokenizer`, the layout of Kaggle's
        `embedding_gemma3_300m`, which `keras_hub.models.Gemma3Backbone.from_preset`
        loads (its `pooled_output` is the embedding). Written atomically.

        KerasHub has no prompts or sequence length in the preset (add the prompt
        to the text yourself), and its sliding window sees one token fewer on one
        side: its embeddings equal ours on texts of at most `sliding_window // 2`
        tokens. Refused, with nothing written: what KerasHub cannot build (other
        poolings or heads, layer patterns, RoPE bases, `query_pre_attn_scalar !=
        head_dim`) and a quantized model unless `dequantize=True`.

        Args:
            preset_dir: folder to write; an existing one is replaced only if
                empty or written by this method.
            max_shard_size: largest weights file in GB before KerasHub shards.
            dequantize: for a quantized model, write the float weights its
                quantized layers compute with.

        Example:
        ```python
        model.save_to_keras_hub("./embeddinggemma_keras_hub")
        keras_hub.models.Gemma3Backbone.from_preset("./embeddinggemma_keras_hub")
        ```
        """
        _refuse_other_backbones(self, "a KerasHub Gemma3Backbone preset")
        with computing_in_variable_dtype(self):
            save_keras_hub_preset(
                self, preset_dir, max_shard_size=max_shard_size, dequantize=dequantize
            )

    def save_to_gguf(self, path, file_type="f16", dequantize=False):
        """Saves the model as a GGUF file for llama.cpp and Ollama.

        What llama.cpp's own converter writes for EmbeddingGemma with its Dense
        modules (architecture `gemma-embedding`, its tensor names, pooling type,
        sliding window, the SentencePiece vocabulary, `<bos>`/`<eos>` added),
        including the two Dense heads that many published GGUF files lack. The
        prompts are stored under `keras_egemma.prompts`, which llama.cpp ignores:
        prepend them to the text yourself. llama.cpp returns unnormalised
        vectors unless asked (`--embd-normalize 2`, `embed(normalize=True)`).
        Written beside `path` and renamed into place.

        Refused, with nothing written: what llama.cpp cannot build (layer
        pattern, sliding RoPE base, `query_pre_attn_scalar != head_dim`, pooling,
        head) and a quantized model unless `dequantize=True` (or export the
        float model with `file_type="q8_0"`).

        Args:
            path: the `.gguf` file; an existing one is replaced only if this
                method wrote it.
            file_type: `"f32"`, `"f16"` (matrices in float16; the default) or
                `"q8_0"` (matrices in blocks of 32 int8 values with a scale).
            dequantize: for a quantized model, write the float weights its
                quantized layers compute with (then stored as `file_type`).

        Example:
        ```python
        model.save_to_gguf("embeddinggemma-q8_0.gguf", file_type="q8_0")
        # llama-embedding -m embeddinggemma-q8_0.gguf --pooling mean --embd-normalize 2 \\
        #     -p "task: search result | query: Which planet is red?"
        ```
        """
        _refuse_other_backbones(self, "a GGUF file")
        with computing_in_variable_dtype(self):
            save_gguf(self, path, file_type=file_type, dequantize=dequantize)
