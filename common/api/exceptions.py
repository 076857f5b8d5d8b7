"""One exception handler for the whole API: every error leaves as
`{"error": {"code": ..., "message": ..., "field": ...}}` with the contract's status codes."""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import DomainError

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, field: str | None = None, **extra) -> dict:
    error = {"code": code, "message": message, "field": field}
    error.update(extra)
    return {"error": error}


def _first_validation_error(detail, prefix: str = "") -> tuple[str | None, str, str]:
    """Walk DRF's nested ValidationError detail to its first message and the field's path."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # a ListSerializer's errors, keyed by item index
                path = f"{prefix}[{key}]"
            else:
                name = "" if key == "non_field_errors" else str(key)
                path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            return _first_validation_error(value, path)
    if isinstance(detail, list) and detail:
        for index, item in enumerate(detail):
            if item in ({}, [], None):
                continue
            nested = isinstance(item, dict | list)
            path = f"{prefix}[{index}]" if nested else prefix
            return _first_validation_error(item, path)
    code = getattr(detail, "code", "invalid") or "invalid"
    return (prefix or None), str(detail), str(code)


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response(
            error_body(exc.code, exc.message, exc.field),
            status=exc.http_status,
        )
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django's 500 path logs it

    if isinstance(exc, drf.ValidationError):
        field, message, code = _first_validation_error(exc.detail)
        body = error_body("validation_error", message, field, details=exc.detail)
        body["error"]["reason"] = code
    elif isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        body = error_body(exc.default_code, str(exc.detail))
        response.status_code = 401
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    elif isinstance(exc, drf.Throttled):
        body = error_body("rate_limited", str(exc.detail))
    else:
        code = getattr(exc, "default_code", "error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        body = error_body(code, str(detail))
    response.data = body
    return response


def json_error(status: int, code: str, message: str, field: str | None = None) -> JsonResponse:
    """The same error body for responses made outside DRF (middleware, plain views)."""
    return JsonResponse(error_body(code, message, field), status=status)


@csrf_exempt
def api_not_found(request, exception=None):
    """Any method on a path under /api/v1/ that names no endpoint. CSRF-exempt: it changes
    nothing, and the CSRF check would otherwise answer a POST with Django's HTML 403."""
    return json_error(404, "not_found", "No such endpoint.")
