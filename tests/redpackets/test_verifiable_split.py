"""The verifiable split through the API: the commitment from the send response on,
the proof and share numbers once the packet is finished or expired, and a proof
that checks out against what was paid."""

import hashlib
import re

import pytest

from redpackets import allocation, services
from tests.assertions import integers_in
from tests.factories import UserFactory, group_with_members, login
from wallets.models import Account, AccountKind

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sender():
    return UserFactory(balance=1_000_000)


@pytest.fixture
def members():
    return [UserFactory(pin=None) for _ in range(4)]


@pytest.fixture
def group(sender, members):
    return group_with_members(sender, members)


def send(client, group, **body):
    response = client.post(
        "/api/v1/packets", {"group": str(group.id), "pin": "246810", **body}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def view(client, packet_id) -> dict:
    response = client.get(f"/api/v1/packets/{packet_id}")
    assert response.status_code == 200, response.content
    return response.json()


def claim(user, packet_id):
    return login(user).post(f"/api/v1/packets/{packet_id}/claim")


def recomputed_commitment(body: dict) -> str:
    proof = body["proof"]
    text = f"rp-split-v1\n{body['id']}\n{body['total_amount']}\n{body['share_count']}\n{proof['cap']}\n{proof['seed']}"
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_a_random_packet_shows_its_commitment_from_the_send_response_and_no_proof_while_active(sender, members, group):
    client = login(sender)

    sent = send(client, group, kind="random", share_count=3, total_amount=1000)
    claim(members[0], sent["id"])
    active = view(login(members[1]), sent["id"])

    assert re.fullmatch(r"sha256:[0-9a-f]{64}", sent["commitment"])
    assert active["commitment"] == sent["commitment"]
    assert active["status"] == "active"
    assert active["proof"] is None
    assert [c["share_index"] for c in active["claims"]] == [None]


def test_a_finished_packets_proof_recomputes_and_each_claim_took_its_numbered_share(sender, members, group):
    sent = send(login(sender), group, kind="random", share_count=4, total_amount=8888)

    paid = [claim(user, sent["id"]).json()["amount"] for user in members]
    body = view(login(members[0]), sent["id"])

    assert body["status"] == "finished"
    proof = body["proof"]
    assert proof["algorithm"] == "rp-split-v1"
    assert re.fullmatch(r"[0-9a-f]{64}", proof["seed"])
    assert proof["cap"] == 20000
    assert recomputed_commitment(body) == sent["commitment"]
    assert proof["shares"] == allocation.split_random(
        total=8888, share_count=4, cap=proof["cap"], seed=bytes.fromhex(proof["seed"])
    )
    # One claim after another: each takes the lowest free share number.
    assert [c["share_index"] for c in body["claims"]] == [0, 1, 2, 3]
    assert [c["amount"] for c in body["claims"]] == paid
    assert all(c["amount"] == proof["shares"][c["share_index"]] for c in body["claims"])


def test_an_expired_packets_proof_shows_the_refunded_shares_too(sender, members, group):
    sent = send(login(sender), group, kind="random", share_count=4, total_amount=5000)
    claim(members[0], sent["id"])
    services.packet_refund_expired(packet_id=sent["id"], force=True)

    body = view(login(sender), sent["id"])

    assert body["status"] == "expired"
    shares = body["proof"]["shares"]
    assert recomputed_commitment(body) == sent["commitment"]
    assert len(shares) == 4 and sum(shares) == 5000
    (only,) = body["claims"]
    assert only["share_index"] == 0 and only["amount"] == shares[0]
    assert body["refunded_amount"] == sum(shares[1:])
    assert Account.objects.get(user=sender, kind=AccountKind.WALLET).balance == 1_000_000 - shares[0]


def test_a_fixed_packet_has_no_commitment_and_no_proof(sender, members, group):
    sent = send(login(sender), group, kind="fixed", share_count=2, share_amount=300)
    for user in members[:2]:
        claim(user, sent["id"])

    body = view(login(sender), sent["id"])

    assert sent["commitment"] is None
    assert body["status"] == "finished"
    assert body["commitment"] is None and body["proof"] is None
    assert [c["share_index"] for c in body["claims"]] == [None, None]


def test_the_seed_is_not_in_any_response_before_the_packet_settles(sender, members, group):
    client = login(sender)
    sent = send(client, group, kind="random", share_count=3, total_amount=3000)
    claim(members[0], sent["id"])
    seed = bytes(services.Packet.objects.get(id=sent["id"]).split_seed).hex()

    bodies = [
        sent, view(client, sent["id"]), view(login(members[1]), sent["id"]),
        client.get(f"/api/v1/groups/{group.id}/packets").json(),
    ]

    for body in bodies:
        assert seed not in str(body)
        assert int(seed[:16], 16) not in integers_in(body)


def test_the_split_of_a_sent_packet_is_rp_split_v1_of_its_stored_seed(sender, group):
    sent = send(login(sender), group, kind="random", share_count=5, total_amount=77_777)

    packet = services.Packet.objects.get(id=sent["id"])
    stored = list(packet.shares.order_by("seq").values_list("amount", flat=True))

    assert len(bytes(packet.split_seed)) == 32
    assert packet.share_cap == 20000
    assert stored == allocation.split_random(total=77_777, share_count=5, cap=20000, seed=bytes(packet.split_seed))
    assert sent["commitment"] == allocation.commitment(
        packet_id=sent["id"], total=77_777, share_count=5, cap=20000, seed=bytes(packet.split_seed)
    )


def test_the_cap_in_force_at_send_is_the_one_committed(sender, group, settings):
    settings.REDPACKET_MAX_SHARE = 500
    sent = send(login(sender), group, kind="random", share_count=3, total_amount=1400)
    settings.REDPACKET_MAX_SHARE = 20000

    services.packet_refund_expired(packet_id=sent["id"], force=True)
    body = view(login(sender), sent["id"])

    assert body["proof"]["cap"] == 500
    assert max(body["proof"]["shares"]) <= 500
    assert recomputed_commitment(body) == sent["commitment"]
