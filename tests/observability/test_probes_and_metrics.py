"""/healthz, /readyz and /metrics in-process: the contract's shapes, the token, every metric, each claim outcome."""

import socket
from datetime import timedelta
from unittest import mock

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from redpackets.models import Packet, PacketKind
from redpackets.services import packet_claim, packet_refund_expired, packet_send
from redpackets.tasks import refund_expired_packets
from tests.factories import UserFactory, group_with_members, login

CONTRACT_METRICS = {
    "redpacket_claims": "counter",
    "redpacket_claim_duration_seconds": "histogram",
    "redpacket_sends": "counter",
    "redpacket_refunds": "counter",
    "redpacket_refunded_amount": "counter",
    "redpacket_oldest_unsettled_expired_seconds": "gauge",
    "webhook_deliveries": "counter",
    "event_outbox_pending": "gauge",
}


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """Every sample of GET /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def sent_expired(sender, group, *, seconds_ago: int, share_count: int) -> Packet:
    """A fixed packet of 150 a share that expired `seconds_ago` (a trigger keeps expires_at as sent)."""
    moment = timezone.now() - timedelta(seconds=seconds_ago + 60)
    with mock.patch("django.utils.timezone.now", return_value=moment), override_settings(REDPACKET_TTL_SECONDS=60):
        return packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=share_count,
                           share_amount=150)


def claims(samples, outcome: str) -> float:
    return samples[("redpacket_claims_total", (("outcome", outcome),))]


def test_healthz_answers_without_a_token_or_the_database(client):
    # (no django_db mark: any query would raise here)
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
@pytest.mark.redis
def test_readyz_answers_ok_for_both_when_database_and_broker_answer(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_readyz_marks_a_broker_nobody_listens_on(client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connections are refused
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0"):
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "unavailable"}


@pytest.mark.django_db
def test_readyz_marks_a_hung_broker_within_its_timeout(client):
    # Given a "Redis" that accepts connections (the kernel's backlog) and never answers
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        port = hung.getsockname()[1]

        with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0", READINESS_TIMEOUT_SECONDS=0.2):
            response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "unavailable"}


@pytest.mark.django_db
def test_metrics_lists_every_metric_of_the_contract_with_its_type(client):
    response = client.get("/metrics")

    families = {f.name: f.type for f in text_string_to_metric_families(response.content.decode())}
    assert {name: families.get(name) for name in CONTRACT_METRICS} == CONTRACT_METRICS
    samples = scrape(client)
    for outcome in ("paid", "repeat", "exhausted", "expired", "rejected"):
        assert claims(samples, outcome) >= 0


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="s3cret-scrape-token")
def test_metrics_with_a_token_set_needs_it_as_a_bearer_token(client):
    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-tokeN")
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "not_authenticated"
        assert refused["WWW-Authenticate"].startswith("Bearer")
    assert right.status_code == 200
    assert b"redpacket_claims_total" in right.content


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="", METRICS_TOKEN_REQUIRED=True)
def test_metrics_required_but_without_a_token_refuse_every_scrape(client):
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer ")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.django_db
def test_each_claim_outcome_is_counted_once_and_timed(client):
    # Given a one-share packet, an expired packet and a packet of another group
    sender = UserFactory(balance=100_000)
    first, second = UserFactory(), UserFactory()
    group = group_with_members(sender, [first, second])
    hot = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=100)
    stale = sent_expired(sender, group, seconds_ago=1, share_count=1)
    outsider = UserFactory()
    before = scrape(client)

    # When a member claims, claims again, a second member finds it exhausted, claims the expired one,
    # and an outsider claims
    answers = [
        login(first).post(f"/api/v1/packets/{hot.id}/claim").status_code,
        login(first).post(f"/api/v1/packets/{hot.id}/claim").status_code,
        login(second).post(f"/api/v1/packets/{hot.id}/claim").status_code,
        login(second).post(f"/api/v1/packets/{stale.id}/claim").status_code,
        login(outsider).post(f"/api/v1/packets/{hot.id}/claim").status_code,
    ]
    after = scrape(client)

    # Then each outcome went up by one, and the histogram saw five claims
    assert answers == [201, 200, 409, 410, 404]
    for outcome in ("paid", "repeat", "exhausted", "expired", "rejected"):
        assert claims(after, outcome) - claims(before, outcome) == 1, outcome
    count = ("redpacket_claim_duration_seconds_count", ())
    assert after[count] - before[count] == 5


@pytest.mark.django_db
def test_sends_refunds_and_the_sweep_lag_are_counted(client, django_capture_on_commit_callbacks):
    # Given a packet sent and expired five minutes ago, not yet refunded
    sender, member = UserFactory(balance=100_000), UserFactory()
    group = group_with_members(sender, [member])
    before = scrape(client)
    with django_capture_on_commit_callbacks(execute=True):  # the test's transaction stands for the commits
        packet = sent_expired(sender, group, seconds_ago=300, share_count=2)
    lagging = scrape(client)

    # When the sweep refunds it (and a second run finds nothing to do)
    with django_capture_on_commit_callbacks(execute=True):
        packet_refund_expired(packet_id=packet.id)
        packet_refund_expired(packet_id=packet.id)
    after = scrape(client)

    # Then one send, one refund of 300 and a lag of about five minutes that is gone after
    assert after[("redpacket_sends_total", ())] - before[("redpacket_sends_total", ())] == 1
    assert after[("redpacket_refunds_total", ())] - before[("redpacket_refunds_total", ())] == 1
    assert after[("redpacket_refunded_amount_total", ())] - before[("redpacket_refunded_amount_total", ())] == 300
    assert 299 <= lagging[("redpacket_oldest_unsettled_expired_seconds", ())] <= 400
    assert after[("redpacket_oldest_unsettled_expired_seconds", ())] == 0


@pytest.mark.django_db
def test_a_sweep_batch_counts_each_refund_it_posted_and_none_for_a_packet_claimed_out(
    client, django_capture_on_commit_callbacks
):
    # Given three expired packets, one of them claimed out before it expired
    sender, member = UserFactory(balance=100_000), UserFactory()
    group = group_with_members(sender, [member])
    refunded = [sent_expired(sender, group, seconds_ago=30, share_count=2) for _ in range(2)]
    claimed_out = sent_expired(sender, group, seconds_ago=30, share_count=1)
    with mock.patch("django.utils.timezone.now", return_value=claimed_out.expires_at - timedelta(seconds=1)):
        packet_claim(packet_id=claimed_out.id, user=member)
    before = scrape(client)

    # When one sweep settles them in one batch
    with django_capture_on_commit_callbacks(execute=True):
        assert refund_expired_packets() == 3
    after = scrape(client)

    # Then two refunds of 300 each were counted, and nothing for the claimed-out packet
    assert len(refunded) == 2
    assert after[("redpacket_refunds_total", ())] - before[("redpacket_refunds_total", ())] == 2
    assert after[("redpacket_refunded_amount_total", ())] - before[("redpacket_refunded_amount_total", ())] == 600


@pytest.mark.django_db
def test_a_send_that_rolls_back_with_its_request_is_not_counted(client, django_capture_on_commit_callbacks):
    from django.db import transaction

    sender, member = UserFactory(balance=100_000), UserFactory()
    group = group_with_members(sender, [member])
    before = scrape(client)

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=1, share_amount=100)
        raise RuntimeError("the idempotency record failed")

    assert scrape(client)[("redpacket_sends_total", ())] == before[("redpacket_sends_total", ())]


@pytest.mark.django_db
@override_settings(WEBHOOK_RETRY_SECONDS=[0])
def test_webhook_attempts_are_counted_by_outcome_and_the_outbox_backlog_is_shown(
        client, django_capture_on_commit_callbacks):
    from events.services import events_relay, webhook_endpoint_create
    from tests.events.receiver import Receiver
    from tests.events.test_webhooks import attempt_all, new_secret, one_event

    def deliveries(samples, outcome):
        return samples[("webhook_deliveries_total", (("outcome", outcome),))]

    # Given an endpoint that fails every attempt, and one event for it
    with Receiver(secret := new_secret(), plan=lambda attempt, headers: (500, {}, 0)) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        one_event()
        before = scrape(client)
        assert before[("event_outbox_pending", ())] >= 1  # recorded, not yet relayed

        # When it is relayed and both allowed attempts fail
        events_relay()
        with django_capture_on_commit_callbacks(execute=True):
            assert attempt_all(endpoint) == [False, False]
    after = scrape(client)

    # Then one retry and one failure were counted, and nothing is left in the outbox
    assert deliveries(after, "retrying") - deliveries(before, "retrying") == 1
    assert deliveries(after, "failed") - deliveries(before, "failed") == 1
    assert deliveries(after, "delivered") == deliveries(before, "delivered")
    assert after[("event_outbox_pending", ())] == 0
