"""The operators' admin, organised for the job: an "Attention" panel on the index (failed and
stuck payments, the webhook inbox, circuit breakers, reconciliation, outgoing deliveries,
payouts waiting) and the apps and models ordered by how often operators need them.

Each app's admin.py (owned by that app) registers its models on the default site; this module
only replaces the default site's class (settings: `portal.admin_site.OpsAdminConfig` instead
of `django.contrib.admin`). Every count links to a filtered change list; nothing here writes."""

from dataclasses import dataclass
from datetime import timedelta

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.core.exceptions import FieldError
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

APP_ORDER = ["payments", "escrow", "disputes", "billing", "realtime", "accounts", "auth"]
MODEL_ORDER = {
    "payments": [
        "Payment",
        "WebhookEvent",
        "Refund",
        "Payout",
        "CircuitBreaker",
        "ReconciliationRun",
        "Discrepancy",
        "PaymentMethod",
        "PayoutAccount",
    ],
    "escrow": ["Project", "Milestone", "LedgerAccount", "JournalEntry"],
    "realtime": ["WebhookDelivery", "WebhookEndpoint", "Event", "Notification"],
    "accounts": ["User", "ApiKey"],
}


@dataclass(frozen=True)
class Signal:
    """One line of the index's attention panel."""

    label: str
    count: int
    url: str
    level: str  # "ok", "warn" or "bad"


def _changelist(app_label: str, model_name: str, query: str = "") -> str:
    try:
        url = reverse(f"admin:{app_label}_{model_name.lower()}_changelist")
    except NoReverseMatch:
        return ""
    return f"{url}?{query}" if query else url


def _count(app_label: str, model_name: str, **filters) -> int | None:
    try:
        model = apps.get_model(app_label, model_name)
        return model.objects.filter(**filters).count()
    except (LookupError, FieldError):
        return None


def attention_signals() -> list[Signal]:
    """What an operator should look at now. A model or field another app has not built (yet)
    is left out rather than failing the index."""
    day_ago = timezone.now() - timedelta(hours=24)
    stuck = timezone.now() - timedelta(minutes=15)
    checks = [
        (
            "Payments failed in the last 24 h",
            ("payments", "Payment"),
            {"status__in": ["failed", "declined", "rejected"], "updated_at__gte": day_ago},
            "status__exact=failed",
            "bad",
        ),
        (
            "Payments in flight for over 15 min",
            ("payments", "Payment"),
            {
                "status__in": ["initiated", "processing", "verifying", "authorized"],
                "created_at__lt": stuck,
            },
            "",
            "warn",
        ),
        (
            "Gateway webhooks failed or parked",
            ("payments", "WebhookEvent"),
            {"status__in": ["failed", "parked"]},
            "status__exact=failed",
            "bad",
        ),
        (
            "Circuit breakers not closed",
            ("payments", "CircuitBreaker"),
            {"state__in": ["open", "half_open"]},
            "",
            "bad",
        ),
        (
            "Unrepaired reconciliation discrepancies",
            ("payments", "Discrepancy"),
            {"is_repaired": False},
            "is_repaired__exact=0",
            "bad",
        ),
        (
            "Payouts waiting for an account, or failed and not paid again",
            ("payments", "Payout"),
            {"status__in": ["needs_account", "failed"], "retries__isnull": True},
            "",
            "warn",
        ),
        (
            "Refunds failed",
            ("payments", "Refund"),
            {"status": "failed"},
            "status__exact=failed",
            "bad",
        ),
        (
            "Outgoing webhook deliveries failed",
            ("realtime", "WebhookDelivery"),
            {"status": "failed"},
            "status__exact=failed",
            "warn",
        ),
        (
            "Milestones in dispute",
            ("escrow", "Milestone"),
            {"status": "disputed"},
            "status__exact=disputed",
            "warn",
        ),
    ]
    signals = []
    for label, (app_label, model_name), filters, query, level in checks:
        count = _count(app_label, model_name, **filters)
        if count is None:
            continue
        url = _changelist(app_label, model_name, query)
        signals.append(Signal(label, count, url, level if count else "ok"))
    return signals


class OpsAdminSite(admin.AdminSite):
    site_header = "Escrow payments — operations"
    site_title = "Escrow payments"
    index_title = "Operations"
    index_template = "admin/ops_index.html"

    def get_app_list(self, request, app_label=None):
        app_list = super().get_app_list(request, app_label)

        def app_key(app):
            label = app["app_label"]
            return (APP_ORDER.index(label) if label in APP_ORDER else len(APP_ORDER), app["name"])

        for app in app_list:
            order = MODEL_ORDER.get(app["app_label"], [])
            app["models"].sort(
                key=lambda model: (
                    order.index(model["object_name"])
                    if model["object_name"] in order
                    else len(order),
                    model["name"],
                )
            )
        return sorted(app_list, key=app_key)

    def index(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "attention": attention_signals()}
        return super().index(request, extra_context)


class OpsAdminConfig(AdminConfig):
    """django.contrib.admin with OpsAdminSite as the default site."""

    default_site = "portal.admin_site.OpsAdminSite"
