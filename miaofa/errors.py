"""One error base class; the API renders every subclass as {"error", "detail"} with its status."""


class MiaofaError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(self, detail: str, *, error: str | None = None, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if error is not None:
            self.error = error
        if status_code is not None:
            self.status_code = status_code


class Unauthorized(MiaofaError):
    status_code = 401
    error = "unauthorized"


class NotFound(MiaofaError):
    status_code = 404
    error = "not_found"


class Conflict(MiaofaError):
    status_code = 409
    error = "conflict"


class InvalidInput(MiaofaError):
    status_code = 422
    error = "invalid_input"


class Unavailable(MiaofaError):
    status_code = 503
    error = "unavailable"


class PayloadTooLarge(MiaofaError):
    status_code = 413
    error = "payload_too_large"


class UnsupportedMediaType(MiaofaError):
    status_code = 415
    error = "unsupported_media_type"
