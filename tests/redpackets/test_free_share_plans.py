"""The claim path's free-share look-ups stay on the packet's own range when old shares are nearly all
claimed, as a year of data makes them (bench/scale.py found the planner scanning every free share of
the table through the claimed_by index instead). The claim's own read asks the same EXISTS."""

import pytest
from django.db import connection

from redpackets import services
from tests.factories import UserFactory, group_with_members

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

OLD_CLAIMED_SHARES = 200_000


def plan(sql: str, params: list) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_any_free_share_reads_the_packets_free_range_when_few_shares_are_free():
    sender = UserFactory(balance=100_000)
    group = group_with_members(sender, [UserFactory() for _ in range(3)])
    new = services.packet_send(sender=sender, group_id=group.id, kind="fixed", share_count=3, total_amount=None,
                               share_amount=1, greeting="", recipient_username=None, passphrase=None, hint="")
    with connection.cursor() as cursor:
        # A year of claimed shares of other packets, written in bulk as bench/fill.py does: the share triggers and
        # the foreign keys (triggers too) are off for this session only; the CHECK constraints still hold.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            "INSERT INTO redpackets_share (packet_id, seq, amount, claimed_by_id, claimed_at, claim_transaction_id,"
            " refunded) SELECT gen_random_uuid(), 0, 1, 1000000 + n, now(), gen_random_uuid(), false"
            " FROM generate_series(1, %s) n",
            [OLD_CLAIMED_SHARES],
        )
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("ANALYZE redpackets_share")

    explained = plan(services._ANY_FREE_SHARE, [new.id])

    assert "share_free_by_packet" in explained, explained
    with connection.cursor() as cursor:
        cursor.execute(services._ANY_FREE_SHARE, [new.id])
        assert cursor.fetchone()[0] is True
