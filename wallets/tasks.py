"""Celery tasks of the wallets app: thin, idempotent."""

from celery import shared_task

from wallets.idempotency import idempotency_records_purge


@shared_task(acks_late=True)
def purge_idempotency_records() -> int:
    return idempotency_records_purge()
