"""Fill the database fast with consistent packets: one SQL statement per table, no ORM.

Used by bench/sweep.py and bench/scale.py. `fill_packets` adds `count` fixed packets
of `shares` shares of 100, `claimed` of them claimed, as if sent by `senders` and
claimed by `claimers` (wallet users of one group): the packet_send and packet_claim
ledger transactions and entries with each wallet's balance_after chain, the share
rows, the packets, and the wallets' stored balances, consistent by construction.

The rows are written in one transaction with `session_replication_role = replica`
(the database's own triggers off while loading: they check row by row what is
true by construction here, and would make the load 50× slower); every trigger is
back on afterwards, for the real sweep and claims the benches then run, and
`manage.py reconcile` checks the result in the benches that time it.
"""

import uuid
from datetime import datetime

from django.db import connection, transaction

SHARE = 100


def fill_packets(*, count: int, shares: int, claimed: int, group_id: uuid.UUID, senders: list[int],
                 claimers: list[int], escrow_id: int, created_at: datetime, expires_first: datetime,
                 expires_step_ms: float, settled: bool = False, created_step_ms: float = 0) -> None:
    """`count` packets expiring from `expires_first`, one every `expires_step_ms` (in
    sending order), sent from `created_at` one every `created_step_ms`; with `settled`,
    already refunded (history, not sweep work)."""
    assert 0 <= claimed <= shares and claimed <= len(claimers)
    params = {
        "n": count, "shares": shares, "claimed": claimed, "share": SHARE, "group": str(group_id),
        "senders": senders, "claimers": claimers, "escrow": escrow_id, "created": created_at,
        "expires": expires_first, "step": expires_step_ms, "settled": settled,
        "created_step": created_step_ms,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("""
            CREATE TEMP TABLE fill_packet ON COMMIT DROP AS
            SELECT n, gen_random_uuid() AS id, gen_random_uuid() AS send_tx,
                   (%(senders)s::int[])[1 + (n - 1) %% cardinality(%(senders)s::int[])] AS sender,
                   %(expires)s::timestamptz + (n * %(step)s) * interval '1 millisecond' AS expires_at,
                   %(created)s::timestamptz + (n * %(created_step)s) * interval '1 millisecond' AS created_at
            FROM generate_series(1, %(n)s) AS n
        """, params)
        cursor.execute("""
            CREATE TEMP TABLE fill_share ON COMMIT DROP AS
            SELECT p.n, p.id AS packet_id, p.created_at, s.seq,
                   CASE WHEN s.seq < %(claimed)s
                        THEN (%(claimers)s::int[])[1 + (p.n * %(claimed)s + s.seq) %% cardinality(%(claimers)s::int[])]
                   END AS claimer,
                   CASE WHEN s.seq < %(claimed)s THEN gen_random_uuid() END AS claim_tx
            FROM fill_packet p CROSS JOIN generate_series(0, %(shares)s - 1) AS s(seq)
        """, params)
        # Every posting, in the order it happened: the send, then the packet's claims.
        cursor.execute("""
            CREATE TEMP TABLE fill_leg ON COMMIT DROP AS
            SELECT row_number() OVER (ORDER BY n, step, leg) AS ord, * FROM (
                SELECT p.n, -1 AS step, 0 AS leg, p.send_tx AS tx, 'packet_send' AS kind, p.id AS packet_id,
                       p.sender AS user_id, w.id AS account, -(%(shares)s * %(share)s)::bigint AS amount,
                       p.created_at
                FROM fill_packet p JOIN wallets_account w ON w.user_id = p.sender
                UNION ALL
                SELECT p.n, -1, 1, p.send_tx, 'packet_send', p.id, p.sender, %(escrow)s, %(shares)s * %(share)s,
                       p.created_at
                FROM fill_packet p
                UNION ALL
                SELECT s.n, s.seq, 0, s.claim_tx, 'packet_claim', s.packet_id, s.claimer, w.id, %(share)s, s.created_at
                FROM fill_share s JOIN wallets_account w ON w.user_id = s.claimer WHERE s.claimer IS NOT NULL
                UNION ALL
                SELECT s.n, s.seq, 1, s.claim_tx, 'packet_claim', s.packet_id, s.claimer, %(escrow)s, -%(share)s,
                       s.created_at
                FROM fill_share s WHERE s.claimer IS NOT NULL
            ) legs
        """, params)
        cursor.execute("""
            INSERT INTO wallets_ledgertransaction (id, kind, packet_id, memo, created_by_id, created_at)
            SELECT DISTINCT ON (tx) tx, kind, packet_id, '', user_id, created_at FROM fill_leg ORDER BY tx
        """, params)
        cursor.execute("SELECT COALESCE(max(id), 0) FROM wallets_ledgerentry")
        (base,) = cursor.fetchone()
        cursor.execute("""
            INSERT INTO wallets_ledgerentry (id, transaction_id, account_id, amount, balance_after)
            SELECT %(base)s + l.ord, l.tx, l.account, l.amount,
                   CASE WHEN l.account <> %(escrow)s
                        THEN a.balance + sum(l.amount) OVER (PARTITION BY l.account ORDER BY l.ord) END
            FROM fill_leg l JOIN wallets_account a ON a.id = l.account
        """, {**params, "base": base})
        cursor.execute("SELECT setval(pg_get_serial_sequence('wallets_ledgerentry', 'id'), "
                       "(SELECT max(id) FROM wallets_ledgerentry))")
        cursor.execute("""
            UPDATE wallets_account a SET balance = a.balance + d.delta
            FROM (SELECT account, sum(amount) AS delta FROM fill_leg WHERE account <> %(escrow)s GROUP BY account) d
            WHERE a.id = d.account
        """, params)
        cursor.execute("""
            INSERT INTO redpackets_packet (id, group_id, sender_id, recipient_id, kind, greeting, hint, currency,
                total_amount, share_count, escrow_account_id, created_at, expires_at, settled_at, refunded_amount)
            SELECT id, %(group)s::uuid, sender, NULL, 'fixed', '', '', 'CNY', %(shares)s * %(share)s, %(shares)s,
                   %(escrow)s, created_at, expires_at, NULL, 0
            FROM fill_packet
        """, params)
        cursor.execute("""
            INSERT INTO redpackets_share (packet_id, seq, amount, claimed_by_id, claimed_at, claim_transaction_id,
                                          refunded)
            SELECT packet_id, seq, %(share)s, claimer, CASE WHEN claimer IS NOT NULL THEN created_at END, claim_tx,
                   false
            FROM fill_share ORDER BY n, seq
        """, params)
    if settled:
        _settle_all_fast()
    analyze()


def analyze() -> None:
    """Fresh planner statistics: with the empty tables' figures PostgreSQL plans scans where
    one key look-up does (the claim's and refund's triggers, the sweep's pick)."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE wallets_account, wallets_ledgertransaction, wallets_ledgerentry, "
                       "redpackets_packet, redpackets_share, redpackets_groupmembership")


def _settle_all_fast() -> None:
    """Refund every unsettled packet in SQL (history for bench/scale.py): the packet_refund
    postings, the shares marked, the packets settled; triggers off as above."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("""
            CREATE TEMP TABLE fill_refund ON COMMIT DROP AS
            SELECT p.id AS packet_id, p.sender_id, p.escrow_account_id AS escrow, p.expires_at,
                   gen_random_uuid() AS tx, sum(s.amount) AS amount,
                   row_number() OVER (ORDER BY p.expires_at, p.id) AS ord
            FROM redpackets_packet p JOIN redpackets_share s ON s.packet_id = p.id
            WHERE p.settled_at IS NULL AND s.claimed_by_id IS NULL AND NOT s.refunded
            GROUP BY p.id
        """)
        cursor.execute("""
            INSERT INTO wallets_ledgertransaction (id, kind, packet_id, memo, created_by_id, created_at)
            SELECT tx, 'packet_refund', packet_id, 'unclaimed shares', NULL, expires_at FROM fill_refund
        """)
        cursor.execute("SELECT COALESCE(max(id), 0) FROM wallets_ledgerentry")
        (base,) = cursor.fetchone()
        cursor.execute("""
            INSERT INTO wallets_ledgerentry (id, transaction_id, account_id, amount, balance_after)
            SELECT %(base)s + 2 * r.ord - 1, r.tx, w.id, r.amount,
                   w.balance + sum(r.amount) OVER (PARTITION BY w.id ORDER BY r.ord)
            FROM fill_refund r JOIN wallets_account w ON w.user_id = r.sender_id
            UNION ALL
            SELECT %(base)s + 2 * r.ord, r.tx, r.escrow, -r.amount, NULL FROM fill_refund r
        """, {"base": base})
        cursor.execute("SELECT setval(pg_get_serial_sequence('wallets_ledgerentry', 'id'), "
                       "(SELECT max(id) FROM wallets_ledgerentry))")
        cursor.execute("""
            UPDATE wallets_account w SET balance = w.balance + d.amount
            FROM (SELECT sender_id, sum(amount) AS amount FROM fill_refund GROUP BY sender_id) d
            WHERE w.user_id = d.sender_id
        """)
        cursor.execute("""
            UPDATE redpackets_share s SET refunded = true FROM fill_refund r
            WHERE s.packet_id = r.packet_id AND s.claimed_by_id IS NULL AND NOT s.refunded
        """)
        cursor.execute("""
            UPDATE redpackets_packet p SET settled_at = r.expires_at, refunded_amount = r.amount
            FROM fill_refund r WHERE p.id = r.packet_id
        """)
        # The rest had every share claimed: settled with nothing to refund, as the sweep does.
        cursor.execute("UPDATE redpackets_packet SET settled_at = expires_at WHERE settled_at IS NULL")


def fill_events() -> None:
    """The outbox history of every packet that has none yet: its packet.sent, and for a settled
    one its end (packet.finished, or packet.expired when it refunded), with feed positions in
    time order after the ones already given; the relay's work list stays empty."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("""
            INSERT INTO events_event (type, group_id, subject, data, created_at, unique_key, position)
            SELECT e.type, e.group_id, e.subject, e.data, e.at, e.unique_key,
                   (SELECT COALESCE(max(position), 0) FROM events_event) + row_number() OVER (ORDER BY e.at, e.type)
            FROM redpackets_packet p
            CROSS JOIN LATERAL (VALUES
                ('packet.sent', p.created_at, NULL),
                (CASE WHEN p.refunded_amount > 0 THEN 'packet.expired' ELSE 'packet.finished' END, p.settled_at,
                 'packet-end:' || p.id)
            ) AS v(type, at, unique_key)
            CROSS JOIN LATERAL (SELECT v.type, p.group_id, p.id::text AS subject, v.at, v.unique_key,
                jsonb_build_object('packet', jsonb_build_object(
                    'id', p.id, 'group', p.group_id, 'sender', p.sender_id, 'kind', p.kind,
                    'total_amount', p.total_amount, 'share_count', p.share_count,
                    'created_at', p.created_at, 'expires_at', p.expires_at)) AS data) e
            WHERE e.at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events_event x WHERE x.subject = p.id::text)
        """)
        cursor.execute("ANALYZE events_event")
