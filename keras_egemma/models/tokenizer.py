import keras
from keras_hub.tokenizers import SentencePieceTokenizer


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingGemmaTokenizer(SentencePieceTokenizer):
    """The Gemma 3 SentencePiece tokenizer (through KerasHub / tensorflow-text).

    Checks that the vocabulary has Gemma's `<bos>`, `<eos>`, `<pad>` and
    `<unk>` tokens (ids 2, 1, 0 and 3 in the published vocabulary).

    Args:
        proto: path to a SentencePiece `.model` file, or its serialised bytes.

    Shapes:
        a string -> `(n,)` int ids; a list of strings -> a list of id lists
        (or a ragged tensor inside `tf.data`).

    Example:
    ```python
    tokenizer = EmbeddingGemmaTokenizer(proto="tokenizer.model")
    tokenizer(["The quick brown fox."])
    ```
    """

    def __init__(self, proto=None, **kwargs):
        self._add_special_token("<bos>", "start_token")
        self._add_special_token("<eos>", "end_token")
        self._add_special_token("<pad>", "pad_token")
        self._add_special_token("<unk>", "unk_token")
        super().__init__(proto=proto, **kwargs)
