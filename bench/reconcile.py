"""`reconcile` over a large ledger: a full run against an incremental one after a few thousand postings.

    DATABASE_URL=postgres://.../rp_x CELERY_BROKER_URL=redis://.../n .venv/bin/python bench/reconcile.py
        [--entries 10000000] [--no-write]

In one run, on a database of its own (`<DATABASE_URL's name>_reconcile`, recreated):
1. `--entries` ledger entries written in SQL (bench/fill.py, in chunks): USERS wallets topped up,
   then settled history of fixed packets of 5 shares, 4 claimed and the rest refunded (12
   entries a packet: the send, 4 claims, the refund);
2. a full run (`reconciliation_run`, what `manage.py reconcile` and the nightly task call):
   clean, it takes the checkpoint;
3. a few thousand new postings through the services (topups, packets sent and claimed);
4. an incremental run from that checkpoint, and one more with nothing new.
Prints the table and writes it to docs/performance.md (unless --no-write).
"""

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "## Reconciliation: full against incremental (bench/reconcile.py)"
USERS = 100_000
SHARES, CLAIMED = 5, 4
ENTRIES_PER_PACKET = 2 + 2 * CLAIMED + 2
CHUNK = 100_000  # packets per fill statement set
TOPUP = 10_000_000

from bench.own_database import own_database  # noqa: E402

own_database("reconcile")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
# The fill's statements write a million rows each; the runs set their own (none).
os.environ.setdefault("DB_STATEMENT_TIMEOUT_MS", "0")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.doc_sections import write_section  # noqa: E402
from bench.fill import analyze, fill_packets  # noqa: E402
from redpackets.models import PacketKind  # noqa: E402
from redpackets.services import group_create, packet_claim, packet_send  # noqa: E402
from wallets.ledger import system_account  # noqa: E402
from wallets.models import LedgerEntry, ReconciliationMode, SystemAccount  # noqa: E402
from wallets.services import reconciliation_run, wallet_topup  # noqa: E402


