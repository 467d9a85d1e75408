"""A claim that finds no free share in its first read answers at once, with no row locks.

Most claimers of a hot packet arrive after its shares are gone; their answer comes
from the claim's one read (services._CLAIM_CONTEXT) instead of a transaction that
tries to take a share, fails, waits and rolls back.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from redpackets import services
from tests.assertions import assert_error
from tests.factories import UserFactory, group_with_members, login
from wallets.models import Account, AccountKind

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sender():
    return UserFactory(balance=100_000)


@pytest.fixture
def members():
    return [UserFactory(pin=None) for _ in range(3)]


@pytest.fixture
def packet(sender, members):
    group = group_with_members(sender, members)
    return services.packet_send(sender=sender, group_id=group.id, kind="random", share_count=2, total_amount=1000)


def claim(user, packet):
    return login(user).post(f"/api/v1/packets/{packet.id}/claim")


def balance(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def test_a_claim_after_the_last_share_is_refused_without_touching_a_share(members, packet):
    alice, bob, carol = members
    assert claim(alice, packet).status_code == claim(bob, packet).status_code == 201
    client = login(carol)

    with CaptureQueriesContext(connection) as queries:
        response = client.post(f"/api/v1/packets/{packet.id}/claim")

    assert_error(response, 409, "packet_exhausted")
    statements = " ".join(q["sql"] for q in queries.captured_queries).upper()
    assert "UPDATE" not in statements and "FOR UPDATE" not in statements
    assert balance(carol) == 0


def test_a_claim_of_a_packet_the_admin_expired_early_is_refused_as_expired(sender, members, packet):
    alice, bob, _ = members
    first = claim(alice, packet)
    refunded = services.packet_refund_expired(packet_id=packet.id, force=True)  # the admin's "expire now"

    response = claim(bob, packet)

    assert_error(response, 410, "packet_expired")
    assert refunded == 1000 - first.json()["amount"]
    assert balance(bob) == 0


def test_the_claimer_of_an_exhausted_packet_still_gets_their_claim_back(members, packet):
    alice, bob, _ = members
    first = claim(alice, packet)
    claim(bob, packet)

    again = claim(alice, packet)

    assert again.status_code == 200
    assert again.json() == first.json()
