"""`python manage.py reconcile [--since YYYY-MM-DD] [--provider sandbox|stripe]`: compare the
gateway's records with ours and the ledger; print the findings; exit 1 when any is left
unrepaired."""

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from payments.services import reconcile


class Command(BaseCommand):
    help = "Reconcile gateway records with payments and the ledger."

    def add_arguments(self, parser):
        parser.add_argument("--since", help="YYYY-MM-DD (default: the configured lookback)")
        parser.add_argument("--provider", choices=["sandbox", "stripe"])

    def handle(self, *args, since=None, provider=None, **options):
        start = None
        if since:
            try:
                start = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError as exc:
                raise CommandError("--since must be YYYY-MM-DD") from exc
        run = reconcile(since=start, provider=provider)
        for finding in run.findings.order_by("id"):
            mark = "repaired" if finding.is_repaired else "open"
            self.stdout.write(
                f"{finding.kind} {finding.object_type} gateway={finding.gateway_object_id or '-'} "
                f"local={finding.local_id or '-'} [{mark}] {finding.detail}"
            )
        open_count = run.discrepancy_count - run.repaired_count
        self.stdout.write(
            f"reconciliation #{run.pk} ({run.provider} since {run.since:%Y-%m-%d}): "
            f"{run.checked} checked, {run.discrepancy_count} discrepancies, "
            f"{run.repaired_count} repaired{'; errors: ' + run.error if run.error else ''}"
        )
        if open_count:
            raise SystemExit(1)
