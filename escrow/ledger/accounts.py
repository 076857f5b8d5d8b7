"""Ledger accounts: the spec of each account a flow needs, and finding or creating them."""

from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

from escrow.models import LedgerAccount, Milestone

Kind = LedgerAccount.Kind


# The hot path reads and writes ledger rows with plain SQL: building each statement through the
# ORM was most of a posting's CPU cost (docs/PERFORMANCE.md, "Measurements behind code comments").
_ACCOUNT_FIELDS = ["id", "code", "kind", "currency", "balance", "is_restricted"]
_ACCOUNT_FIELDS += ["milestone_id", "user_id"]
_FIND_ACCOUNTS = (
    "SELECT id, code, kind, currency, balance, is_restricted, milestone_id, user_id "
    "FROM escrow_ledgeraccount WHERE (code, currency) IN ({})"
)
_CREATE_ACCOUNTS = (
    "INSERT INTO escrow_ledgeraccount (code, kind, currency, balance, is_restricted, "
    "milestone_id, user_id, created_at) VALUES {} "
    "ON CONFLICT (code, currency) DO NOTHING "
    "RETURNING id, code, kind, currency, balance, is_restricted, milestone_id, user_id"
)


@dataclass(frozen=True)
class AccountSpec:
    """Which account a leg needs: found by (code, currency), created with the rest if missing."""

    code: str
    kind: str
    currency: str
    milestone_id: int | None = None
    user_id: int | None = None


def _find_accounts(specs) -> dict[tuple[str, str], LedgerAccount]:
    keys = list(dict.fromkeys((spec.code, spec.currency) for spec in specs))
    with connection.cursor() as cursor:
        cursor.execute(
            _FIND_ACCOUNTS.format(", ".join(["(%s, %s)"] * len(keys))),
            [value for key in keys for value in key],
        )
        return _from_rows(cursor.fetchall())


def _from_rows(rows) -> dict[tuple[str, str], LedgerAccount]:
    # Same as the ORM would build (created_at is left deferred).
    found = (LedgerAccount.from_db(connection.alias, _ACCOUNT_FIELDS, row) for row in rows)
    return {(account.code, account.currency): account for account in found}


def accounts(*specs: AccountSpec, found: dict | None = None) -> list[LedgerAccount]:
    """The accounts for `specs`, in order, in one query (and one more that creates any that do
    not exist yet). `found` is a lookup from `_find_accounts` made in this transaction."""
    if found is None:
        found = _find_accounts(specs)
    missing = {(s.code, s.currency): s for s in specs if (s.code, s.currency) not in found}
    missing = list(missing.values())
    if missing:
        # Insert-or-nothing instead of insert-and-catch: no savepoint, and a transaction that
        # created the same account concurrently is waited for, then read.
        created_at = connection.ops.adapt_datetimefield_value(timezone.now())
        values = []
        for spec in missing:
            values += [spec.code, spec.kind, spec.currency, spec.kind in LedgerAccount.RESTRICTED]
            values += [spec.milestone_id, spec.user_id, created_at]
        with connection.cursor() as cursor:
            cursor.execute(
                _CREATE_ACCOUNTS.format(
                    ", ".join(["(%s, %s, %s, 0, %s, %s, %s, %s)"] * len(missing))
                ),
                values,
            )
            rows = cursor.fetchall()
        found = {**found, **_from_rows(rows)}
        if len(rows) < len(missing):  # a parallel transaction created some of them just now
            found = {**found, **_find_accounts(missing)}
    return [found[(spec.code, spec.currency)] for spec in specs]


def gateway_spec(provider: str, currency: str) -> AccountSpec:
    return AccountSpec(f"gateway:{provider}", Kind.GATEWAY, currency)


def escrow_spec(milestone: Milestone) -> AccountSpec:
    return AccountSpec(
        f"escrow:milestone:{milestone.pk}",
        Kind.ESCROW,
        milestone.project.currency,
        milestone_id=milestone.pk,
    )


def hold_spec(milestone: Milestone, reference: str) -> AccountSpec:
    """The account holding what a pending refund of this milestone promised (restricted, so
    it can never give out more than was put in)."""
    return AccountSpec(
        f"hold:refund:{reference}",
        Kind.HOLD,
        milestone.project.currency,
        milestone_id=milestone.pk,
    )


def payable_spec(user_id: int, currency: str) -> AccountSpec:
    return AccountSpec(f"payable:user:{user_id}", Kind.PAYABLE, currency, user_id=user_id)


def in_transit_spec(currency: str) -> AccountSpec:
    return AccountSpec("payout:in_transit", Kind.PAYOUT_IN_TRANSIT, currency)


def revenue_spec(currency: str) -> AccountSpec:
    return AccountSpec("revenue:fees", Kind.REVENUE, currency)


def gateway_fee_spec(currency: str) -> AccountSpec:
    return AccountSpec("expense:gateway_fees", Kind.EXPENSE, currency)


def gateway_account(provider: str, currency: str) -> LedgerAccount:
    return accounts(gateway_spec(provider, currency))[0]


def escrow_account(milestone: Milestone) -> LedgerAccount:
    return accounts(escrow_spec(milestone))[0]


def payable_account(user_id: int, currency: str) -> LedgerAccount:
    return accounts(payable_spec(user_id, currency))[0]


def in_transit_account(currency: str) -> LedgerAccount:
    return accounts(in_transit_spec(currency))[0]


def revenue_account(currency: str) -> LedgerAccount:
    return accounts(revenue_spec(currency))[0]


def gateway_fee_account(currency: str) -> LedgerAccount:
    return accounts(gateway_fee_spec(currency))[0]


def spec_of(account: LedgerAccount) -> AccountSpec:
    return AccountSpec(
        account.code, account.kind, account.currency, account.milestone_id, account.user_id
    )
