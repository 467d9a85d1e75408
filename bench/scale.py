"""Flat cost as the data grows: the same requests against an empty and a big database, in one run.

    DATABASE_URL=postgres://.../rp_x .venv/bin/python bench/scale.py
        [--packets 1000000] [--reuse] [--reps 200] [--rounds 2] [--no-write]

Two databases of its own under DATABASE_URL's server: `<name>_empty` and `<name>_big`
(recreated, except the big one with --reuse when it holds its fill already). Both get
the same world: 5 groups of 100 members, one measured user (`scale_alice`) in all of
them, 100 settled packets per group. The big one then gets `--packets` more packets of
4 shares, all claimed, all settled, spread over the groups and a year (bench/fill.py, in
SQL: 10 ledger entries a packet, so 1M packets are 10M entries; the measured user sends
or claims in one packet of twenty, about 50,000 entries at 1M), their events, and
`manage.py reconcile` is timed on it.

Then, in each database, in-process through Django's test client with a knox token, each
request `--reps` times in each of `--rounds` rounds alternating the databases, median and
p95: a claim, a send, `GET /wallet/transactions` (first page, and the deepest full page
by its cursor), `GET /groups/{id}/packets`, `GET /packets/{id}`, and the events poll
(`GET /events?after=` ten events back). Every query of one request of each is then run
under EXPLAIN (ANALYZE, BUFFERS) in both databases: the shared buffers a request touches,
summed over its queries, is the noise-free part of the comparison, and any sequential
scan or sort of more than 1,000 rows is listed. Prints the table and writes it to
docs/performance.md (unless --no-write).
"""

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "## Flat cost as the data grows: empty against big database (bench/scale.py)"
GROUPS = 5
MEMBERS = 100  # per group, the measured user included
BASE_PACKETS = 100  # per group, in both databases
SHARES = 4
USERNAME = "scale_alice"
BIG_TABLES = {"wallets_ledgerentry", "wallets_ledgertransaction", "redpackets_packet", "redpackets_share",
              "events_event"}

_url = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/redpackets"))


def database_url(kind: str) -> str:
    return urlunsplit((_url.scheme, _url.netloc, f"{_url.path.rstrip('/')}_{kind}", "", ""))


# --- the driver: databases, fill, one measuring child process per database ----------------------


