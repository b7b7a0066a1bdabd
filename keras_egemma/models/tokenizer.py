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

    def _tokenize_tf(self, inputs):
        import tensorflow as tf

        if tf.executing_eagerly() or self.proto is None:
            return super()._tokenize_tf(inputs)
        # Inside a graph (a `tf.data` map, a `tf.function`): tensorflow-text's
        # SentencePiece resource is owned by the op's kernel, and a tokenizer
        # built eagerly lives in the eager kernel cache, which
        # `tf.random.set_seed` (and so `keras.utils.set_random_seed`) clears,
        # leaving a pipeline that fails with "Resource ... SentencepieceOp
        # does not exist". A tokenizer built in the graph itself belongs to
        # that graph's function instead.
        import tensorflow_text as tf_text

        eager = self._sentence_piece
        self._sentence_piece = tf_text.SentencepieceTokenizer(
            model=self.proto, out_type=self.compute_dtype, add_bos=self.add_bos,
            add_eos=self.add_eos,
        )
        try:
            return super()._tokenize_tf(inputs)
        finally:
            self._sentence_piece = eager
