"""tools/verify_packet.py, run as a user runs it: a separate process, no service,
on real API output and on tampered copies of it."""

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from redpackets import allocation, services
from tests.factories import PIN, UserFactory, group_with_members, login

TOOL = Path(settings.BASE_DIR) / "tools" / "verify_packet.py"


def run_tool(packet: dict, commitment: str, *, stdin: bool = False, tmp_path=None):
    if stdin:
        args, data = ["-"], json.dumps(packet)
    else:
        path = tmp_path / "packet.json"
        path.write_text(json.dumps(packet))
        args, data = [str(path)], None
    # -I: isolated from the project (no PYTHONPATH, no site-packages of ours): standard library only.
    return subprocess.run([sys.executable, "-I", str(TOOL), *args, commitment], input=data,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def finished(transactional_db):
    """A finished random packet as the API returns it, and the commitment of its send response."""
    sender = UserFactory(balance=100_000)
    crowd = [UserFactory(pin=None) for _ in range(5)]
    group = group_with_members(sender, crowd)
    client = login(sender)
    sent = client.post("/api/v1/packets", {"group": str(group.id), "kind": "random", "share_count": 5,
                                           "total_amount": 12_345, "pin": PIN}, format="json").json()
    for user in crowd:
        assert login(user).post(f"/api/v1/packets/{sent['id']}/claim").status_code == 201
    return client.get(f"/api/v1/packets/{sent['id']}").json(), sent["commitment"]


@pytest.fixture
def expired(transactional_db):
    sender = UserFactory(balance=100_000)
    crowd = [UserFactory(pin=None) for _ in range(4)]
    group = group_with_members(sender, crowd)
    client = login(sender)
    sent = client.post("/api/v1/packets", {"group": str(group.id), "kind": "random", "share_count": 4,
                                           "total_amount": 50_000, "pin": PIN}, format="json").json()
    login(crowd[0]).post(f"/api/v1/packets/{sent['id']}/claim")
    services.packet_refund_expired(packet_id=sent["id"], force=True)
    return client.get(f"/api/v1/packets/{sent['id']}").json(), sent["commitment"]


def test_a_finished_packet_from_the_api_verifies(finished, tmp_path):
    packet, commitment = finished

    result = run_tool(packet, commitment, tmp_path=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK: packet ")


def test_an_expired_packet_read_from_stdin_verifies(expired):
    packet, commitment = expired

    result = run_tool(packet, commitment, stdin=True)

    assert packet["status"] == "expired" and packet["refunded_amount"] > 0
    assert result.returncode == 0, result.stdout + result.stderr


def tampered(packet, change):
    copied = copy.deepcopy(packet)
    change(copied)
    return copied


def test_a_commitment_other_than_the_one_seen_earlier_fails(finished, tmp_path):
    packet, commitment = finished
    other = "sha256:" + "0" * 64

    result = run_tool(packet, other, tmp_path=tmp_path)

    assert result.returncode == 1
    assert "FAIL: commitment mismatch" in result.stdout


def test_a_swapped_seed_fails_the_commitment_and_the_shares(finished, tmp_path):
    packet, commitment = finished

    result = run_tool(tampered(packet, lambda p: p["proof"].update(seed="ab" * 32)), commitment, tmp_path=tmp_path)

    assert result.returncode == 1
    assert "FAIL: commitment mismatch" in result.stdout
    assert "FAIL: shares do not recompute from the seed" in result.stdout


def test_shares_that_do_not_recompute_fail(finished, tmp_path):
    packet, commitment = finished

    def move_a_unit(p):
        p["proof"]["shares"][0] += 1
        p["proof"]["shares"][1] -= 1

    result = run_tool(tampered(packet, move_a_unit), commitment, tmp_path=tmp_path)

    assert result.returncode == 1
    assert "FAIL: shares do not recompute from the seed: share 0" in result.stdout


def test_a_claim_paid_other_than_its_share_fails(finished, tmp_path):
    packet, commitment = finished

    result = run_tool(tampered(packet, lambda p: p["claims"][2].update(amount=p["claims"][2]["amount"] + 1)),
                      commitment, tmp_path=tmp_path)

    assert result.returncode == 1
    assert f"FAIL: claim of {packet['claims'][2]['user']}: amount" in result.stdout


def test_duplicate_share_indices_fail(finished, tmp_path):
    packet, commitment = finished

    def duplicate(p):
        p["claims"][1]["share_index"] = p["claims"][0]["share_index"]
        p["claims"][1]["amount"] = p["claims"][0]["amount"]

    result = run_tool(tampered(packet, duplicate), commitment, tmp_path=tmp_path)

    assert result.returncode == 1
    assert f"FAIL: duplicate share_index {packet['claims'][0]['share_index']}" in result.stdout


def test_a_refund_other_than_the_unclaimed_shares_fails(expired, tmp_path):
    packet, commitment = expired

    result = run_tool(tampered(packet, lambda p: p.update(refunded_amount=p["refunded_amount"] - 1)),
                      commitment, tmp_path=tmp_path)

    assert result.returncode == 1
    assert "FAIL: refunded_amount" in result.stdout


def test_a_packet_without_a_proof_cannot_be_verified_yet(finished, tmp_path):
    packet, commitment = finished

    result = run_tool(tampered(packet, lambda p: p.update(proof=None, status="active")), commitment, tmp_path=tmp_path)

    assert result.returncode == 2
    assert result.stdout.startswith("CANNOT VERIFY: the packet has no proof yet")


# --- the verifier's copy of rp-split-v1 is the service's -------------------------------------------


def load_tool():
    spec = importlib.util.spec_from_file_location("verify_packet", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=100).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(min_value=1, max_value=20000)).flatmap(
            lambda nc: st.tuples(st.just(nc[0]), st.just(nc[1]), st.integers(min_value=nc[0], max_value=nc[0] * nc[1]))
        )
    ),
    st.binary(min_size=32, max_size=32),
)
def test_the_verifier_splits_exactly_as_the_service(terms, seed):
    count, cap, total = terms

    assert tool.split(total, count, cap, seed) == allocation.split_random(
        total=total, share_count=count, cap=cap, seed=seed
    )
    assert tool.commitment("p", total, count, cap, seed.hex()) == allocation.commitment(
        packet_id="p", total=total, share_count=count, cap=cap, seed=seed
    )
