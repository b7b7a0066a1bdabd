"""`POST /v1/embeddings`: reading the request, writing the response.

The request and response follow OpenAI's embeddings API, plus `input_type`
(this model's task prompts) and a `truncated` flag on each embedding:

    request:  {"input": "text" | ["text", ...], "model": "...", "dimensions": 256,
               "encoding_format": "float" | "base64", "input_type": "query", "user": "..."}
    response: {"object": "list", "model": "...",
               "data": [{"object": "embedding", "index": 0, "embedding": [...],
                         "truncated": false}, ...],
               "usage": {"prompt_tokens": 12, "total_tokens": 12}}
"""

import base64
import dataclasses
import json

import numpy as np

from keras_egemma.serving.errors import APIError

FIELDS = ("input", "model", "dimensions", "encoding_format", "input_type", "user")
ENCODING_FORMATS = ("float", "base64")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may hold; over a limit answers 413.

    Args:
        max_inputs: texts per request (OpenAI's limit: 2048).
        max_input_chars: characters per text. Longer token sequences than
            the model's `sequence_length` are truncated and reported, not
            refused; this bounds the tokenizer's work.
        max_request_bytes: size of the request body.
    """

    max_inputs: int = 2048
    max_input_chars: int = 100_000
    max_request_bytes: int = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class EmbeddingRequest:
    """A validated request: texts, Matryoshka size, format, prompt name."""

    texts: list
    dimensions: int = None
    encoding_format: str = "float"
    input_type: str = None


def _invalid(message, param=None, code="invalid_value"):
    return APIError(400, message, param=param, code=code)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _texts(value, limits):
    if value is None:
        raise _invalid(
            "`input` is required: a string or a list of strings.", "input", "missing_input"
        )
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise _invalid(
            f"`input` must be a string or a list of strings, got {type(value).__name__}.",
            "input",
            "invalid_type",
        )
    if not texts:
        raise _invalid("`input` is an empty list: send at least one text.", "input", "empty_input")
    if len(texts) > limits.max_inputs:
        raise APIError(
            413,
            f"`input` holds {len(texts)} texts; at most {limits.max_inputs} "
            "per request. Split it into several requests.",
            "input",
            "too_many_inputs",
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            hint = (
                " Token-id input is not supported: send the text."
                if _is_int(text) or isinstance(text, list)
                else ""
            )
            raise _invalid(
                f"`input[{i}]` is a {type(text).__name__}, not a string.{hint}",
                "input",
                "invalid_type",
            )
        if not text:
            raise _invalid(
                f"`input[{i}]` is an empty string: send text to embed.", "input", "empty_input"
            )
        if len(text) > limits.max_input_chars:
            raise APIError(
                413,
                f"`input[{i}]` has {len(text):,} characters; at most "
                f"{limits.max_input_chars:,} per text. Split or shorten it.",
                "input",
                "input_too_long",
            )
    return texts


def parse_embedding_request(body, *, model_name, dimensions, limits):
    """Validates a request body; returns an `EmbeddingRequest`.

    Args:
        body: the raw request body (bytes).
        model_name: the served model's name; `model`, when given, must equal it.
        dimensions: the Matryoshka sizes served (`dimensions` must be one).
        limits: a `Limits`.

    Raises:
        APIError: 400 (malformed JSON, wrong types, empty input, unknown size),
            404 (another model) or 413 (over a limit), saying what to send.

    Example:
    ```python
    request = parse_embedding_request(b'{"input": "hi"}', model_name="m",
                                      dimensions=(384,), limits=Limits())
    ```
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise _invalid(
            f'The body is not valid JSON ({e}). Send a JSON object such as {{"input": "text"}}.',
            code="invalid_json",
        ) from None
    if not isinstance(payload, dict):
        raise _invalid(
            f"The body must be a JSON object, got {type(payload).__name__}.", code="invalid_json"
        )
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise _invalid(
            f"Unknown field(s) {', '.join(unknown)}; the fields are {', '.join(FIELDS)}.",
            unknown[0],
            "unknown_field",
        )
    texts = _texts(payload.get("input"), limits)
    model = payload.get("model")
    if model is not None and model != model_name:
        if not isinstance(model, str):
            raise _invalid("`model` must be a string.", "model", "invalid_type")
        raise APIError(
            404,
            f"This server serves the model {model_name!r}, not {model!r}. "
            "Send that name or leave `model` out.",
            "model",
            "model_not_found",
        )
    dim = payload.get("dimensions")
    if dim is not None and (not _is_int(dim) or dim not in dimensions):
        raise _invalid(
            f"`dimensions` must be one of this model's Matryoshka sizes "
            f"{', '.join(map(str, dimensions))}; got {dim!r}.",
            "dimensions",
        )
    encoding_format = payload.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise _invalid(
            f"`encoding_format` must be 'float' or 'base64', got {encoding_format!r}.",
            "encoding_format",
        )
    input_type = payload.get("input_type")
    if input_type is not None and not isinstance(input_type, str):
        raise _invalid(
            "`input_type` must be a prompt name such as 'query' or 'document'.",
            "input_type",
            "invalid_type",
        )
    user = payload.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid("`user` must be a string.", "user", "invalid_type")
    return EmbeddingRequest(texts, dim, encoding_format, input_type)


def _encode_vector(vector, encoding_format):
    if encoding_format == "base64":
        # OpenAI's base64 form: the float32 values' little-endian bytes.
        return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")
    return vector.tolist()


def embedding_response(results, *, model_name, encoding_format):
    """The response body (bytes) for a request's results.

    Args:
        results: one `EmbeddingResult` per input text, in input order.
        model_name: the served model's name.
        encoding_format: `"float"` or `"base64"`.

    Example:
    ```python
    body = embedding_response(results, model_name="m", encoding_format="float")
    ```
    """
    tokens = sum(result.tokens for result in results)
    payload = {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encode_vector(result.embedding, encoding_format),
                "truncated": result.truncated,
            }
            for i, result in enumerate(results)
        ],
        "model": model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")
