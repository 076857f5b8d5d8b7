from django.contrib import admin

from realtime.models import Event, Notification, WebhookAttempt, WebhookDelivery, WebhookEndpoint


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """The event store is append-only: operators read it here, nobody edits it."""

    list_display = [
        "position",
        "id",
        "type",
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "created_at",
        "published_at",
        "dispatched_at",
    ]
    list_filter = ["type", "aggregate_type"]
    search_fields = ["=position", "aggregate_id", "type"]
    ordering = ["-id"]
    readonly_fields = [field.name for field in Event._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = [
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "error",
        "response_excerpt",
        "is_success",
    ]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "owner",
        "url",
        "is_active",
        "consecutive_failures",
        "last_success_at",
        "disabled_reason",
    ]
    list_filter = ["is_active"]
    search_fields = ["url", "owner__username"]
    readonly_fields = [
        "secret",
        "previous_secret",
        "previous_secret_expires_at",
        "consecutive_failures",
        "last_success_at",
        "disabled_at",
    ]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "endpoint",
        "event",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
    ]
    list_filter = ["status"]
    inlines = [WebhookAttemptInline]
    readonly_fields = [
        "endpoint",
        "event",
        "attempts",
        "last_attempt_at",
        "last_status_code",
        "last_error",
        "succeeded_at",
        "enqueued_at",
    ]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "kind", "title", "created_at", "read_at", "email_status"]
    list_filter = ["kind", "email_status"]
    search_fields = ["user__username", "title"]
    readonly_fields = ["event", "key", "emailed_at", "email_error"]
