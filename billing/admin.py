from django.contrib import admin

from billing.models import PaymentDueReminder


@admin.register(PaymentDueReminder)
class PaymentDueReminderAdmin(admin.ModelAdmin):
    """What homeowners were reminded of; written by the beat task only."""

    list_display = ["milestone", "due_date", "kind", "created_at"]
    list_filter = ["kind"]
    search_fields = ["=milestone__id", "milestone__title"]
    readonly_fields = ["milestone", "due_date", "kind", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
