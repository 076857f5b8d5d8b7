"""Reads of the realtime app, always filtered by who is asking: the event store (lists,
replay, the retained window), channel authorization, notifications, webhook endpoints."""

import re

from django.apps import apps

from realtime.events import OPERATOR_CHANNELS
from realtime.exceptions import ResyncRequired, WebhookEndpointNotFound
from realtime.models import (
    Event,
    Notification,
    NotificationPreference,
    ReplayHorizon,
    WebhookDelivery,
    WebhookEndpoint,
)

# --- The event store ---------------------------------------------------------------------


def replay_horizon() -> int:
    """Events with a position up to this may be missing from replays (their index was pruned)."""
    horizon = ReplayHorizon.objects.filter(pk=1).values_list("pruned_through_id", flat=True)
    return horizon.first() or 0


def resume_is_possible(*, after: int) -> bool:
    """Whether everything after `after` is still retained for replay."""
    return after >= replay_horizon()


def event_list_for_user(
    *, user, after: int = 0, limit: int = 100, check_horizon: bool = False
) -> list[Event]:
    """Events the user may see with a position (public id) > after, oldest first
    (operators see all). Unsequenced events have no position yet and are not listed.

    With `check_horizon`, raises ResyncRequired when `after` is below the retained window."""
    if check_horizon and not resume_is_possible(after=after):
        raise ResyncRequired(
            f"Events after {after} are no longer all retained; reload the current state and "
            f"continue after the newest event id."
        )
    events = Event.objects.filter(position__gt=after)
    if not user.is_staff:
        events = events.filter(recipients__user=user)
    return list(events.order_by("position")[:limit])


def event_list_for_aggregate(*, aggregate_type: str, aggregate_id, after: int = 0) -> list[Event]:
    """Sequenced events of one aggregate, oldest first. The caller has checked visibility."""
    return list(
        Event.objects.filter(
            aggregate_type=aggregate_type, aggregate_id=str(aggregate_id), position__gt=after
        ).order_by("position")
    )


def payment_timeline_for_user(*, user, payment_id) -> list[Event]:
    """The payment's events, oldest first (the event store is the audit trail). Visibility is
    payments' own rule: PaymentNotFound (404) also for a payment the user may not see. Lives
    here, not in payments.selectors, so payments' reads do not import realtime's (realtime
    imports the domain selectors lazily, one way)."""
    from payments.selectors import payment_get_for_user

    payment = payment_get_for_user(user=user, payment_id=payment_id)
    return event_list_for_aggregate(aggregate_type="payment", aggregate_id=payment.pk)


def event_list_for_channels(*, channels: list[str], after: int, limit: int = 500) -> list[Event]:
    """Replay: events carried on any of `channels` with position > after, each once, in
    position order.

    The caller has authorized the channels. Positions become visible in order and are
    published in order (realtime.sequencer), so this read plus the live events that follow
    it leave no gap."""
    if not channels:
        return []
    return list(
        Event.objects.filter(position__gt=after, channel_rows__channel__in=list(channels))
        .distinct()
        .order_by("position")[:limit]
    )


# --- Channel authorization ---------------------------------------------------------------

USER_CHANNEL_KINDS = ("payments", "milestones", "payment_methods")
_CHANNEL = re.compile(
    r"^(?:user\.(?P<user_id>\d{1,18})\.(?P<kind>[a-z_]+)"
    r"|(?P<scope>project|milestone|payment|dispute)\.(?P<object_id>\d{1,18}))$"
)
PRESENCE_SCOPES = ("project", "dispute")


def channel_parse(channel: str) -> tuple[str, int, str] | None:
    """`("user", id, kind)` or `(scope, id, "")` for a well-formed channel name, else None."""
    match = _CHANNEL.match(channel) if isinstance(channel, str) else None
    if match is None:
        return None
    if match["user_id"]:
        if match["kind"] not in USER_CHANNEL_KINDS:
            return None
        return ("user", int(match["user_id"]), match["kind"])
    return (match["scope"], int(match["object_id"]), "")


