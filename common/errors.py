"""The base of every domain error. Each app raises its own subclasses; the API's exception
handler (common.api.exceptions) turns any of them into the contract's error body."""


class DomainError(Exception):
    """An error a caller can act on. `code` is stable and machine-readable."""

    code = "error"
    http_status = 400
    field: str | None = None

    def __init__(self, message: str = "", *, field: str | None = None, code: str | None = None):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        if field is not None:
            self.field = field
        if code is not None:
            self.code = code


class NotFound(DomainError):
    """Not found."""

    code = "not_found"
    http_status = 404


class Conflict(DomainError):
    """The request conflicts with the current state."""

    code = "conflict"
    http_status = 409


class IllegalTransition(Conflict):
    """The object is not in a state that allows this."""

    code = "illegal_transition"

    def __init__(self, *, obj_name: str, current: str, target: str):
        super().__init__(
            f"{obj_name} is {current}; it cannot become {target}.",
        )
        self.current = current
        self.target = target


class InvalidInput(DomainError):
    """The input is not valid."""

    code = "validation_error"
    http_status = 400


class Unprocessable(DomainError):
    """Well-formed, but cannot be carried out."""

    code = "unprocessable"
    http_status = 422