def fill_wallets(count: int) -> list[int]:
    """`count` users with a wallet topped up by one posting each, in SQL (no password: they never log in)."""
    funding = system_account(code=SystemAccount.FUNDING, currency="CNY")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("""
            INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,
                                   is_active, date_joined)
            SELECT '!', false, 'bench' || n, '', '', '', false, true, now() FROM generate_series(1, %s) n
        """, [count])
        cursor.execute("""
            INSERT INTO wallets_account (kind, user_id, code, currency, balance, created_at)
            SELECT 'wallet', id, '', 'CNY', %s, now() FROM auth_user WHERE username LIKE 'bench%%' ORDER BY id
        """, [TOPUP])
        cursor.execute("""
            CREATE TEMP TABLE fill_topup ON COMMIT DROP AS
            SELECT id AS account, gen_random_uuid() AS tx FROM wallets_account WHERE kind = 'wallet'
        """)
        cursor.execute("INSERT INTO wallets_ledgertransaction (id, kind, memo, created_at) "
                       "SELECT tx, 'topup', 'Sandbox topup', now() FROM fill_topup")
        cursor.execute("""
            INSERT INTO wallets_ledgerentry (transaction_id, account_id, amount, balance_after)
            SELECT tx, leg.account, leg.amount, leg.after FROM fill_topup t,
                LATERAL (VALUES (t.account, %(topup)s::bigint, %(topup)s::bigint), (%(funding)s, -%(topup)s, NULL))
                    AS leg(account, amount, after)
            ORDER BY t.account
        """, {"topup": TOPUP, "funding": funding.id})
        cursor.execute("SELECT user_id FROM wallets_account WHERE kind = 'wallet' ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def timed_run(mode: str):
    started = time.perf_counter()
    run = reconciliation_run(mode=mode)
    return run, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000_000, help="ledger entries to fill (about)")
    parser.add_argument("--new-topups", type=int, default=2000, help="topups posted after the checkpoint")
    parser.add_argument("--new-packets", type=int, default=200, help="packets sent (and 2 shares claimed) after it")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)

    fill_started = time.perf_counter()
    users = fill_wallets(USERS)
    senders, claimers = users[: USERS // 2], users[USERS // 2:]
    owner = get_user_model().objects.get(pk=senders[0])
    members = list(get_user_model().objects.filter(pk__in=claimers[:4]))
    group = group_create(owner=owner, name="reconcile bench", member_usernames=[u.username for u in members])
    escrow = system_account(code=SystemAccount.ESCROW, currency="CNY")
    packets = max(0, args.entries - 2 * USERS) // ENTRIES_PER_PACKET
    now = timezone.now()
    for offset in range(0, packets, CHUNK):
        fill_packets(count=min(CHUNK, packets - offset), shares=SHARES, claimed=CLAIMED, group_id=group.id,
                     senders=senders, claimers=claimers, escrow_id=escrow.id, created_at=now - timedelta(days=3),
                     expires_first=now - timedelta(days=2), expires_step_ms=0.01, settled=True)
        print(f"  filled {min(offset + CHUNK, packets)} of {packets} packets", flush=True)
    analyze()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE wallets_ledgerentry")  # the visibility map, as autovacuum would leave it
    fill_seconds = time.perf_counter() - fill_started
    entries = LedgerEntry.objects.count()
    print(f"{entries} entries in {fill_seconds:.0f} s", flush=True)

    full, full_seconds = timed_run(ReconciliationMode.FULL)
    print(f"full: {full_seconds:.1f} s, ok={full.ok}", flush=True)

    posted_started = time.perf_counter()
    topped = get_user_model().objects.filter(pk__in=senders[1: args.new_topups + 1])
    for user in topped:
        wallet_topup(user=user, amount=100)
    for _ in range(args.new_packets):
        packet = packet_send(sender=owner, group_id=group.id, kind=PacketKind.FIXED, share_count=4, share_amount=100)
        for member in members[:2]:
            packet_claim(packet_id=packet.id, user=member)
    posted_seconds = time.perf_counter() - posted_started
    new_entries = LedgerEntry.objects.filter(id__gt=full.checkpoint_position).count()

    incremental, incremental_seconds = timed_run(ReconciliationMode.INCREMENTAL)
    idle, idle_seconds = timed_run(ReconciliationMode.INCREMENTAL)
    problems = [p for run in (full, incremental, idle) for p in run.problems]
    print(f"incremental: {incremental_seconds:.2f} s ({incremental.entries_checked} entries), "
          f"nothing new: {idle_seconds:.2f} s", flush=True)

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    per_entry = full_seconds / entries * 1e6
    lines = [
        f"Run {stamp} on {os.cpu_count()} cores shared with other work (PostgreSQL {connection.pg_version // 10000}, "
        f"this driver). Ledger: {entries:,} entries written in SQL in {fill_seconds:.0f} s "
        f"({entries / fill_seconds:,.0f} entries/s; {USERS:,} wallets and their topups, then {packets:,} settled "
        f"packets of {SHARES} shares, {CLAIMED} claimed, the rest refunded: bench/fill.py). Each run is "
        "`reconciliation_run`, what `manage.py reconcile [--incremental]` and the Celery task call, timed from "
        "the driver (the wait for postings in flight, one REPEATABLE READ snapshot, the recorded run).",
        "",
        "| run | entries checked | time | per entry |",
        "|---|---:|---:|---:|",
        f"| full, the whole ledger | {full.entries_checked:,} | **{full_seconds:.1f} s** | {per_entry:.2f} µs |",
        f"| incremental, after {new_entries:,} new entries ({args.new_topups} topups, {args.new_packets} packets "
        f"sent and 2 shares each claimed, through the services, {posted_seconds:.0f} s) | "
        f"{incremental.entries_checked:,} | **{incremental_seconds:.2f} s** "
        f"({full_seconds / incremental_seconds:.0f}x faster) | "
        f"{incremental_seconds / max(incremental.entries_checked, 1) * 1e6:.0f} µs |",
        f"| incremental, nothing new | {idle.entries_checked:,} | {idle_seconds:.2f} s | |",
        f"| outcome | {'all clean' if not problems else '; '.join(problems[:3])} | | |",
        "",
        "The full run reads every entry four times (the wallets' sums, each balance_after against the running "
        "sum, the transactions' sums, the system accounts), so it grows with the ledger: it runs nightly in a "
        "Celery task, never in a web request, with no statement timeout in its read-only snapshot. An "
        "incremental run reads only the entries above the checkpoint (through the primary key and the "
        "(account, -id) index) plus one pass over the wallets for the global sum and the escrow's free shares "
        "(the share_free_by_packet index), so it costs the postings since the last run and the number of "
        "wallets, not the ledger's size. What moved it: the ids of the new transactions and packets are "
        "materialized first and looked up by key (joined in one statement, PostgreSQL merged whole indexes: "
        "1.7 s for 5,200 new entries on a 500,000-entry ledger), and escrow's free shares look up their "
        "packet one by one (the planner takes unclaimed-and-not-refunded for a sixth of all shares and hashed "
        "all 816,000 packets: 0.6 s of every incremental run at 10M entries).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
