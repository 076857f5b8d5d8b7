"""Operators' views of the event store, outgoing webhooks and notifications. Every write goes
through a service (realtime.services): the endpoint form through webhook_endpoint_update (the
same URL target check as the API), deliveries through the resend and cancel actions;
notifications and the event store are read-only."""

from django.contrib import admin, messages

from common.admin import ReadOnlyAdmin, ReadOnlyInline, ServiceFormMixin
from common.errors import DomainError
from realtime.models import Event, Notification, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from realtime.services import webhooks as webhook_services


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
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


class WebhookAttemptInline(ReadOnlyInline):
    model = WebhookAttempt
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
class WebhookEndpointAdmin(ServiceFormMixin, admin.ModelAdmin):
    """URL, description and the active flag are saved by webhook_endpoint_update: the URL
    target check the API applies, the row locked, re-enabling clears the failure count.
    Endpoints are created by their owners (API); event patterns are the owner's (API)."""

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
    fields = [
        "owner",
        "url",
        "description",
        "is_active",
        "events",
        "disabled_reason",
        "disabled_at",
        "consecutive_failures",
        "last_success_at",
        "previous_secret_expires_at",
        "created_at",
    ]
    # The owner edits only these through webhook_endpoint_update; the rest is read-only.
    readonly_fields = [f for f in fields if f not in ("url", "description", "is_active")]

    def has_add_permission(self, request):
        return False

    def save_through_service(self, request, obj, changes, change):
        return webhook_services.webhook_endpoint_update(
            endpoint_id=obj.pk, owner=request.user, **changes
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Read-only; "resend now" and "cancel" are services (the same as the owner's resend)."""

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
    readonly_fields = [field.name for field in WebhookDelivery._meta.fields]
    actions = ["resend", "cancel"]

    @admin.action(description="Resend now (same webhook-id)")
    def resend(self, request, queryset):
        done = 0
        for delivery in queryset:
            try:
                webhook_services.webhook_delivery_resend(
                    endpoint_id=delivery.endpoint_id, delivery_id=delivery.pk, owner=request.user
                )
                done += 1
            except DomainError as exc:
                messages.error(request, f"Delivery {delivery.pk}: {exc.message}")
        if done:
            messages.success(request, f"Resending {done} delivery(ies).")

    @admin.action(description="Cancel (stop retrying)")
    def cancel(self, request, queryset):
        done = 0
        for delivery in queryset:
            try:
                webhook_services.webhook_delivery_cancel(
                    delivery_id=delivery.pk, actor=request.user
                )
                done += 1
            except DomainError as exc:
                messages.error(request, f"Delivery {delivery.pk}: {exc.message}")
        if done:
            messages.success(request, f"Cancelled {done} delivery(ies).")


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """Read-only: notifications and their e-mail status are written by the services that
    create and send them."""

    list_display = ["id", "user", "kind", "title", "created_at", "read_at", "email_status"]
    list_filter = ["kind", "email_status"]
    search_fields = ["user__username", "title"]
    readonly_fields = [field.name for field in Notification._meta.fields]