def channel_has_presence(channel: str) -> bool:
    parsed = channel_parse(channel)
    return parsed is not None and parsed[0] in PRESENCE_SCOPES


def channel_is_visible_to(*, user, channel: str) -> bool:
    """Whether `user` may subscribe to `channel` (which may be anything a client sent).

    user.<id>.*: only that user. project/milestone: the escrow selectors (parties and
    operators). payment: payments.selectors.payment_is_visible_to. dispute: the disputes
    selector once that app has one, operators only until then. The operators' channels
    (realtime.events.OPERATOR_CHANNELS, e.g. ops.circuit_breakers): operators only. Unknown
    names: no."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if channel in OPERATOR_CHANNELS:
        return bool(user.is_staff)
    parsed = channel_parse(channel)
    if parsed is None:
        return False
    scope, object_id, _ = parsed
    if scope == "user":
        return object_id == user.pk
    check = _visibility_check(scope)
    if check is None:
        return bool(user.is_staff)
    return bool(check(user, object_id))


def _visibility_check(scope: str):
    """The domain selector for a scope, imported lazily (realtime must not need the domain
    apps to load). None when the app does not provide one (yet)."""
    app_label = {"project": "escrow", "milestone": "escrow"}.get(scope, f"{scope}s")
    if not apps.is_installed(app_label):
        return None
    try:
        if scope == "project":
            from escrow.selectors import project_is_visible_to

            return lambda user, object_id: project_is_visible_to(user=user, project_id=object_id)
        if scope == "milestone":
            from escrow.selectors import milestone_is_visible_to

            return lambda user, object_id: milestone_is_visible_to(
                user=user, milestone_id=object_id
            )
        if scope == "payment":
            from payments.selectors import payment_is_visible_to

            return lambda user, object_id: payment_is_visible_to(user=user, payment_id=object_id)
        if scope == "dispute":
            from disputes.selectors import dispute_is_visible_to

            return lambda user, object_id: dispute_is_visible_to(user=user, dispute_id=object_id)
    except ImportError:
        return None
    return None


def channels_authorize(*, user, channels: list) -> tuple[list[str], list[str]]:
    """Split what a client asked for into (allowed, refused), each in the order asked, once."""
    allowed, refused = [], []
    for channel in dict.fromkeys(str(name)[:200] for name in channels):
        (allowed if channel_is_visible_to(user=user, channel=channel) else refused).append(channel)
    return allowed, refused


def api_key_is_active(*, api_key_id: int) -> bool:
    from accounts.models import ApiKey

    return ApiKey.objects.filter(
        pk=api_key_id, revoked_at__isnull=True, user__is_active=True
    ).exists()


# --- Notifications -----------------------------------------------------------------------


def notification_list_for_user(*, user, unread_only: bool = False):
    notifications = Notification.objects.filter(user=user)
    if unread_only:
        notifications = notifications.filter(read_at__isnull=True)
    return notifications.order_by("-id")


def notification_unread_count(*, user) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).count()


def notification_preference_for_user(*, user) -> NotificationPreference:
    """The stored preference, or an unsaved one with the defaults."""
    return NotificationPreference.objects.filter(user=user).first() or NotificationPreference(
        user=user
    )


# --- Webhook endpoints -------------------------------------------------------------------


def webhook_endpoint_list_for_user(*, user):
    endpoints = WebhookEndpoint.objects.all()
    if not user.is_staff:
        endpoints = endpoints.filter(owner=user)
    return endpoints.order_by("-id")


def webhook_endpoint_get_for_user(*, user, endpoint_id: int) -> WebhookEndpoint:
    endpoint = webhook_endpoint_list_for_user(user=user).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise WebhookEndpointNotFound()
    return endpoint


def webhook_delivery_list_for_endpoint(*, endpoint: WebhookEndpoint):
    """The caller has fetched `endpoint` through webhook_endpoint_get_for_user."""
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("event")
        .prefetch_related("attempt_log")
        .order_by("-id")
    )
