"""The double-entry ledger: accounts, entries and postings, and the flows of ARCHITECTURE.md.

Every function here joins the caller's transaction (the caller holds the aggregate's lock) and
must run inside one. Balances change with `UPDATE ... SET balance = balance + delta` in
ascending account id order, so two transactions touching the same accounts always lock them in
the same order (no deadlock) and the CHECK constraint refuses any overdraft of a restricted
account, whatever the code above it believed.

The rooms: accounts.py (which account a leg needs, found or created), entries.py (an entry's
legs and row, and its errors), posting.py (post_entry and the portable write), postgres.py (the
one-round-trip PostgreSQL write through escrow/sql/), flows.py (funding, settlement, payouts)
and balances.py (what accounts hold). Import from `escrow.ledger`; the names below are the
package's surface.
"""

from escrow.ledger.accounts import (
    AccountSpec,
    Kind,
    accounts,
    escrow_account,
    escrow_spec,
    gateway_account,
    gateway_fee_account,
    gateway_fee_spec,
    gateway_spec,
    hold_spec,
    in_transit_account,
    in_transit_spec,
    payable_account,
    payable_spec,
    revenue_account,
    revenue_spec,
    spec_of,
)
from escrow.ledger.balances import (
    balance,
    balances_of,
    escrow_balance_of,
    project_escrow_balance,
    project_escrow_balances,
    refund_holds_of,
)
from escrow.ledger.entries import Account, Posted, credit, debit
from escrow.ledger.flows import (
    post_funding,
    post_payout_failed,
    post_payout_paid,
    post_payout_reversed,
    post_payout_started,
    post_settlement,
)
from escrow.ledger.postgres import _pg_array, _prepared_cursor
from escrow.ledger.posting import post_entry

__all__ = [
    "Account",
    "AccountSpec",
    "Kind",
    "Posted",
    "_pg_array",
    "_prepared_cursor",
    "accounts",
    "balance",
    "balances_of",
    "credit",
    "debit",
    "escrow_account",
    "escrow_balance_of",
    "escrow_spec",
    "gateway_account",
    "gateway_fee_account",
    "gateway_fee_spec",
    "gateway_spec",
    "hold_spec",
    "in_transit_account",
    "in_transit_spec",
    "payable_account",
    "payable_spec",
    "post_entry",
    "post_funding",
    "post_payout_failed",
    "post_payout_paid",
    "post_payout_reversed",
    "post_payout_started",
    "post_settlement",
    "project_escrow_balance",
    "project_escrow_balances",
    "refund_holds_of",
    "revenue_account",
    "revenue_spec",
    "spec_of",
]
