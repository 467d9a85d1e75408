from django.core.management.base import BaseCommand, CommandError

from wallets.selectors import ledger_reconcile


class Command(BaseCommand):
    help = "Check every wallet against its ledger entries and the whole ledger against zero; non-zero exit on a mismatch."

    def handle(self, *args, **options):
        report = ledger_reconcile()
        for line in report.lines():
            self.stdout.write(line)
        if not report.ok:
            raise CommandError(f"reconciliation failed: {len(report.problems)} problem(s)")
