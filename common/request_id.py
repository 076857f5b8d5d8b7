"""One id per HTTP request, on the response (`X-Request-ID`), on every log record written while
the request is handled (`request_id`), on the error pages and in API error bodies, so that what
a person reads on an error page can be found in the logs.

A sane incoming `X-Request-ID` (from the proxy in front, or a client correlating its calls) is
kept; anything else (missing, too long, characters that could forge a log line) is replaced by
a new random one."""

import contextvars
import logging
import re
import uuid

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{7,127}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current() -> str | None:
    """The id of the request being handled in this context, if any."""
    return _current.get()


def of(request) -> str | None:
    return getattr(request, "request_id", None) or current()


def _from_header(value: str | None) -> str:
    if value and _SANE.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """First in MIDDLEWARE, so that every later middleware, the view and the error handlers
    log with the id, and every response (redirects and errors too) carries it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = _from_header(request.headers.get(HEADER))
        request.request_id = request_id
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HEADER] = request_id
        return response


def install_log_record_factory() -> None:
    """Every log record made while a request is handled gets its id as `request_id`, whatever
    handler receives it (the JSON console, pytest's caplog). Django logs some responses
    (`django.request`: 4xx and 5xx) after the middleware returned; those records carry the
    request, whose id is used then."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_adds_request_id", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        request_id = _current.get()
        if request_id is not None:
            record.request_id = request_id
        return record

    factory._adds_request_id = True
    logging.setLogRecordFactory(factory)


class RequestIdFilter(logging.Filter):
    """For records logged with `extra={"request": request}` outside the middleware (Django's
    log_response after the chain returned): take the id from the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = getattr(getattr(record, "request", None), "request_id", None)
            if request_id:
                record.request_id = request_id
        return True


def api_exception_handler(exc, context):
    """REST_FRAMEWORK's EXCEPTION_HANDLER: the API's one handler (common.api.exceptions), with
    the request's id added to the error body as `error.request_id`."""
    from common.api.exceptions import exception_handler

    response = exception_handler(exc, context)
    error = getattr(response, "data", None)
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error["error"]["request_id"] = of(context.get("request"))
    return response
