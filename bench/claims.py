"""Claims per second on one hot packet, on PostgreSQL, four ways side by side.

- service: redpackets.services.packet_claim, as the API calls it (with its
           packet.claimed outbox insert and the after-commit finished check);
- no events: the same service with the event recording switched off: the claim
           path before the outbox, to show what the outbox costs;
- naive:   the same claim (outbox insert included), but locking the packet row
           first (one lock per packet, the design that serialises every claimer);
- raw SQL: the same statements the service sends for one claim (the read of the
           packet, membership and earlier claim; then the share, the wallet and
           the ledger rows and the event in one transaction; then the finished
           check), straight through psycopg with
           prepared statements and no Django: the database's own ceiling for
           this work on this machine.

Each claimer is its own process (as gunicorn workers are), released together.
Figures are only compared within one run: the machine is shared and noisy.

    DATABASE_URL=postgres://... python bench/claims.py [--claims 1200] [--levels 1,8,32,64]

On a database of its own, `<DATABASE_URL's name>_claims`, dropped and made anew.

Then the send path: a random packet of 100 shares (rp-split-v1) against a fixed
one (no split), and the split alone, with v1's Dirichlet split (read from git
history, `--v1-ref`) beside it when that commit is at hand.

Prints the tables and writes them to docs/performance.md.
"""

import argparse
import importlib.util
import multiprocessing as mp
import subprocess
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

from bench.own_database import own_database  # noqa: E402

own_database("claims")  # made anew each run: the figures do not drift with an ever-growing ledger

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone as dj_timezone  # noqa: E402

from bench.doc_sections import PERFORMANCE_DOC, write_section  # noqa: E402
from config.errors import PacketExhausted  # noqa: E402
from redpackets import allocation, event_payloads, services  # noqa: E402
from redpackets.models import ChatGroup, GroupMembership, Packet, Share  # noqa: E402
from redpackets.services import _CLAIM_CONTEXT, packet_claim, packet_send  # noqa: E402
from wallets.ledger import ledger_post  # noqa: E402
from wallets.models import Account, AccountKind, TransactionKind  # noqa: E402
from wallets.services import wallet_topup  # noqa: E402

User = get_user_model()
CLAIMS_SECTION = "## Claims on one hot packet (bench/claims.py)"


# --- the three ways to claim ---------------------------------------------------------


def claim_service(packet_id, user_id, wallet_id, escrow_id):
    packet_claim(packet_id=packet_id, user=User(pk=user_id, username=f"user-{user_id}"))


def make_claimer_without_events():
    # Each claimer is its own forked process: switching the recording off here touches no other variant.
    event_payloads.record_packet_claimed = lambda **kwargs: None
    services.packet_finish_if_claimed = lambda **kwargs: False
    return claim_service


def claim_naive(packet_id, user_id, wallet_id, escrow_id):
    """The packet-row-lock design: every claimer queues on one row."""
    now = dj_timezone.now()
    with transaction.atomic():
        Packet.objects.select_for_update().only("id").get(id=packet_id)
        share = (Share.objects.filter(packet_id=packet_id, claimed_by__isnull=True, refunded=False)
                 .select_related("packet").order_by("seq").first())
        if share is None:
            raise PacketExhausted()
        tx_id = uuid.uuid4()
        Share.objects.filter(id=share.id).update(claimed_by_id=user_id, claimed_at=now, claim_transaction_id=tx_id)
        ledger_post(
            kind=TransactionKind.PACKET_CLAIM,
            wallet_legs={wallet_id: share.amount},
            system_legs={escrow_id: -share.amount},
            packet_id=packet_id,
            created_by_id=user_id,
            transaction_id=tx_id,
        )
        event_payloads.record_packet_claimed(packet_id=packet_id, group_id=share.packet.group_id,
                                             username=f"user-{user_id}", amount=share.amount, claimed_at=now)


# The statements the service sends for one claim, in the same order, without Django.
RAW_CLAIM = [
    _CLAIM_CONTEXT.replace("%(packet)s", "%(packet)s::uuid"),
    (
        "UPDATE redpackets_share SET claimed_by_id = %(user)s, claimed_at = now(), claim_transaction_id = %(tx)s "
        "WHERE id = (SELECT id FROM redpackets_share WHERE packet_id = %(packet)s AND claimed_by_id IS NULL "
        "AND NOT refunded ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING amount"
    ),
    (
        "UPDATE wallets_account SET balance = balance + %(amount)s "
        "WHERE id = %(wallet)s AND kind = 'wallet' AND balance + %(amount)s >= 0 RETURNING balance"
    ),
    (
        "WITH posted AS (INSERT INTO wallets_ledgertransaction (id, kind, packet_id, memo, created_by_id, created_at) "
        "VALUES (%(tx)s, 'packet_claim', %(packet)s, '', %(user)s, now())) "
        "INSERT INTO wallets_ledgerentry (transaction_id, account_id, amount, balance_after) "
        "VALUES (%(tx)s, %(wallet)s, %(amount)s, %(balance)s), (%(tx)s, %(escrow)s, -%(amount)s, NULL)"
    ),
    (
        "INSERT INTO events_event (type, group_id, subject, data, created_at, unique_key) "
        "VALUES ('packet.claimed', %(group)s, %(packet)s, %(event)s, now(), NULL) "
        "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id"
    ),
    # After commit: is any share still free (else the claimer records packet.finished)?
    "SELECT EXISTS (SELECT 1 FROM redpackets_share WHERE packet_id = %(packet)s AND claimed_by_id IS NULL AND NOT refunded)",
]


