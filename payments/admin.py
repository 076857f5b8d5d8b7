"""Operators' views of payments. Actions call services only."""

from django.contrib import admin, messages

from common.admin import ReadOnlyAdmin, ReadOnlyInline, ServiceFormMixin
from common.errors import DomainError
from payments import breaker, services
from payments.models import (
    CircuitBreaker,
    Discrepancy,
    GatewayAttempt,
    Payment,
    PaymentMethod,
    Payout,
    PayoutAccount,
    ReconciliationRun,
    Refund,
    WebhookEvent,
)
from realtime.selectors import event_list_for_aggregate


class GatewayAttemptInline(ReadOnlyInline):
    model = GatewayAttempt
    fk_name = "payment"
    fields = [
        "created_at",
        "operation",
        "idempotency_key",
        "outcome",
        "gateway_object_id",
        "error_code",
        "http_status",
        "latency_ms",
    ]


class RefundInline(ReadOnlyInline):
    model = Refund
    fields = ["id", "amount", "status", "reason", "gateway_refund_id", "created_at"]


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "milestone",
        "payer",
        "payee",
        "amount",
        "currency",
        "status",
        "provider",
        "created_at",
    ]
    list_filter = ["status", "provider", "is_high_priority"]
    search_fields = ["=id", "gateway_payment_id", "gateway_charge_id", "payer__username"]
    # The 3-D Secure client secret can confirm the payment: the payer's alone (selectors).
    exclude = ["gateway_client_secret", "next_action"]
    readonly_fields = [
        "milestone",
        "project",
        "payer",
        "payee",
        "payment_method",
        "provider",
        "amount",
        "amount_refunded",
        "currency",
        "status",
        "capture_method",
        "failure_code",
        "failure_message",
        "gateway_payment_id",
        "gateway_charge_id",
        "attempt_count",
        "next_attempt_at",
        "created_at",
        "completed_at",
        "timeline",
    ]
    inlines = [GatewayAttemptInline, RefundInline]
    actions = ["process_now", "cancel"]

    @admin.display(description="Timeline")
    def timeline(self, payment):
        events = event_list_for_aggregate(aggregate_type="payment", aggregate_id=payment.pk)
        return (
            "\n".join(
                f"{event.created_at:%Y-%m-%d %H:%M:%S} #{event.position} {event.type} "
                f"{event.data.get('status', '')}"
                for event in events
            )
            or "—"
        )

    @admin.action(description="Process now (next gateway step)")
    def process_now(self, request, queryset):
        for payment in queryset:
            services.payment_process(payment_id=payment.pk)
        messages.success(request, f"Processed {queryset.count()} payment(s).")

    @admin.action(description="Cancel (before authorization)")
    def cancel(self, request, queryset):
        for payment in queryset:
            try:
                services.payment_cancel(payment_id=payment.pk, actor=request.user)
            except Exception as exc:  # an illegal transition names the current state
                messages.error(request, f"Payment {payment.pk}: {exc}")


@admin.register(PaymentMethod)
class PaymentMethodAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "brand", "last4", "exp_month", "exp_year", "status", "is_default"]
    list_filter = ["status", "provider", "brand"]
    search_fields = ["user__username", "last4"]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["id", "payment", "amount", "currency", "status", "reason", "created_at"]
    list_filter = ["status", "reason"]
    actions = ["retry"]

    @admin.action(description="Retry the gateway refund now")
    def retry(self, request, queryset):
        for refund in queryset:
            services.refund_process(refund_id=refund.pk)


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "milestone",
        "payee",
        "amount",
        "currency",
        "status",
        "amount_reversed",
        "gateway_transfer_id",
        "paid_at",
        "retry_of",
    ]
    list_filter = ["status", "provider"]
    readonly_fields = ["retries"]
    actions = ["retry"]

    @admin.display(description="Paid again by")
    def retries(self, payout):
        return ", ".join(str(retry) for retry in payout.retries.order_by("pk")) or "—"

    @admin.action(description="Retry: send a waiting transfer, or pay a failed/reversed one again")
    def retry(self, request, queryset):
        for payout in queryset.order_by("pk"):
            try:
                retried = services.payout_retry(payout_id=payout.pk, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"Payout {payout.pk}: {exc.message}")
                continue
            if retried.pk == payout.pk:
                messages.info(request, f"Payout {payout.pk}: its transfer is being sent again.")
            else:
                retried.refresh_from_db()
                messages.success(
                    request,
                    f"Payout {payout.pk}: paid again by payout {retried.pk} "
                    f"({retried.amount} {retried.currency}, now {retried.status}).",
                )


@admin.register(PayoutAccount)
class PayoutAccountAdmin(ServiceFormMixin, admin.ModelAdmin):
    """Adding or changing an account goes through payout_account_set (durable, outside the
    admin's transaction), which also sends the payouts that waited for it."""

    list_display = ["user", "provider", "account_id", "created_at"]
    search_fields = ["user__username", "account_id"]
    fields = ["user", "provider", "account_id"]

    def get_readonly_fields(self, request, obj=None):
        # One account per (user, provider): an edit changes the account id only.
        return ["user", "provider", "created_at"] if obj is not None else []

    def save_through_service(self, request, obj, changes, change):
        return services.payout_account_set(
            user=obj.user, provider=obj.provider, account_id=obj.account_id
        )


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "provider",
        "event_id",
        "type",
        "status",
        "attempts",
        "received_at",
        "processed_at",
    ]
    list_filter = ["status", "provider", "type"]
    search_fields = ["event_id"]
    readonly_fields = [
        "provider",
        "event_id",
        "type",
        "status",
        "attempts",
        "last_error",
        "received_at",
        "processed_at",
        "next_attempt_at",
        "payload",
    ]
    actions = ["replay"]

    @admin.action(description="Replay (process again; effects are idempotent)")
    def replay(self, request, queryset):
        results = [
            services.webhook_replay(webhook_event_id=e.pk, actor=request.user) for e in queryset
        ]
        messages.success(
            request, f"Replayed {len(results)} event(s): {', '.join(map(str, results))}"
        )


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "live_state",
        "state",
        "retry_at",
        "opened_at",
        "last_error_rate",
        "updated_at",
    ]
    actions = ["close"]

    @admin.display(description="Live state (shared store)")
    def live_state(self, obj):
        current = breaker.status(obj.name)
        return f"{current['state']} ({current['calls']} calls, {current['error_rate']:.0%} errors)"

    @admin.action(description="Close the breaker")
    def close(self, request, queryset):
        for obj in queryset:
            breaker.reset(obj.name)


class DiscrepancyInline(ReadOnlyInline):
    model = Discrepancy
    fields = ["kind", "object_type", "gateway_object_id", "local_id", "detail", "is_repaired"]


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "provider",
        "since",
        "started_at",
        "checked",
        "discrepancy_count",
        "repaired_count",
        "error",
    ]
    inlines = [DiscrepancyInline]


@admin.register(Discrepancy)
class DiscrepancyAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "run",
        "kind",
        "object_type",
        "gateway_object_id",
        "local_id",
        "is_repaired",
        "created_at",
    ]
    list_filter = ["kind", "object_type", "is_repaired"]
