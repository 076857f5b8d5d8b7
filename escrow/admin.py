"""Operators' view of projects, milestones and the (read-only) ledger. Every action calls a
service; nothing here writes a status or a balance directly."""

from django.contrib import admin, messages
from django.db.models import F, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin, ReadOnlyInline, ServiceFormMixin
from common.errors import DomainError
from escrow import money, services
from escrow.models import (
    JournalEntry,
    LedgerAccount,
    LedgerBalanceSlot,
    Milestone,
    Posting,
    Project,
)


def _run_service(modeladmin, request, queryset, service, label):
    done = failed = 0
    for obj in queryset:
        try:
            service(obj, request.user)
            done += 1
        except DomainError as exc:
            failed += 1
            modeladmin.message_user(request, f"{obj}: {exc.message}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{label}: {done} done.", messages.SUCCESS)


class MilestoneInline(admin.TabularInline):
    model = Milestone
    fields = ["position", "title", "amount", "status", "due_date", "funded_at", "released_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Project)
class ProjectAdmin(ServiceFormMixin, admin.ModelAdmin):
    """The title is the only editable field; it is saved by project_update_details (the row
    locked, only the title written), never by a full-row save that could undo a status change
    made while the form was open."""

    list_display = ["id", "title", "homeowner", "contractor", "currency", "status", "created_at"]
    list_filter = ["status", "currency"]
    search_fields = ["title", "homeowner__username", "contractor__username"]
    readonly_fields = [
        "homeowner",
        "contractor",
        "currency",
        "status",
        "homeowner_signed_at",
        "contractor_signed_at",
        "created_at",
        "utilization",
    ]
    fields = ["title", *readonly_fields]
    inlines = [MilestoneInline]
    actions = ["cancel_projects"]

    def has_add_permission(self, request):
        return False  # projects are created by homeowners (portal or API)

    def save_through_service(self, request, obj, changes, change):
        return services.project_update_details(project_id=obj.pk, actor=request.user, **changes)

    @admin.display(description="Budget utilization (from the ledger)")
    def utilization(self, project):
        from escrow.selectors import project_utilization

        u = project_utilization(project=project)
        fmt = lambda amount: money.format_amount(amount, project.currency)  # noqa: E731
        return (
            f"budget {fmt(u.budget)} · funded {fmt(u.funded)} · released {fmt(u.released)} "
            f"(fees {fmt(u.fees)}) · refunded {fmt(u.refunded)} · held {fmt(u.held)} · "
            f"remaining {fmt(u.remaining)}"
        )

    @admin.action(description="Cancel selected projects (only if no money is held)")
    def cancel_projects(self, request, queryset):
        _run_service(
            self,
            request,
            queryset,
            lambda p, actor: services.project_cancel(project_id=p.pk, actor=actor),
            "Cancelled",
        )


@admin.register(Milestone)
class MilestoneAdmin(ServiceFormMixin, admin.ModelAdmin):
    """Title and due date are editable; milestone_update_details saves them (project and
    milestone locked, only the changed columns written)."""

    list_display = ["id", "title", "project", "amount", "status", "due_date", "review_deadline"]
    list_filter = ["status", "project__currency"]
    search_fields = ["title", "project__title", "project__homeowner__username"]
    readonly_fields = [
        "project",
        "amount",
        "status",
        "funded_via",
        "funding_reference",
        "funded_at",
        "submitted_at",
        "review_deadline",
        "approved_at",
        "released_at",
        "refunded_at",
        "escrow",
        "entries",
    ]
    fields = ["title", "due_date", *readonly_fields]
    actions = ["refund_milestones", "cancel_milestones"]

    def has_add_permission(self, request):
        return False

    def save_through_service(self, request, obj, changes, change):
        return services.milestone_update_details(milestone_id=obj.pk, actor=request.user, **changes)

    @admin.display(description="Escrow held")
    def escrow(self, milestone):
        from escrow.ledger import escrow_balance_of

        return money.format_amount(escrow_balance_of(milestone.pk), milestone.project.currency)

    @admin.display(description="Journal entries")
    def entries(self, milestone):
        links = [
            format_html(
                '<a href="{}">{}</a>',
                reverse("admin:escrow_journalentry_change", args=[entry.pk]),
                entry.reference,
            )
            for entry in milestone.journal_entries.all()
        ]
        return format_html(", ".join(["{}"] * len(links)), *links) if links else "—"

    @admin.action(description="Refund selected milestones (operator)")
    def refund_milestones(self, request, queryset):
        _run_service(
            self,
            request,
            queryset,
            lambda m, actor: services.milestone_refund(milestone_id=m.pk, actor=actor),
            "Refunded",
        )

    @admin.action(description="Cancel selected unfunded milestones")
    def cancel_milestones(self, request, queryset):
        _run_service(
            self,
            request,
            queryset,
            lambda m, actor: services.milestone_cancel(milestone_id=m.pk, actor=actor),
            "Cancelled",
        )


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["code", "kind", "currency", "formatted_balance", "is_restricted", "owner"]
    list_filter = ["kind", "currency", "is_restricted"]
    search_fields = ["code", "user__username"]
    readonly_fields = [
        "code",
        "kind",
        "currency",
        "formatted_balance",
        "is_restricted",
        "milestone",
        "user",
    ]

    def get_queryset(self, request):
        # Shared accounts keep part of their balance in slot rows (LedgerBalanceSlot).
        in_slots = (
            LedgerBalanceSlot.objects.filter(account=OuterRef("pk"))
            .values("account")
            .annotate(total=Sum("amount"))
            .values("total")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(total_balance=F("balance") + Coalesce(Subquery(in_slots), 0))
        )

    @admin.display(description="Balance", ordering="total_balance")
    def formatted_balance(self, account):
        return money.format_amount(account.total_balance, account.currency)

    @admin.display(description="Owner")
    def owner(self, account):
        if account.milestone_id:
            url = reverse("admin:escrow_milestone_change", args=[account.milestone_id])
            return format_html('<a href="{}">milestone {}</a>', url, account.milestone_id)
        return account.user or "platform"


class PostingInline(ReadOnlyInline):
    model = Posting
    fields = ["account", "debit", "credit", "currency"]

    def debit(self, posting):
        return posting.amount if posting.amount > 0 else ""

    def credit(self, posting):
        return -posting.amount if posting.amount < 0 else ""


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin):
    list_display = ["reference", "kind", "currency", "amount", "milestone", "party", "created_at"]
    list_filter = ["kind", "currency"]
    search_fields = ["reference", "memo"]
    date_hierarchy = "created_at"
    readonly_fields = ["reference", "kind", "currency", "amount", "memo", "project", "milestone",
                       "party", "created_at"]  # fmt: skip
    inlines = [PostingInline]
