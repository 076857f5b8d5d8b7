"""The event store, notifications and outgoing webhooks (one module per sub-domain)."""

from realtime.models.events import Event, EventChannel, EventRecipient, ReplayHorizon
from realtime.models.notifications import Notification, NotificationPreference
from realtime.models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "Event",
    "EventChannel",
    "EventRecipient",
    "Notification",
    "NotificationPreference",
    "ReplayHorizon",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