def make_raw_claimer():
    dsn = settings.DATABASES["default"]
    conn = psycopg.connect(
        host=dsn["HOST"], port=dsn["PORT"] or 5432, user=dsn["USER"], password=dsn["PASSWORD"] or None,
        dbname=dsn["NAME"], autocommit=True,
    )

    def claim_raw(packet_id, user_id, wallet_id, escrow_id):
        params = {"user": user_id, "tx": uuid.uuid4(), "packet": packet_id, "wallet": wallet_id, "escrow": escrow_id}
        with conn.cursor() as cur:
            cur.execute(RAW_CLAIM[0], params)
            context = cur.fetchone()
            if context is None or not context[4] or context[6] is not None or not context[9]:
                raise PacketExhausted()
            with conn.transaction():
                cur.execute(RAW_CLAIM[1], params)
                row = cur.fetchone()
                if row is None:
                    raise PacketExhausted()
                params["amount"] = row[0]
                cur.execute(RAW_CLAIM[2], params)
                params["balance"] = cur.fetchone()[0]
                cur.execute(RAW_CLAIM[3], params)
                params["group"] = context[12]
                params["event"] = Jsonb({"packet": str(packet_id), "group": str(context[12]), "claim": {
                    "user": f"user-{user_id}", "amount": params["amount"], "claimed_at": datetime.now(UTC).isoformat()}})
                cur.execute(RAW_CLAIM[4], params)
            cur.execute(RAW_CLAIM[5], params)

    return claim_raw


VARIANTS = {
    "service": lambda: claim_service,
    "no events": make_claimer_without_events,
    "naive": lambda: claim_naive,
    "raw SQL": make_raw_claimer,
}


# --- harness --------------------------------------------------------------------------


def _worker(variant, packet_id, escrow_id, claimers, barrier, results):
    connections.close_all()  # never share the parent's connection across fork
    claim = VARIANTS[variant]()
    latencies, failures = [], 0
    barrier.wait()
    for user_id, wallet_id in claimers:
        start = time.perf_counter()
        try:
            claim(packet_id, user_id, wallet_id, escrow_id)
        except Exception:
            failures += 1
        latencies.append(time.perf_counter() - start)
    connections.close_all()
    results.put((latencies, failures))


