import keras
import numpy as np
from keras import ops


def inverse_frequencies(head_dim, max_wavelength):
    """RoPE's `1 / base ** (arange(0, head_dim, 2) / head_dim)` in float32.

    Rounded as transformers rounds it (Gemma 3 and EmbeddingGemma 2 alike):
    the exponents and the reciprocal in float32, the power of the
    float32 base rounded once to float32. At position 8,191 one unit in the
    last place of a frequency moves the angle by a unit of its own, ~5e-4,
    so the order of operations matters; KerasHub's `base ** -exponent`
    rounds differently. A numpy constant, so every backend uses the same bits.

    Args:
        head_dim: int. Size of the rotated head; even.
        max_wavelength: float. The RoPE base.

    Returns:
        A float32 numpy array of shape `(head_dim // 2,)`.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head size, got {head_dim}.")
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    base = np.float64(np.float32(max_wavelength))
    powers = (base ** exponents.astype(np.float64)).astype(np.float32)
    return np.float32(1.0) / powers


@keras.saving.register_keras_serializable(package="keras_egemma")
class RotaryEmbedding(keras.layers.Layer):
    """Rotate-half rotary position embedding, float32 angles as transformers.

    Position `p` (0, 1, ...) and frequency `f` give the float32 angle
    `float32(p) * f` (one rounding, as `position_ids.float() * inv_freq`);
    cosine and sine are taken in float32 and cast to the compute dtype; the
    output is `x * cos + rotate_half(x) * sin`, `rotate_half(x)` being
    `concat(-x[half:], x[:half])`.

    Args:
        max_wavelength: float. The RoPE base (1e4 sliding, 1e6 global).

    Shapes:
        input `(batch, length, heads, head_dim)` -> same shape.

    Example:
    ```python
    rope = keras_egemma.layers.RotaryEmbedding(max_wavelength=10_000.0)
    y = rope(np.random.rand(2, 5, 4, 8).astype("float32"))   # (2, 5, 4, 8)
    ```
    """

    def __init__(self, max_wavelength=10_000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.built = True

    def cos_sin(self, length, head_dim):
        """float32 `(cos, sin)` of the angles, each `(length, head_dim)`."""
        frequencies = ops.convert_to_tensor(
            inverse_frequencies(head_dim, self.max_wavelength)
        )
        positions = ops.arange(length, dtype="float32")
        angles = ops.multiply(positions[:, None], frequencies[None, :])
        angles = ops.concatenate([angles, angles], axis=-1)
        return ops.cos(angles), ops.sin(angles)

    def call(self, inputs):
        head_dim = inputs.shape[-1]
        cos, sin = self.cos_sin(ops.shape(inputs)[1], head_dim)
        cos = ops.cast(cos, self.compute_dtype)[None, :, None, :]
        sin = ops.cast(sin, self.compute_dtype)[None, :, None, :]
        half = head_dim // 2
        rotated = ops.concatenate([-inputs[..., half:], inputs[..., :half]], axis=-1)
        return inputs * cos + rotated * sin

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["max_wavelength"] = self.max_wavelength
        return config
