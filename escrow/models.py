from django.conf import settings
from django.db import models
from django.db.models import Q

from escrow.money import MAX_AMOUNT


class Project(models.Model):
    """The contract between one homeowner and one contractor, split into milestones."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        ACTIVE = "active"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    TRANSITIONS = {
        Status.DRAFT: {Status.ACTIVE, Status.CANCELLED},
        Status.ACTIVE: {Status.COMPLETED, Status.CANCELLED},
        Status.COMPLETED: set(),
        Status.CANCELLED: set(),
    }

    homeowner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="projects_as_homeowner"
    )
    contractor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="projects_as_contractor"
    )
    title = models.CharField(max_length=200)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    homeowner_signed_at = models.DateTimeField(null=True, blank=True)
    contractor_signed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["draft", "active", "completed", "cancelled"]),
                name="project_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(homeowner=models.F("contractor")), name="project_parties_differ"
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[a-z]{3}$"), name="project_currency_lowercase"
            ),
        ]
        indexes = [
            models.Index(fields=["homeowner", "-id"], name="project_homeowner"),
            models.Index(fields=["contractor", "-id"], name="project_contractor"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    def party_ids(self) -> list[int]:
        return [self.homeowner_id, self.contractor_id]


class Milestone(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        FUNDING = "funding"
        FUNDED = "funded"
        SUBMITTED = "submitted"
        INSPECTION = "inspection"
        APPROVED = "approved"
        RELEASED = "released"
        DISPUTED = "disputed"
        REFUNDED = "refunded"
        SPLIT = "split"
        CANCELLED = "cancelled"

    # The one transition table (ARCHITECTURE.md, state machines). Services read it; nothing
    # else changes a status.
    TRANSITIONS = {
        Status.PENDING: {Status.FUNDING, Status.CANCELLED},
        Status.FUNDING: {Status.FUNDED, Status.PENDING},
        Status.FUNDED: {Status.SUBMITTED, Status.DISPUTED, Status.REFUNDED},
        Status.SUBMITTED: {
            Status.INSPECTION,
            Status.APPROVED,
            Status.DISPUTED,
            Status.REFUNDED,
        },
        Status.INSPECTION: {Status.APPROVED, Status.DISPUTED},
        Status.APPROVED: {Status.RELEASED},
        # Left only through milestone_settle_dispute (released, refunded, split) or
        # milestone_unfreeze (back to the status recorded in frozen_from); transition() refuses
        # every other way out of a freeze.
        Status.DISPUTED: {
            Status.RELEASED,
            Status.REFUNDED,
            Status.SPLIT,
            Status.FUNDED,
            Status.SUBMITTED,
            Status.INSPECTION,
        },
        Status.RELEASED: set(),
        Status.REFUNDED: set(),
        Status.SPLIT: set(),
        Status.CANCELLED: set(),
    }
    TERMINAL = frozenset({Status.RELEASED, Status.REFUNDED, Status.SPLIT, Status.CANCELLED})
    # States in which the milestone's escrow account holds its held_amount.
    HOLDING = frozenset({Status.FUNDED, Status.SUBMITTED, Status.INSPECTION, Status.DISPUTED})
    # The states a freeze may start from, and so the ones an unfreeze may go back to.
    FREEZABLE = frozenset({Status.FUNDED, Status.SUBMITTED, Status.INSPECTION})

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="milestones")
    title = models.CharField(max_length=200)
    amount = models.BigIntegerField()
    due_date = models.DateField(null=True, blank=True)
    position = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Given back from escrow by partial refunds before settlement; escrow then holds
    # amount − partial_refunds, and a release or settlement moves only that.
    partial_refunds = models.BigIntegerField(default=0)
    # Promised to refunds the gateway has not confirmed yet: moved from escrow to their
    # hold:refund:<reference> accounts when each refund is created (escrow/services/holds.py),
    # so a release or settlement moves only held_amount, which leaves them out.
    refund_holds = models.BigIntegerField(default=0)
    # The status a freeze interrupted (blank when not frozen): an unfreeze goes back to it.
    frozen_from = models.CharField(max_length=16, blank=True)
    funded_via = models.CharField(max_length=32, blank=True)
    funding_reference = models.CharField(max_length=100, blank=True)
    funded_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    review_deadline = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project_id", "position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0) & Q(amount__lte=MAX_AMOUNT),
                name="milestone_amount_range",
            ),
            models.CheckConstraint(
                condition=Q(partial_refunds__gte=0) & Q(partial_refunds__lte=models.F("amount")),
                name="milestone_partial_refunds_range",
            ),
            models.CheckConstraint(
                condition=Q(refund_holds__gte=0)
                & Q(refund_holds__lte=models.F("amount") - models.F("partial_refunds")),
                name="milestone_refund_holds_range",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "pending",
                        "funding",
                        "funded",
                        "submitted",
                        "inspection",
                        "approved",
                        "released",
                        "disputed",
                        "refunded",
                        "split",
                        "cancelled",
                    ]
                ),
                name="milestone_status_valid",
            ),
        ]
        indexes = [
            models.Index(
                fields=["review_deadline"],
                name="milestone_review_due",
                condition=Q(status="submitted"),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    @property
    def currency(self) -> str:
        return self.project.currency

    @property
    def held_amount(self) -> int:
        """What escrow holds for this milestone while it is funded (see HOLDING): its amount
        less what partial refunds gave back and what pending refunds hold."""
        return self.amount - self.partial_refunds - self.refund_holds


class LedgerAccount(models.Model):
    """One account per (kind, owner, currency). Balances are kept in the account's normal
    direction (debits for assets and expenses, credits for liabilities and revenue) in the same
    transaction as the postings.

    Restricted accounts (escrow, payable, in transit) keep their whole balance in `balance`,
    where the database refuses a negative value. Unrestricted ones (gateway, revenue, expense)
    are shared by every transaction of their currency; their postings add to one of a few
    LedgerBalanceSlot rows instead, so parallel transactions do not queue on one row lock
    through each other's commits. Their balance is `balance` (what was there before slots)
    plus the slots: read it with `escrow.ledger.balance()`."""

    class Kind(models.TextChoices):
        GATEWAY = "gateway"  # asset: money at a payment gateway
        ESCROW = "escrow"  # liability: held for one milestone
        PAYABLE = "payable"  # liability: owed to a contractor or helper
        PAYOUT_IN_TRANSIT = "payout_in_transit"  # liability: payout sent, not yet paid
        REVENUE = "revenue"  # platform fees
        EXPENSE = "expense"  # gateway fees
        # liability: money promised to one pending refund (hold:refund:<reference>), taken
        # out of its milestone's escrow until the gateway confirms or fails the refund
        HOLD = "hold"

    DEBIT_NORMAL = frozenset({Kind.GATEWAY, Kind.EXPENSE})
    RESTRICTED = frozenset({Kind.ESCROW, Kind.PAYABLE, Kind.PAYOUT_IN_TRANSIT, Kind.HOLD})

    code = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    currency = models.CharField(max_length=3)
    balance = models.BigIntegerField(default=0)
    is_restricted = models.BooleanField(default=False)
    milestone = models.ForeignKey(
        Milestone, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_accounts",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["code", "currency"], name="ledger_account_unique"),
            models.CheckConstraint(
                condition=Q(is_restricted=False) | Q(balance__gte=0),
                name="ledger_restricted_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[a-z]{3}$"), name="ledger_account_currency"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.currency})"

    @property
    def normal_sign(self) -> int:
        return 1 if self.kind in self.DEBIT_NORMAL else -1


class LedgerBalanceSlot(models.Model):
    """A share of an unrestricted account's balance (see LedgerAccount). A posting adds its
    delta to one slot picked at random, in the same transaction as the posting."""

    # No index of its own: ledger_balance_slot_unique (account, slot) serves look-ups by account.
    account = models.ForeignKey(
        LedgerAccount, on_delete=models.PROTECT, related_name="slots", db_index=False
    )
    slot = models.PositiveSmallIntegerField()
    amount = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "slot"], name="ledger_balance_slot_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}#{self.slot}: {self.amount}"


class JournalEntry(models.Model):
    """An immutable business fact. `reference` is unique so the same fact posts once."""

    class Kind(models.TextChoices):
        FUND = "fund"
        RELEASE = "release"
        REFUND = "refund"
        SPLIT = "split"
        PAYOUT_STARTED = "payout_started"
        PAYOUT_PAID = "payout_paid"
        PAYOUT_FAILED = "payout_failed"
        # The gateway took back (part of) a paid transfer: Dr gateway / Cr payable.
        PAYOUT_REVERSED = "payout_reversed"
        GATEWAY_FEE = "gateway_fee"
        # A pending refund's money moves from escrow to its hold (Dr escrow / Cr hold), and
        # back when the gateway fails the refund (Dr hold / Cr escrow). A confirmed refund
        # settles out of the hold as a REFUND (Dr hold / Cr gateway).
        REFUND_HOLD = "refund_hold"
        REFUND_HOLD_RETURNED = "refund_hold_returned"
        ADJUSTMENT = "adjustment"

    # Unique through Meta.constraints rather than unique=True, which on PostgreSQL also builds
    # a second (varchar_pattern_ops) index that no query uses and every entry would maintain.
    reference = models.CharField(max_length=120)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(help_text="Sum of the debit legs.")
    memo = models.CharField(max_length=200, blank=True)
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    milestone = models.ForeignKey(
        Milestone, null=True, blank=True, on_delete=models.PROTECT, related_name="journal_entries"
    )
    party = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The person the entry is about (payee of a payout).",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "journal entries"
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="entry_amount_pos"),
            models.UniqueConstraint(fields=["reference"], name="journal_entry_reference_unique"),
        ]

    def __str__(self) -> str:
        return self.reference


class Posting(models.Model):
    """One leg of an entry: debit positive, credit negative; never zero."""

    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    # No index of its own: posting_account (account, entry) serves look-ups by account.
    account = models.ForeignKey(
        LedgerAccount, on_delete=models.PROTECT, related_name="postings", db_index=False
    )
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)

    class Meta:
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="posting_not_zero")]
        indexes = [models.Index(fields=["account", "entry"], name="posting_account")]

    def __str__(self) -> str:
        return f"{self.account.code} {self.amount:+d}"
