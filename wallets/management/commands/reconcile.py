from django.core.management.base import BaseCommand, CommandError

from wallets.models import ReconciliationMode
from wallets.selectors import reconciliation_report
from wallets.services import reconciliation_run


class Command(BaseCommand):
    help = ("Check every wallet against its ledger entries and the whole ledger against zero, and record the run; "
            "non-zero exit on a mismatch.")

    def add_arguments(self, parser):
        parser.add_argument("--incremental", action="store_true",
                            help="only what was posted after the last verified checkpoint (full when there is none)")

    def handle(self, *args, incremental: bool, **options):
        run = reconciliation_run(mode=ReconciliationMode.INCREMENTAL if incremental else ReconciliationMode.FULL)
        # The verdict stays the last line (the benches and the soak read it).
        self.stdout.write(f"{run}: {run.duration.total_seconds():.3f} s")
        for line in reconciliation_report(run=run).lines():
            self.stdout.write(line)
        if not run.ok:
            raise CommandError(f"reconciliation failed: {len(run.problems)} problem(s)")
