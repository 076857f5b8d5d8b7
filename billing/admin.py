from django.contrib import admin

from billing.models import PaymentDueReminder
from common.admin import ReadOnlyAdmin


@admin.register(PaymentDueReminder)
class PaymentDueReminderAdmin(ReadOnlyAdmin):
    """What homeowners were reminded of; written by the beat task only."""

    list_display = ["milestone", "due_date", "kind", "created_at"]
    list_filter = ["kind"]
    search_fields = ["=milestone__id", "milestone__title"]
    readonly_fields = ["milestone", "due_date", "kind", "created_at"]
