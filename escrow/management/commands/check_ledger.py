import sys

from django.core.management.base import BaseCommand

from escrow import invariants


class Command(BaseCommand):
    help = "Check every ledger invariant; exit 0 with a summary, or 1 with the violations."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=100, help="Report at most this many.")

    def handle(self, *args, limit, **options):
        found = invariants.violations(limit=limit)
        counts = invariants.summary()
        if found:
            for problem in found:
                self.stdout.write(f"VIOLATION {problem}")
            self.stdout.write(f"ledger check failed: {len(found)} violation(s)")
            sys.exit(1)
        self.stdout.write(
            "ledger ok: {entries} entries, {postings} postings, {accounts} accounts, "
            "{milestones} milestones; all balanced and consistent".format(**counts)
        )
