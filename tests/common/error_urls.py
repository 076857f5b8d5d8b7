"""The project's URLs plus views that fail on purpose, for the error page tests."""

from django.core.exceptions import BadRequest, PermissionDenied
from django.urls import path

from config.urls import (  # noqa: F401  (the handlers are looked up on ROOT_URLCONF)
    handler400,
    handler403,
    handler404,
    handler500,
)
from config.urls import urlpatterns as project_urlpatterns


def bad(request):
    raise BadRequest("malformed on purpose")


def forbidden(request):
    raise PermissionDenied


def boom(request):
    raise RuntimeError("failing on purpose")


urlpatterns = [
    path("test-errors/400/", bad),
    path("test-errors/403/", forbidden),
    path("test-errors/500/", boom),
    path("api/v1/test-errors/500", boom),
    *project_urlpatterns,
]
