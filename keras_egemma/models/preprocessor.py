import warnings

import keras
import numpy as np
from keras_hub.layers import StartEndPacker
from keras_hub.models import Preprocessor

from keras_egemma import _keras_compat
from keras_egemma.models.backbone import EmbeddingGemmaBackbone
from keras_egemma.models.embedding_gemma2_backbone import EmbeddingGemma2Backbone
from keras_egemma.models.prompts import DEFAULT_PROMPTS
from keras_egemma.models.prompts import document_prompt
from keras_egemma.models.prompts import resolve_prompt
from keras_egemma.models.tokenizer import EmbeddingGemmaTokenizer


def clean_text(text):
    """Makes a `str` encodable as UTF-8, which the tokenizer requires.

    A high surrogate followed by a low one becomes the character the pair
    encodes; any other (lone) surrogate becomes U+FFFD, the replacement
    character. Strings from decoded files never hold surrogates; strings built
    from UTF-16 code units (JSON escapes, Windows APIs) may.

    Example:
    ```python
    clean_text("a\\ud800b") == "a\\ufffdb"
    ```
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def check_texts(texts, what="texts"):
    """Validates user text input; returns `(list_of_str, was_single_string)`."""
    if isinstance(texts, str):
        return [texts], True
    if texts is None:
        raise ValueError(f"`{what}` is None. Pass a string or a list of strings.")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, (list, tuple)):
        raise TypeError(
            f"`{what}` must be a string or a list of strings, got "
            f"{type(texts).__name__}."
        )
    if len(texts) == 0:
        raise ValueError(f"`{what}` is an empty list. Pass at least one string.")
    out = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"`{what}[{i}]` is bytes that are not valid UTF-8 ({e}). Decode "
                    "it with its real encoding and pass a str."
                ) from None
        if not isinstance(text, str):
            raise TypeError(
                f"`{what}[{i}]` is a {type(text).__name__}, not a string: "
                f"{text!r}. Convert every item to str first."
            )
        out.append(text)
    return out, False


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingGemmaPreprocessor(Preprocessor):
    """Prompts, tokenises and packs text for `EmbeddingGemma`.

    Packing follows the reference: `<bos>` + tokens + `<eos>`, padded on the
    right with `<pad>`, truncated so the whole fits in `sequence_length` (the
    text is cut, `<eos>` is kept). The prompt table is part of the config, so a
    checkpoint's own prompts travel with its preset.

    `call` packs strings as given (use it in `tf.data` pipelines, with prompts
    already prepended); `format_texts` prepends prompts and
    `tokenize_texts` gives unpadded id lists for `EmbeddingGemma.encode`.

    Args:
        tokenizer: an `EmbeddingGemmaTokenizer`.
        sequence_length: int. Longest packed input, special tokens included.
            Defaults to `2048`.
        prompts: dict `{name: prompt}` of task prompts. Defaults to the
            model card's table (`keras_egemma.models.prompts.DEFAULT_PROMPTS`).

    Shapes:
        strings `(batch,)` -> `{"token_ids": (batch, sequence_length) int32,
        "padding_mask": (batch, sequence_length) bool}`.

    Example:
    ```python
    pre = EmbeddingGemmaPreprocessor(tokenizer, sequence_length=64)
    x = pre(pre.format_texts(["Which planet is red?"], task="query"))
    ```
    """

    backbone_cls = EmbeddingGemmaBackbone
    tokenizer_cls = EmbeddingGemmaTokenizer

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """KerasHub's `Preprocessor.from_preset`, for EmbeddingGemma 2 presets too
        (their backbone class differs, for which KerasHub would look for another
        preprocessor class)."""
        if _keras_compat.preset_backbone_class(preset) is EmbeddingGemma2Backbone:
            return _keras_compat.load_preprocessor_preset(cls, preset, **kwargs)
        return super().from_preset(preset, **kwargs)

    def __init__(self, tokenizer, sequence_length=2048, prompts=None, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.prompts = dict(DEFAULT_PROMPTS if prompts is None else prompts)
        self.packer = None
        self._warned_truncation = False

    def build(self, input_shape):
        self.packer = StartEndPacker(
            start_value=self.tokenizer.start_token_id,
            end_value=self.tokenizer.end_token_id,
            pad_value=self.tokenizer.pad_token_id,
            sequence_length=self.sequence_length,
            return_padding_mask=True,
        )
        self.built = True

    def call(self, x, y=None, sample_weight=None, sequence_length=None):
        # Python strings (not tensors) may hold lone surrogates.
        if isinstance(x, str):
            x = clean_text(x)
        elif isinstance(x, (list, tuple)):
            x = [clean_text(t) if isinstance(t, str) else t for t in x]
        token_ids, padding_mask = self.packer(
            self.tokenizer(x),
            sequence_length=sequence_length or self.sequence_length,
        )
        x = {"token_ids": token_ids, "padding_mask": padding_mask}
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def prompt_for(self, task):
        """The prompt string of a task name (see `prompts`)."""
        return resolve_prompt(task, self.prompts)

    def format_texts(self, texts, task=None, prompt=None, titles=None):
        """Prepends the task prompt (or document-with-title prompt) to each text.

        Args:
            texts: list of strings.
            task: prompt name, or `None` for no prompt.
            prompt: a literal prefix; excludes `task`.
            titles: list of document titles (strings or `None`), one per text;
                gives `title: {title} | text: ` prompts and excludes `task`.
        """
        if sum(arg is not None for arg in (task, prompt, titles)) > 1:
            raise ValueError("Pass at most one of `task`, `prompt` and `titles`.")
        if titles is not None:
            titles = list(titles)
            if len(titles) != len(texts):
                raise ValueError(
                    f"Got {len(titles)} titles for {len(texts)} texts; pass one "
                    "title (or None) per text."
                )
            return [document_prompt(t) + text for t, text in zip(titles, texts)]
        if task is not None:
            prompt = self.prompt_for(task)
        if prompt is None:
            return list(texts)
        if not isinstance(prompt, str):
            raise TypeError(f"`prompt` must be a string, got {type(prompt).__name__}.")
        return [prompt + text for text in texts]

    def tokenize_texts(self, texts):
        """Strings -> list of id lists with `<bos>`/`<eos>`, truncated.

        Warns once per preprocessor when a text is longer than
        `sequence_length` tokens and gets cut. Lone surrogates are replaced
        (see `clean_text`); an empty string gives `[<bos>, <eos>]`.
        """
        if not self.built:
            self.build(None)
        budget = self.sequence_length - 2
        start, end = self.tokenizer.start_token_id, self.tokenizer.end_token_id
        pieces = self.tokenizer.tokenize([clean_text(text) for text in texts])
        out = []
        truncated = 0
        for ids in pieces:
            ids = [int(i) for i in ids]
            if len(ids) > budget:
                truncated += 1
                ids = ids[:budget]
            out.append([start, *ids, end])
        if truncated and not self._warned_truncation:
            self._warned_truncation = True
            warnings.warn(
                f"{truncated} text(s) were longer than sequence_length="
                f"{self.sequence_length} tokens and were truncated (the "
                "embedding covers only the start). This is reported once.",
                stacklevel=3,
            )
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            {"sequence_length": self.sequence_length, "prompts": dict(self.prompts)}
        )
        return config
