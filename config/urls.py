from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.api import MeView
from common.api.exceptions import api_not_found
from common.health import healthz
from payments import views as payment_views
from payments.gateways.sandbox import views as sandbox_views

api_v1 = [
    path("me", MeView.as_view(), name="me"),
    path("", include("realtime.urls")),
    path("", include("escrow.api")),
    path("", include("payments.api")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file (`?script`) instead of
    # inline, so the page runs under the site's strict CSP (common.middleware).
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api/swagger_ui.html"),
        name="docs",
    ),
    re_path(r"^.*$", api_not_found),
]

urlpatterns = [
    path("", include("portal.urls")),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("healthz", healthz, name="healthz"),
    path("webhooks/stripe/", payment_views.stripe_webhook, name="webhook-stripe"),
    path("webhooks/sandbox/", payment_views.sandbox_webhook, name="webhook-sandbox"),
    # The sandbox gateway's own 3-D Secure page (its redirect_to_url next action).
    path("sandbox/3ds/<str:intent_id>/", sandbox_views.challenge, name="sandbox-3ds"),
]

# The site's own error pages (API paths: the JSON error body), with the request id.
handler400 = "common.views.bad_request"
handler403 = "common.views.permission_denied"
handler404 = "common.views.page_not_found"
handler500 = "common.views.server_error"

admin.site.site_header = "Escrow payments — operations"
admin.site.site_title = "Escrow payments"
