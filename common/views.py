"""The site's own error pages (400, 403, 404, 500 and a refused CSRF check) in its layout, with
the request's id (common.request_id) for support and the logs; never a stack trace. Paths under
/api/ answer with the API's JSON error body instead, with the same `request_id`."""

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme

from common import request_id
from common.api.exceptions import error_body

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"

_API_ERRORS = {
    400: ("bad_request", "The request could not be understood."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    413: ("payload_too_large", "The request body is larger than this API accepts."),
    500: ("server_error", "Something went wrong on our side; it has been logged."),
}


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIX)


def _api_error(request, status: int, code: str | None = None, message: str | None = None):
    default_code, default_message = _API_ERRORS[status]
    body = error_body(code or default_code, message or default_message)
    body["error"]["request_id"] = request_id.of(request)
    return JsonResponse(body, status=status)


def _page(request, template: str, status: int, **context) -> HttpResponse:
    context["request_id"] = request_id.of(request)
    return HttpResponse(render_to_string(template, context, request=request), status=status)


def bad_request(request, exception=None):
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            # Django raises it reading a body over DATA_UPLOAD_MAX_MEMORY_SIZE, before any
            # view runs; the API says what it is (413), in its own error body.
            return _api_error(
                request,
                413,
                message=f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes.",
            )
        return _api_error(request, 400)
    return _page(request, "400.html", 400)


def permission_denied(request, exception=None):
    if _is_api(request):
        return _api_error(request, 403)
    return _page(request, "403.html", 403)


def page_not_found(request, exception=None):
    if _is_api(request):
        return _api_error(request, 404)
    return _page(request, "404.html", 404)


def server_error(request):
    """Rendered without the request's context processors: whatever failed (the database?)
    must not fail the error page too, so the page has the layout without the signed-in
    header."""
    if _is_api(request):
        return _api_error(request, 500)
    context = {"request_id": request_id.of(request)}
    return HttpResponse(render_to_string("500.html", context), status=500)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: a form from a page opened before a logout, or before signing in
    again elsewhere (which renews the CSRF secret), was sent. Nothing was carried out. The
    page says so and offers to sign in again and come back to the page the form was on (from
    the Referer, when it is this site's), never to the action it posted to."""
    logger.warning(
        "csrf check failed",
        extra={"path": request.path, "reason": reason, "status_code": 403},
    )
    if _is_api(request):
        return _api_error(
            request,
            403,
            code="csrf_failed",
            message="CSRF verification failed: send the X-CSRFToken header with the "
            "csrftoken cookie's value, or authenticate with an API key.",
        )
    back = _page_before(request)
    login_path = urlsplit(settings.LOGIN_URL).path
    return _page(
        request,
        "403_csrf.html",
        403,
        back=back,
        back_is_login=urlsplit(back).path == login_path,
    )


def _page_before(request) -> str:
    """The path (and query) of the page the form was on, when the Referer names this site;
    the dashboard otherwise."""
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        parts = urlsplit(referer)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return "/"
