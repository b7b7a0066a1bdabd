"""Errors the server answers with, in OpenAI's JSON error shape.

Every refusal is `{"error": {"message", "type", "param", "code"}}` with a
4xx/5xx status, so OpenAI clients raise their usual exceptions and other
clients can read why.
"""


class APIError(Exception):
    """A request the server refuses; becomes a JSON error response.

    Args:
        status: HTTP status code (400, 401, 404, 413, 503, ...).
        message: what was wrong and what to do instead.
        param: the request field at fault, or `None`.
        code: a short machine-readable reason, e.g. `"invalid_json"`.
        headers: extra response headers, e.g. `{"Retry-After": "1"}`.

    Example:
    ```python
    raise APIError(400, "`input` must not be empty.", param="input", code="empty_input")
    ```
    """

    TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        405: "invalid_request_error",
        413: "invalid_request_error",
        503: "overloaded_error",
    }

    def __init__(self, status, message, param=None, code=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self):
        """The JSON-serialisable `{"error": {...}}` payload."""
        return {
            "error": {
                "message": self.message,
                "type": self.TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code,
            }
        }


class Overloaded(APIError):
    """The batcher's queue is full: 503 with `Retry-After`."""

    def __init__(self, queued, limit, retry_after):
        super().__init__(
            503,
            f"The server is busy: {queued} texts are waiting (the queue holds {limit}). "
            f"Retry after {retry_after} s.",
            code="queue_full",
            headers={"Retry-After": str(retry_after)},
        )
