"""Routes under /api/v1/ (included by config.urls)."""

from django.urls import path

from realtime import api

urlpatterns = [
    path("events", api.EventListView.as_view(), name="events"),
    path("notifications", api.NotificationListView.as_view(), name="notifications"),
    path(
        "notifications/read-all",
        api.NotificationReadAllView.as_view(),
        name="notifications-read-all",
    ),
    path(
        "notifications/<int:notification_id>/read",
        api.NotificationReadView.as_view(),
        name="notification-read",
    ),
    path(
        "notification-preferences",
        api.NotificationPreferenceView.as_view(),
        name="notification-preferences",
    ),
    path("webhook-endpoints", api.WebhookEndpointListView.as_view(), name="webhook-endpoints"),
    path(
        "webhook-endpoints/<int:endpoint_id>",
        api.WebhookEndpointDetailView.as_view(),
        name="webhook-endpoint",
    ),
    path(
        "webhook-endpoints/<int:endpoint_id>/rotate-secret",
        api.WebhookEndpointRotateSecretView.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path(
        "webhook-endpoints/<int:endpoint_id>/deliveries",
        api.WebhookDeliveryListView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhook-endpoints/<int:endpoint_id>/deliveries/<int:delivery_id>/resend",
        api.WebhookDeliveryResendView.as_view(),
        name="webhook-delivery-resend",
    ),
]
