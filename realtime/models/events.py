from django.conf import settings
from django.db import models


class Event(models.Model):
    """An append-only row per state change, written in the changing transaction.

    `position` is the public event id (the `id` of every message, `last_event_id`,
    `?after=`, the webhook payload). It is assigned after commit by the sequencer
    (realtime.sequencer), one batch at a time, so positions become visible strictly in
    order: a reader that has seen position N will never later find a committed event below
    N it has not been able to read. The row's own `id` is only its insertion order (a
    sequence value taken at insert, which commits out of order) and stays internal.

    Every consumer (WebSocket clients, outgoing webhooks, notifications, timelines) reads the
    same positions. `channels` names the WebSocket channels that carry it; `audience` the
    users allowed to see it (operators see everything)."""

    id = models.BigAutoField(primary_key=True)
    position = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    type = models.CharField(max_length=64, db_index=True)
    aggregate_type = models.CharField(max_length=32)
    aggregate_id = models.CharField(max_length=64)
    data = models.JSONField()
    channels = models.JSONField(default=list)
    audience = models.JSONField(default=list)
    # Position of this event within its aggregate (1, 2, ...), assigned by the sequencer with
    # `position`, so webhook receivers can order a resource's events and see gaps.
    sequence = models.PositiveBigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True)
    # When notifications and webhook deliveries were derived from it (the sweep retries).
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id", "sequence"], name="event_sequence_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["aggregate_type", "aggregate_id", "id"], name="event_aggregate"),
            # The sequencer's work list: committed rows waiting for a position.
            models.Index(
                fields=["id"],
                name="event_unsequenced",
                condition=models.Q(position__isnull=True),
            ),
            models.Index(
                fields=["position"],
                name="event_unpublished",
                condition=models.Q(published_at__isnull=True),
            ),
            models.Index(
                fields=["position"],
                name="event_undispatched",
                condition=models.Q(dispatched_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.position or '-'} {self.type}"

    def as_message(self) -> dict:
        return {
            "type": self.type,
            "id": self.position,
            "channels": list(self.channels),
            "data": self.data,
            "timestamp": self.timestamp,
        }

    @property
    def timestamp(self) -> str:
        return self.created_at.isoformat().replace("+00:00", "Z")


class EventRecipient(models.Model):
    """Who may see an event: lets `GET /api/v1/events?after=` read one index range per user.
    Written by the sequencer, keyed by the event's position."""

    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="recipients", to_field="position"
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "event"], name="event_recipient_unique"),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} → user {self.user_id}"


class EventChannel(models.Model):
    """Which channels carry an event: replay after `last_event_id` is one index range each.
    Written by the sequencer, keyed by the event's position."""

    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="channel_rows", to_field="position"
    )
    channel = models.CharField(max_length=100)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "event"], name="event_channel_unique"),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} on {self.channel}"


class ReplayHorizon(models.Model):
    """One row: events with a position up to `pruned_through_id` may have lost their replay index
    (EventChannel/EventRecipient rows); a resume from before it must resync instead.

    The Event rows themselves are kept: they are the audit trail and the timelines."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    pruned_through_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"replay horizon after #{self.pruned_through_id}"