def run_round(variant, level, claims, users, sender, group):
    packet = packet_send(sender=sender, group_id=group.id, kind="random", share_count=claims, total_amount=claims * 100)
    chunks = [users[i::level] for i in range(level)]
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(level + 1), ctx.Queue()
    connections.close_all()
    procs = [
        ctx.Process(target=_worker, args=(variant, packet.id, packet.escrow_account_id, chunk, barrier, results))
        for chunk in chunks
    ]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    outcomes = [results.get() for _ in procs]
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    latencies = sorted(lat for lats, _ in outcomes for lat in lats)
    failures = sum(f for _, f in outcomes)
    claimed = Share.objects.filter(packet=packet, claimed_by__isnull=False).count()
    return {
        "variant": variant,
        "level": level,
        "claims": claimed,
        "failed": failures,
        "per_second": claimed / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def prepare(claims):
    call_command("migrate", verbosity=0)
    settings.REDPACKET_MAX_SHARES = claims
    settings.REDPACKET_TTL_SECONDS = 3600
    run_id = uuid.uuid4().hex[:8]
    sender = User.objects.create_user(username=f"bench-sender-{run_id}")
    Account.objects.create(user=sender, kind=AccountKind.WALLET)
    wallet_topup(user=sender, amount=10**12)
    users = User.objects.bulk_create([User(username=f"bench-{run_id}-{i}") for i in range(claims)])
    wallets = Account.objects.bulk_create([Account(user=u, kind=AccountKind.WALLET) for u in users])
    group = ChatGroup.objects.create(name=f"bench {run_id}", owner=sender)
    GroupMembership.objects.bulk_create([GroupMembership(group=group, user=u) for u in [sender, *users]])
    return sender, group, [(u.pk, w.pk) for u, w in zip(users, wallets)]


def render(rows, claims):
    by = {(r["variant"], r["level"]): r for r in rows}
    levels = sorted({r["level"] for r in rows})
    lines = [
        "| claimers | service claims/s | no events claims/s | naive claims/s | raw SQL claims/s | service / raw "
        "| service / naive | service / no events | service p50 / p99 ms | naive p50 / p99 ms | raw p50 / p99 ms "
        "| failed claims |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        s, b, n, r = (by[(v, level)] for v in VARIANTS)
        lines.append(
            f"| {level} | {s['per_second']:.0f} | {b['per_second']:.0f} | {n['per_second']:.0f} | {r['per_second']:.0f} "
            f"| {s['per_second'] / r['per_second']:.0%} | {s['per_second'] / n['per_second']:.2f}x "
            f"| {s['per_second'] / b['per_second']:.0%} "
            f"| {s['p50_ms']:.1f} / {s['p99_ms']:.1f} | {n['p50_ms']:.1f} / {n['p99_ms']:.1f} "
            f"| {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {s['failed'] + b['failed'] + n['failed'] + r['failed']} |"
        )
    return "\n".join(lines)


# --- the send path and the split ------------------------------------------------------


def _per_call_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _v1_split(ref):
    """v1's split_random (Dirichlet weights), loaded from git history, or None."""
    try:
        source = subprocess.run(["git", "show", f"{ref}:redpackets/allocation.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("allocation_v1", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{ref}:redpackets/allocation.py", "exec"), module.__dict__)  # noqa: S102
    return module.split_random


def send_figures(v1_ref, sends):
    """Median ms per call: the sends (service, no PIN: the PIN's cost is its own), the splits."""
    sender, group, _ = prepare(100)
    cap = settings.REDPACKET_MAX_SHARE
    seed = allocation.new_seed()
    random_ms, fixed_ms = [], []
    for _ in range(sends):  # interleaved, so drift in the machine's load hits both alike
        random_ms.append(_per_call_ms(lambda: packet_send(
            sender=sender, group_id=group.id, kind="random", share_count=100, total_amount=100_000), 1))
        fixed_ms.append(_per_call_ms(lambda: packet_send(
            sender=sender, group_id=group.id, kind="fixed", share_count=100, share_amount=1000), 1))
    figures = {
        "send, random, 100 shares (rp-split-v1)": statistics.median(random_ms),
        "send, fixed, 100 shares (no split)": statistics.median(fixed_ms),
    }
    splits = {
        "100 shares of mean 1000 (cap far)": 100_000,
        "100 shares of mean 15000 (cap 20000 binds on many)": 1_500_000,
    }
    v1 = _v1_split(v1_ref)
    for name, total in splits.items():
        figures[f"split alone, rp-split-v1, {name}"] = _per_call_ms(
            lambda: allocation.split_random(total=total, share_count=100, cap=cap, seed=seed), 2000)
        if v1 is not None:
            figures[f"split alone, v1 Dirichlet ({v1_ref}), {name}"] = _per_call_ms(
                lambda: v1(total=total, share_count=100, cap=cap), 2000)
    return figures


def render_send(figures):
    lines = ["| what | median ms per call |", "|---|---:|"]
    lines += [f"| {name} | {ms:.3f} |" for name, ms in figures.items()]
    return "\n".join(lines)


def write_doc(table, claims, levels):
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_section(CLAIMS_SECTION, (
        f"Run {stamp} on {os.cpu_count()} cores, PostgreSQL {connection.pg_version // 10000}, "
        f"{claims} shares per packet, each claimer a process; every variant and level in the same run.\n\n"
        f"{table}\n\n"
        "Targets at 32 claimers: the service at least 60% of raw SQL and at least 2x the naive "
        "packet-row lock, with zero failed claims. Every variant but \"no events\" writes the packet.claimed "
        "outbox row in the claim's transaction; \"service / no events\" is what the outbox costs the service "
        "(the insert, and the after-commit check for packet.finished).\n"
    ))


def write_send_doc(table):
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_section("## Sending and the split (bench/claims.py)", (
        f"Run {stamp}, in the same run as the claims above; packet_send as the API calls it after the PIN "
        "(the PIN check is its own cost), one call at a time.\n\n"
        f"{table}\n"
    ), after=CLAIMS_SECTION)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=1200, help="shares per packet (claims per round)")
    parser.add_argument("--levels", default="1,8,32,64", help="concurrent claimers, comma-separated")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--sends", type=int, default=40, help="sends of each kind for the send figures")
    parser.add_argument("--v1-ref", default="b295f2a", help="git commit of v1's split, for its cost beside the new one")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("The benchmark needs PostgreSQL: set DATABASE_URL.")
    levels = [int(x) for x in args.levels.split(",")]
    rows = []
    for level in levels:
        for variant in VARIANTS:
            sender, group, users = prepare(args.claims)
            row = run_round(variant, level, args.claims, users, sender, group)
            rows.append(row)
            print(f"{variant:>8} @ {level:>2}: {row['per_second']:7.0f} claims/s  p50 {row['p50_ms']:6.1f} ms  "
                  f"p99 {row['p99_ms']:6.1f} ms  failed {row['failed']}", flush=True)
    table = render(rows, args.claims)
    send_table = render_send(send_figures(args.v1_ref, args.sends))
    print()
    print(table)
    print()
    print(send_table)
    call_command("reconcile")
    if not args.no_write:
        write_doc(table, args.claims, levels)
        write_send_doc(send_table)
        print(f"\nwritten to {PERFORMANCE_DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
