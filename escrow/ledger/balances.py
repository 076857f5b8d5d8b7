"""Balances: what accounts hold (a row plus, for shared accounts, its slots) and which slot a
change goes to."""

import random

from django.conf import settings
from django.db.models import Sum

from escrow.ledger.accounts import Kind
from escrow.models import LedgerAccount, LedgerBalanceSlot


def _slot(restricted: bool, slot: int | None) -> int | None:
    if restricted:
        return None
    return random.randrange(settings.LEDGER_BALANCE_SLOTS) if slot is None else slot


def balance(account: LedgerAccount) -> int:
    """The account's balance in its normal direction (row plus slots for shared accounts)."""
    return balances_of([account.pk])[account.pk]


def balances_of(account_ids) -> dict[int, int]:
    """Balances (row plus slots) of the given accounts, by id, in two queries."""
    ids = list(account_ids)
    result = dict(LedgerAccount.objects.filter(pk__in=ids).values_list("pk", "balance"))
    slots = (
        LedgerBalanceSlot.objects.filter(account_id__in=ids)
        .values("account_id")
        .annotate(total=Sum("amount"))
        .values_list("account_id", "total")
    )
    for account_id, total in slots:
        result[account_id] += total
    return result


def project_escrow_balance(project_id: int) -> int:
    """What escrow holds for all of a project's milestones."""
    return project_escrow_balances([project_id])[project_id]


def project_escrow_balances(project_ids) -> dict[int, int]:
    """project_escrow_balance for several projects in one query."""
    return _totals(Kind.ESCROW, "milestone__project_id", project_ids)


def refund_holds_of(milestone_ids) -> dict[int, int]:
    """What the hold accounts of these milestones hold, by milestone id (pending refunds)."""
    return _totals(Kind.HOLD, "milestone_id", milestone_ids)


def _totals(kind: str, group_by: str, ids) -> dict:
    """The balance rows of `kind` accounts summed per `group_by` value, 0 for ids with none."""
    totals = dict.fromkeys(ids, 0)
    rows = (
        LedgerAccount.objects.filter(kind=kind, **{f"{group_by}__in": totals})
        .values_list(group_by)
        .annotate(total=Sum("balance"))
    )
    totals.update({key: total or 0 for key, total in rows})
    return totals


def escrow_balance_of(milestone_id: int) -> int:
    return (
        LedgerAccount.objects.filter(kind=Kind.ESCROW, milestone_id=milestone_id)
        .values_list("balance", flat=True)
        .first()
        or 0
    )
