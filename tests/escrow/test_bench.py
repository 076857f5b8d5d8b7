"""bench/ledger.py keeps working: a short run on the test server prints its table beside
pgbench's figure and finds nothing wrong in what it wrote (docs/PERFORMANCE.md quotes it)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import requires_postgres

ROOT = Path(__file__).resolve().parents[2]


@requires_postgres
@pytest.mark.postgres
def test_the_ledger_bench_runs_beside_pgbench_and_leaves_a_consistent_ledger():
    """Two workers, one 1 s round each side: every row of the table is printed, the escrow side
    committed entries at 4 round trips each (BEGIN, the milestone's UPDATE, the posting,
    COMMIT), and check_ledger passes on everything it wrote. No timing is asserted."""
    assert os.environ.get("DATABASE_URL"), "the bench runs on the test server (DATABASE_URL)"
    run = subprocess.run(
        [sys.executable, "bench/ledger.py", "--seconds", "1", "--rounds", "1", "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert re.search(r"^\| 1 \| escrow ledger \| [\d,]+ \| [\d,]+ \| [\d,]+ \| \d+% \|$", out, re.M)
    assert re.search(r"^\| 1 \| pgbench TPC-B-like \| [\d,]+ \| \| \| 100% \|$", out, re.M)
    assert re.search(r"^ledger: 4\.0 round trips and [\d.]+ ms of worker CPU per entry$", out, re.M)
    assert "check_ledger on everything written: ok" in out
