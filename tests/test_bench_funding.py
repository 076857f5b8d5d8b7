"""bench/funding.py keeps working: a small run on the full stack (make serve, a worker,
PostgreSQL, a private Redis) funds every milestone, delivers each milestone.funded to its
homeowner's socket exactly once and leaves check_ledger clean (the script exits 0 only
then). No timing is asserted."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import requires_postgres

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--fundings", "16", "--homeowners", "2", "--quiet-for", "3"]


@requires_postgres
@pytest.mark.postgres
def test_a_small_funding_bench_loses_and_duplicates_nothing():
    assert os.environ.get("DATABASE_URL"), "the bench runs on the test server (DATABASE_URL)"
    run = subprocess.run(
        [sys.executable, "bench/funding.py", *ARGS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "16 funded exactly once, 0 lost, 0 duplicated" in run.stdout
    assert "| request → payment.completed | 16 |" in run.stdout
    assert "ledger ok" in run.stdout
