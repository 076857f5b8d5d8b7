from common.errors import Conflict, DomainError, InvalidInput, NotFound


class NotificationNotFound(NotFound):
    """Notification not found."""


class WebhookEndpointNotFound(NotFound):
    """Webhook endpoint not found."""


class WebhookDeliveryNotFound(NotFound):
    """Webhook delivery not found."""


class WebhookTargetRefused(InvalidInput):
    """The webhook URL must be an http(s) URL on a public address."""

    code = "webhook_target_refused"
    field = "url"


class WebhookEndpointDisabled(Conflict):
    """The webhook endpoint is disabled."""

    code = "webhook_endpoint_disabled"


class WebhookDeliveryFinished(Conflict):
    """The webhook delivery already succeeded."""

    code = "webhook_delivery_finished"


class ResyncRequired(DomainError):
    """Events after this id are no longer all retained; reload current state, then continue
    from the newest event id."""

    code = "resync_required"
    http_status = 410
