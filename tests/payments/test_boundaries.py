"""Escrow owns the settlement facts: payments sizes payouts and refunds from escrow's
selectors and posts through escrow's services. Only payments/invariants.py, which
cross-checks both sides for check_ledger, reads ledger rows; no payments module imports
escrow's ledger or its ledger models."""

import ast
from pathlib import Path

PAYMENTS = Path(__file__).resolve().parents[2] / "payments"
LEDGER_NAMES = {"JournalEntry", "LedgerAccount", "Posting", "LedgerBalance"}
ALLOWED = {"invariants.py"}


def _ledger_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {alias.name for alias in node.names}
            if node.module.startswith("escrow.ledger") or (
                node.module == "escrow" and "ledger" in names
            ):
                found.append(f"{node.lineno}: from {node.module} import {', '.join(names)}")
            elif node.module == "escrow.models" and names & LEDGER_NAMES:
                found.append(f"{node.lineno}: ledger models {sorted(names & LEDGER_NAMES)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("escrow.ledger"):
                    found.append(f"{node.lineno}: import {alias.name}")
    return found


def test_only_the_invariants_read_the_ledger_from_payments():
    offenders = {
        str(path.relative_to(PAYMENTS)): imports
        for path in sorted(PAYMENTS.rglob("*.py"))
        if "migrations" not in path.parts
        and str(path.relative_to(PAYMENTS)) not in ALLOWED
        and (imports := _ledger_imports(path))
    }

    assert offenders == {}


def test_the_scan_sees_a_ledger_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from escrow import ledger\nfrom escrow.models import JournalEntry\n")

    assert len(_ledger_imports(sample)) == 2