def admin_execute(sql: str) -> list:
    import psycopg

    with psycopg.connect(urlunsplit((_url.scheme, _url.netloc, "/postgres", "", "")), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def child(*args: str, kind: str) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url(kind), "API_THROTTLE": "off",
           "DJANGO_SETTINGS_MODULE": "config.settings.base"}
    if "world" in args:  # a fill statement and the full reconcile run longer than a request may
        env.update(DB_STATEMENT_TIMEOUT_MS="0", DB_IDLE_IN_TRANSACTION_TIMEOUT_MS="0")
    out = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} on {kind} failed:\n{out.stdout[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets filled into the big database")
    parser.add_argument("--reuse", action="store_true", help="keep the big database when it has its fill")
    parser.add_argument("--reps", type=int, default=200, help="requests of each kind per round and database")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", choices=["world", "measure"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import django

        django.setup()
        result = build_world(args.packets) if args.child == "world" else measure(args.reps)
        print(json.dumps(result, default=str))
        return 0

    fills = {}
    for kind, packets in (("empty", 0), ("big", args.packets)):
        name = urlsplit(database_url(kind)).path.lstrip("/")
        exists = bool(admin_execute(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))
        if kind == "big" and args.reuse and exists:  # filled, or its fill resumed
            fills[kind] = child("--child", "world", "--packets", str(packets), kind=kind)
            continue
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_execute(f'CREATE DATABASE "{name}"')
        fills[kind] = child("--child", "world", "--packets", str(packets), kind=kind)
    # A reused fill keeps the figures of the run that made it.
    record = ROOT / "var" / "scale" / f"{urlsplit(database_url('big')).path.lstrip('/')}-fill.json"
    if fills["big"]["fill_seconds"] is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(fills["big"]))
    elif record.exists():
        fills["big"] = {**json.loads(record.read_text()), "packets": fills["big"]["packets"],
                        "entries": fills["big"]["entries"]}
    reconcile = fills["big"].get("reconcile_seconds")
    # Rounds alternate the databases, so a change in the shared machine's load falls on both.
    results = {}
    for _ in range(args.rounds):
        for kind in ("empty", "big"):
            measured = child("--child", "measure", "--reps", str(args.reps), kind=kind)
            if kind not in results:
                results[kind] = measured
                continue
            for name, figures in measured.items():
                if isinstance(figures, dict):
                    results[kind][name]["timings"] += figures["timings"]
    for measured in results.values():
        for figures in measured.values():
            if isinstance(figures, dict):
                timings = sorted(figures["timings"])
                figures.update(median_ms=statistics.median(timings), p95_ms=timings[int(0.95 * (len(timings) - 1))],
                               n=len(timings))
    text = report(results, fills["big"], reconcile, args)
    print(text)
    if not args.no_write:
        from bench.doc_sections import write_section

        write_section(SECTION, text)
    return 0


# --- the world: the same in both databases, plus the fill in the big one ------------------------


def build_world(packets: int) -> dict:
    from django.core.management import call_command
    from django.db import connection

    from bench.fill import analyze, fill_events, fill_packets
    from redpackets.models import ChatGroup, Packet
    from wallets.ledger import system_account
    from wallets.models import LedgerEntry, SystemAccount

    call_command("migrate", verbosity=0)
    per_group = packets // GROUPS
    if Packet.objects.count() >= GROUPS * (BASE_PACKETS + per_group):
        return {"packets": Packet.objects.count(), "entries": LedgerEntry.objects.count(),
                "fill_seconds": None, "reconcile_seconds": None}
    if not ChatGroup.objects.filter(name__startswith="scale ").exists():
        make_members()
    members = {g.id: [m.user_id for m in g.memberships.order_by("user_id")]
               for g in ChatGroup.objects.filter(name__startswith="scale ").order_by("name")}
    escrow = system_account(code=SystemAccount.ESCROW, currency="CNY")
    year_ago = datetime.now(UTC) - timedelta(days=400)

    def fill(group_id, count, first, step_ms):
        ids = members[group_id]
        fill_packets(count=count, shares=SHARES, claimed=SHARES, group_id=group_id, senders=ids, claimers=ids,
                     escrow_id=escrow.id, created_at=first, created_step_ms=step_ms,
                     expires_first=first + timedelta(days=1), expires_step_ms=step_ms, settled=True)

    started = time.monotonic()
    batch = 50_000
    step = 365 * 86400 * 1000 / max(per_group, 1)
    for group_id in members:
        # Each batch is one transaction: a fill cut short resumes after the batches that committed.
        done = Packet.objects.filter(group_id=group_id).count()
        for offset in range(done, per_group, batch):
            count = min(batch, per_group - offset)
            fill(group_id, count, year_ago + timedelta(milliseconds=offset * step), step)
            print(f"filled {offset + count} of {per_group} packets in a group, {time.monotonic() - started:.0f} s",
                  file=sys.stderr, flush=True)
    # The base, newest: the same in both databases, after the big history.
    recent = datetime.now(UTC) - timedelta(days=2)
    for group_id in members:
        fill(group_id, BASE_PACKETS, recent, 1000)
    fill_events()
    analyze()
    fill_seconds = time.monotonic() - started
    connection.close()
    started = time.monotonic()
    call_command("reconcile")
    reconcile_seconds = time.monotonic() - started
    return {"packets": Packet.objects.count(), "entries": LedgerEntry.objects.count(),
            "fill_seconds": fill_seconds, "reconcile_seconds": reconcile_seconds}


def make_members() -> None:
    """The measured user, and GROUPS groups of MEMBERS with them in every one; wallets topped up."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from redpackets.models import ChatGroup, GroupMembership
    from tests.factories import UserFactory
    from wallets.models import Account, AccountKind
    from wallets.services import wallet_topup

    user_model = get_user_model()
    alice = UserFactory(username=USERNAME, balance=100_000_000)
    password = make_password(None)  # no password hashing for members who never log in
    for g in range(GROUPS):
        users = user_model.objects.bulk_create([user_model(username=f"scale_g{g}_{i:03d}", password=password)
                                                for i in range(MEMBERS - 1)])
        Account.objects.bulk_create([Account(user=u, kind=AccountKind.WALLET, currency="CNY") for u in users])
        for u in users:
            wallet_topup(user=u, amount=100_000_000)
        group = ChatGroup.objects.create(name=f"scale {g}", owner=users[0])
        GroupMembership.objects.bulk_create([GroupMembership(group=group, user=u) for u in [alice, *users]])


# --- one database's measurements -----------------------------------------------------------------


def cursor_at(position: int) -> str:
    """The cursor DRF's CursorPagination gives for `position` (ordering -id, no offset)."""
    return base64.b64encode(f"p={position}".encode()).decode()


def measure(reps: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from knox.models import AuthToken

    from events.models import Event
    from events.services import events_relay
    from redpackets.models import ChatGroup, GroupMembership, Packet, PacketKind
    from redpackets.services import packet_send
    from tests.factories import PIN, UserFactory
    from wallets.models import LedgerEntry

    user_model = get_user_model()
    alice = user_model.objects.get(username=USERNAME)
    group = ChatGroup.objects.filter(name="scale 0").get()
    bob = user_model.objects.get(username="scale_g0_001")
    _, token = AuthToken.objects.create(user=alice)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    # A newcomer: one entry (its topup) among all of them, the case an index walk by entry id misses.
    newcomer = UserFactory(username=f"scale_new_{uuid.uuid4().hex[:8]}", balance=1000, pin=None)
    newcomer_client = Client(HTTP_AUTHORIZATION=f"Bearer {AuthToken.objects.create(user=newcomer)[1]}")
    # Packets for the claims, sent before any timing; the relay positions their events.
    live = [packet_send(sender=bob, group_id=group.id, kind=PacketKind.FIXED, share_count=5, share_amount=100).id
            for _ in range(reps + 5)]
    events_relay()
    history = LedgerEntry.objects.filter(account__user=alice).order_by("-id").values_list("id", flat=True)
    oldest = list(history.reverse()[:21])
    deep = cursor_at(oldest[-1])  # the last full page: the 20 oldest entries
    viewed = Packet.objects.filter(group=group).order_by("-created_at").values_list("id", flat=True)[5]
    groups = GroupMembership.objects.filter(user=alice).values_list("group_id", flat=True)
    recent_event = Event.objects.filter(group_id__in=list(groups), position__isnull=False).order_by(
        "-position").values_list("id", flat=True)[10]

    def send(i):
        body = {"group": str(group.id), "kind": "fixed", "share_count": 5, "share_amount": 100, "pin": PIN}
        return client.post("/api/v1/packets", body, content_type="application/json",
                           HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))

    claims = iter(live)
    operations = {
        "claim": (lambda i: client.post(f"/api/v1/packets/{next(claims)}/claim", {}, content_type="application/json"), reps, 201),
        "send": (send, reps, 201),
        "history, first page": (lambda i: client.get("/api/v1/wallet/transactions"), reps, 200),
        "history, deepest page": (lambda i: client.get(f"/api/v1/wallet/transactions?cursor={deep}"), reps, 200),
        "history, a newcomer's": (lambda i: newcomer_client.get("/api/v1/wallet/transactions"), reps, 200),
        "group's packets": (lambda i: client.get(f"/api/v1/groups/{group.id}/packets"), reps, 200),
        "packet view": (lambda i: client.get(f"/api/v1/packets/{viewed}"), reps, 200),
        "events poll": (lambda i: client.get(f"/api/v1/events?after=evt_{recent_event}"), reps, 200),
    }
    results = {}
    for name, (request, count, status) in operations.items():
        for i in range(3):  # warm-up: caches, the first query plans
            response = request(i)
            assert response.status_code == status, (name, response.status_code, response.content[:300])
        timings = []
        for i in range(count):
            started = time.perf_counter()
            response = request(i)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == status, (name, response.status_code)
        with CaptureQueriesContext(connection) as captured:
            request(count)
        results[name] = {"timings": timings, "plans": [explain(q["sql"]) for q in captured.captured_queries]}
    results["alice_entries"] = history.count()
    return results


def explain(sql: str) -> dict:
    """The plan of one captured query: its shared buffers, and the scans and sorts of many rows.
    SELECTs run under EXPLAIN ANALYZE in a transaction rolled back; writes are planned only."""
    from django.db import connection, transaction

    verb = sql.lstrip().split(None, 1)[0].upper()
    if verb not in ("SELECT", "UPDATE", "DELETE", "WITH"):
        return {"sql": sql[:120], "buffers": 0, "flags": [], "top": verb}
    analyze = verb in ("SELECT", "WITH")
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN ({options}) {sql}")
        plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        transaction.set_rollback(True)
    root = plan[0]["Plan"]
    flags = []

    def walk(node):
        rows = node.get("Actual Rows", node.get("Plan Rows", 0)) * node.get("Actual Loops", 1)
        relation = node.get("Relation Name")
        if node["Node Type"] == "Seq Scan" and relation in BIG_TABLES:
            flags.append(f"Seq Scan on {relation} ({rows} rows, {node.get('Rows Removed by Filter', 0)} filtered)")
        if node["Node Type"] in ("Sort", "Incremental Sort") and rows > 1000:
            flags.append(f"{node['Node Type']} of {rows} rows")
        if node.get("Rows Removed by Filter", 0) > 1000 and relation in BIG_TABLES:
            flags.append(f"{node['Node Type']} on {relation} filtering out {node['Rows Removed by Filter']} rows")
        for sub in node.get("Plans", []):
            walk(sub)

    walk(root)
    buffers = root.get("Shared Hit Blocks", 0) + root.get("Shared Read Blocks", 0)
    scans = []

    def leaves(node):
        if "Index Name" in node or "Relation Name" in node:
            scans.append(f"{node['Node Type']} {node.get('Index Name') or node.get('Relation Name')}")
        for sub in node.get("Plans", []):
            leaves(sub)

    leaves(root)
    return {"sql": sql[:120], "buffers": buffers, "flags": flags, "top": root["Node Type"],
            "ms": plan[0].get("Execution Time"), "scans": scans}


# --- the report --------------------------------------------------------------------------------------


def report(results: dict, fill: dict, reconcile: float | None, args) -> str:
    empty, big = results["empty"], results["big"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Run {stamp} on {os.cpu_count()} shared cores. The big database: {fill['packets']:,} packets, "
        f"{fill['entries']:,} ledger entries, {GROUPS} groups of {MEMBERS}; the measured user has "
        f"{big['alice_entries']:,} entries (empty: {empty['alice_entries']:,}). In-process (Django test client, "
        f"knox token), each request {args.reps} times in each of {args.rounds} "
        "rounds alternating the databases, warm cache.",
        "",
        "| request | empty median / p95, ms | big median / p95, ms | big / empty (median) | buffers empty → big |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, e in empty.items():
        if not isinstance(e, dict):
            continue
        b = big[name]
        eb, bb = sum(p["buffers"] for p in e["plans"]), sum(p["buffers"] for p in b["plans"])
        lines.append(f"| {name} | {e['median_ms']:.1f} / {e['p95_ms']:.1f} | {b['median_ms']:.1f} / {b['p95_ms']:.1f} "
                     f"| **{b['median_ms'] / e['median_ms']:.2f}x** | {eb} → {bb} |")
    if fill.get("fill_seconds") is not None:
        lines += ["", f"Fill (SQL, bench/fill.py, triggers off for its transactions, 50,000 packets each): "
                      f"{fill['fill_seconds']:.0f} s; `manage.py reconcile` (full) on it: {reconcile:.0f} s, OK."]
    lines += ["", "Plans on the big database (EXPLAIN (ANALYZE, BUFFERS) of every query of one request; "
                  "writes planned only):", ""]
    for name, b in big.items():
        if not isinstance(b, dict):
            continue
        flagged = [f for p in b["plans"] for f in p["flags"]]
        scans = sorted({s for p in b["plans"] for s in p.get("scans", [])})
        lines.append(f"- {name}: {len(b['plans'])} queries; "
                     + ("**" + "; ".join(flagged) + "**; " if flagged else "no scan or sort of many rows; ")
                     + ", ".join(scans))
    lines += [
        "",
        "Target: each request within 1.3x of the empty database. The buffer counts are the part the shared "
        "machine's noise does not touch: a request's pages grow by tens from the empty database to the big "
        "one, not with the tables (the events poll reads its 5 groups' index ranges, 100 rows at most "
        "each; the group's page reads 20 packets and their shares). What moved it: the history "
        "read its wallet through a join (`account__user`), so the planner did not know which account it "
        "reads and walked the ledger's primary key backwards, filtering by account: for a newcomer with one "
        "entry that is every entry of the ledger (at 10M: 10,009,356 index rows, 9.96M buffers, 7.3 s for "
        "one page; the measured user's page was fast only because their entries are 0.5% of all). With the "
        "wallet as a scalar subquery the page is a range of `ledger_entry_account_recent`, 21 rows (17 "
        "buffers for the newcomer). Deep pages were already keyset (the contract's cursor is the entry id), "
        "so the deepest page costs the first page's buffers. The writes' database work, traced with "
        "auto_explain including the ledger and packet triggers (42 statements a send), is about 2 ms in "
        "either database; what a big one adds is index maintenance in pages outside shared_buffers (random "
        "UUID keys), which shows in the writes' p95 more than in their medians.",
        "",
        "Found and left: the claim's `has_free_share` EXISTS took the `claimed_by_id` index (`IS NULL`) and "
        "filtered out every free share of the table instead of the partial `share_free_by_packet`, because "
        "the fill claims every old share and leaves `claimed_by` 0.07% null in the statistics; after "
        "`ANALYZE redpackets_share` it takes the partial index (1.4 ms to 0.15 ms). Real data, with "
        "refunded shares (null `claimed_by`), keeps that fraction high; a fill with refunds would show it. "
        "The run before that ANALYZE measured the claim at 1.33x (11.4 against 8.5 ms), the one here after it.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
