import keras
from keras_hub.tokenizers import SentencePieceTokenizer

from keras_egemma import _keras_compat
from keras_egemma import _quiet


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
        for token, attribute in (
            ("<bos>", "start_token"),
            ("<eos>", "end_token"),
            ("<pad>", "pad_token"),
            ("<unk>", "unk_token"),
        ):
            _keras_compat.add_special_token(self, token, attribute)
        super().__init__(proto=proto, **kwargs)

    def set_proto(self, proto):
        # SentencePiece logs a line on stderr while it loads vocabularies
        # without a normalization map (the bundled ones).
        with _quiet.native_logs_dropped():
            super().set_proto(proto)

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

        in_graph = tf_text.SentencepieceTokenizer(
            model=self.proto, out_type=self.compute_dtype, add_bos=self.add_bos,
            add_eos=self.add_eos,
        )
        with _keras_compat.sentencepiece_op(self, in_graph):
            return super()._tokenize_tf(inputs)
