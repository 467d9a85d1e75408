"""Celery tasks of the wallets app: thin, idempotent."""

import logging

from celery import shared_task

from wallets.idempotency import idempotency_records_purge
from wallets.services import reconciliation_run

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def purge_idempotency_records() -> int:
    return idempotency_records_purge()


@shared_task(acks_late=True)
def reconcile_ledger(mode: str = "incremental", requested_by_id: int | None = None) -> bool:
    """Beat's hourly incremental and nightly full runs, and the admin's "Run now".
    Read-only, so a redelivery after a dead worker just runs it again."""
    run = reconciliation_run(mode=mode, requested_by_id=requested_by_id)
    if not run.ok:
        logger.error("reconciliation found problems", extra={"run": run.pk, "problems": run.problems[:5]})
    return run.ok
