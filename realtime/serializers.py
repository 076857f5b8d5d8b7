from rest_framework import serializers

from realtime.models import Notification, WebhookAttempt, WebhookDelivery, WebhookEndpoint


class EventSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="position")
    type = serializers.CharField()
    channels = serializers.ListField(child=serializers.CharField())
    data = serializers.JSONField()
    timestamp = serializers.DateTimeField(source="created_at")


class EventListQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, required=False, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=500, required=False, default=100)


# --- Notifications -------------------------------------------------------------------------


class NotificationSerializer(serializers.ModelSerializer):
    event_id = serializers.IntegerField(allow_null=True, read_only=True)
    is_read = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = [
            "id",
            "kind",
            "title",
            "body",
            "url",
            "event_id",
            "created_at",
            "read_at",
            "is_read",
        ]
        read_only_fields = fields

    def get_is_read(self, notification) -> bool:
        return notification.read_at is not None


class NotificationPreferenceSerializer(serializers.Serializer):
    email_enabled = serializers.BooleanField(required=False)
    email_muted_kinds = serializers.ListField(
        child=serializers.ChoiceField(choices=Notification.Kind.choices),
        required=False,
        max_length=20,
    )


# --- Webhooks ------------------------------------------------------------------------------


def _event_pattern() -> serializers.RegexField:
    return serializers.RegexField(r"^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$", max_length=64)


class WebhookEndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "events",
            "description",
            "is_active",
            "disabled_at",
            "disabled_reason",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret", "previous_secret_expires_at"]
        read_only_fields = fields


class WebhookEndpointCreateSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=500)
    events = serializers.ListField(child=_event_pattern(), min_length=1, max_length=100)
    description = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True
    )


class WebhookEndpointUpdateSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=500, required=False)
    events = serializers.ListField(
        child=_event_pattern(), min_length=1, max_length=100, required=False
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "duration_ms", "status_code", "error", "is_success"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event_type = serializers.CharField(source="event.type", read_only=True)
    attempt_log = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "next_attempt_at",
            "last_attempt_at",
            "last_status_code",
            "last_error",
            "succeeded_at",
            "created_at",
            "attempt_log",
        ]
        read_only_fields = fields
