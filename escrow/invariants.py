"""The ledger's invariants over the whole database, for `manage.py check_ledger` and tests.

1. Every entry balances: its postings sum to zero, in the entry's currency, with >= 2 legs.
2. Every stored balance equals the sum of its postings (in the account's normal direction).
3. No restricted account (escrow, payable, in transit) is negative.
4. Each milestone's escrow matches its state: its amount less partial refunds and pending
   refunds' holds while funded/submitted/inspection/disputed; once released/refunded/split,
   only what a refund that failed after the settlement gave back (amount less partial
   refunds, holds and what the settlement moved); nothing before funding or once cancelled.
5. Each milestone's `refund_holds` is what its hold accounts (hold:refund:<reference>) hold.
6. Every completed funding payment is posted exactly once, and payments' refunds agree with
   the ledger and the gateway (when payments is installed: payments/invariants.py).
"""

from django.apps import apps
from django.db.models import Count, F, Q, Sum

from escrow.models import JournalEntry, LedgerAccount, LedgerBalanceSlot, Milestone, Posting


def violations(*, limit: int = 100) -> list[str]:
    found: list[str] = []
    found += _unbalanced_entries(limit)
    found += _balances_off(limit)
    found += _negative_restricted(limit)
    found += _escrow_against_state(limit)
    found += _holds_against_milestones(limit)
    found += _funding_posted_once(limit)
    return found[:limit]


def summary() -> dict[str, int]:
    return {
        "entries": JournalEntry.objects.count(),
        "postings": Posting.objects.count(),
        "accounts": LedgerAccount.objects.count(),
        "milestones": Milestone.objects.count(),
    }


def _unbalanced_entries(limit: int) -> list[str]:
    rows = (
        JournalEntry.objects.annotate(
            total=Sum("postings__amount"),
            legs=Count("postings"),
            foreign=Count("postings", filter=~Q(postings__currency=F("currency"))),
        )
        .filter(~Q(total=0) | Q(legs__lt=2) | Q(foreign__gt=0) | Q(total__isnull=True))
        .values_list("reference", "total", "legs")[:limit]
    )
    return [f"entry {ref} unbalanced: sum {total}, {legs} legs" for ref, total, legs in rows]


def _balances_off(limit: int) -> list[str]:
    problems = []
    sums = dict(
        Posting.objects.values("account_id")
        .annotate(total=Sum("amount"))
        .values_list("account_id", "total")
    )
    mixed = Posting.objects.exclude(currency=F("account__currency")).count()
    if mixed:
        problems.append(f"{mixed} postings in a currency other than their account's")
    in_slots = dict(
        LedgerBalanceSlot.objects.values("account_id")
        .annotate(total=Sum("amount"))
        .values_list("account_id", "total")
    )
    restricted_slots = LedgerBalanceSlot.objects.filter(account__is_restricted=True).count()
    if restricted_slots:
        problems.append(f"{restricted_slots} balance slots on restricted accounts")
    for account in LedgerAccount.objects.order_by("pk").iterator():
        expected = sums.get(account.pk, 0) * account.normal_sign
        stored = account.balance + in_slots.get(account.pk, 0)
        if stored != expected:
            problems.append(f"account {account} balance {stored} != postings {expected}")
            if len(problems) >= limit:
                break
    return problems


def _negative_restricted(limit: int) -> list[str]:
    rows = LedgerAccount.objects.filter(is_restricted=True, balance__lt=0)[:limit]
    restricted_kinds = [str(kind) for kind in LedgerAccount.RESTRICTED]
    unflagged = LedgerAccount.objects.filter(kind__in=restricted_kinds, is_restricted=False)
    return [f"restricted account {a} is negative: {a.balance}" for a in rows] + [
        f"account {a} should be restricted" for a in unflagged[:limit]
    ]


def _escrow_against_state(limit: int) -> list[str]:
    problems = []
    held = dict(
        LedgerAccount.objects.filter(kind=LedgerAccount.Kind.ESCROW).values_list(
            "milestone_id", "balance"
        )
    )
    settled = _settled_amounts()
    fields = ("pk", "status", "amount", "partial_refunds", "refund_holds")
    for milestone in Milestone.objects.only(*fields).iterator():
        balance = held.get(milestone.pk, 0)
        if milestone.status in Milestone.HOLDING:
            expected = milestone.held_amount
        elif milestone.status in _SETTLED:
            # Without a settlement entry (refunded by partial refunds) nothing may be left.
            expected = milestone.held_amount - settled.get(milestone.pk, milestone.held_amount)
        else:
            expected = 0
        if balance != expected:
            problems.append(
                f"milestone {milestone.pk} is {milestone.status} but escrow holds {balance} "
                f"(expected {expected})"
            )
            if len(problems) >= limit:
                break
    return problems


_SETTLED = frozenset({Milestone.Status.RELEASED, Milestone.Status.REFUNDED, Milestone.Status.SPLIT})


def _settled_amounts() -> dict[int, int]:
    """Milestone id → what its settlement entry (release:/refund:/split:<id>) took from escrow."""
    rows = JournalEntry.objects.filter(
        kind__in=[JournalEntry.Kind.RELEASE, JournalEntry.Kind.REFUND, JournalEntry.Kind.SPLIT],
        milestone__isnull=False,
    ).values_list("reference", "kind", "milestone_id", "amount")
    return {
        milestone_id: amount
        for reference, kind, milestone_id, amount in rows.iterator()
        if reference == f"{kind}:{milestone_id}"
    }


def _holds_against_milestones(limit: int) -> list[str]:
    holds = dict(
        LedgerAccount.objects.filter(kind=LedgerAccount.Kind.HOLD)
        .values("milestone_id")
        .annotate(total=Sum("balance"))
        .values_list("milestone_id", "total")
    )
    problems = []
    if None in holds:
        problems.append("hold accounts that belong to no milestone hold " + str(holds.pop(None)))
    recorded = dict(
        Milestone.objects.filter(Q(refund_holds__gt=0) | Q(pk__in=list(holds))).values_list(
            "pk", "refund_holds"
        )
    )
    for milestone_id in sorted(set(recorded) | set(holds)):
        if recorded.get(milestone_id, 0) != holds.get(milestone_id, 0):
            problems.append(
                f"milestone {milestone_id} records {recorded.get(milestone_id, 0)} held for "
                f"pending refunds but its hold accounts hold {holds.get(milestone_id, 0)}"
            )
            if len(problems) >= limit:
                break
    return problems


def _funding_posted_once(limit: int) -> list[str]:
    if not apps.is_installed("payments"):
        return []
    try:
        from payments.invariants import funding_violations
    except ImportError:
        return []
    return funding_violations(limit=limit)
