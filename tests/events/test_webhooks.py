"""Webhook delivery, attempt by attempt, against a local receiver that checks signatures
with the `standardwebhooks` package: retries, failures, redirects, 410, Retry-After, SSRF."""

import base64
import json
import secrets
import socket
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from config.errors import ValidationFailed
from events.models import Delivery, DeliveryAttempt, DeliveryState, Event, EventType, WebhookEndpoint
from events.services import (
    delivery_attempt,
    delivery_lease_next,
    endpoint_redeliver_failed,
    event_record,
    event_redeliver,
    events_relay,
    webhook_endpoint_create,
)
from tests.events.receiver import Receiver
from tests.factories import UserFactory, group_with_members

pytestmark = pytest.mark.django_db


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def one_event(type=EventType.GROUP_MEMBER_ADDED) -> Event:
    owner = UserFactory()
    group = group_with_members(owner, [])
    Event.objects.filter(group_id=group.id).delete()
    from django.db import transaction

    with transaction.atomic():
        pk = event_record(type=type, group_id=group.id, data={"group": str(group.id), "user": owner.username})
    return Event.objects.get(pk=pk)


def attempt_all(endpoint, rounds=10) -> list:
    """Lease and send what is due for the endpoint, as the delivery task does."""
    outcomes = []
    for _ in range(rounds):
        lease = delivery_lease_next(endpoint_id=endpoint.id)
        if lease is None:
            break
        outcomes.append(delivery_attempt(delivery_id=lease[0], token=lease[1]))
    return outcomes


def test_a_delivery_carries_the_event_signed_by_both_secrets_during_a_rotation():
    # Given an endpoint in the middle of a secret rotation
    new, old = new_secret(), new_secret()
    with Receiver(new) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=new)
        WebhookEndpoint.objects.filter(id=endpoint.id).update(previous_secret=old)
        event = one_event()

        # When the relay fans the event out and it is sent
        events_relay()
        assert attempt_all(endpoint) == [True]

    # Then the receiver got the event body, verified with the new secret and with the old one
    (got,) = receiver.received
    assert got.verified
    assert Webhook(old).verify(got.body, got.headers) == got.event
    assert got.headers["webhook-id"] == event.public_id
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert got.event == {"id": event.public_id, "type": "group.member_added",
                         "timestamp": got.event["timestamp"], "data": event.data}
    assert got.headers["content-type"] == "application/json"
    assert Delivery.objects.get(event=event).state == DeliveryState.DELIVERED


@override_settings(WEBHOOK_RETRY_SECONDS=[0, 0])
def test_failures_are_retried_with_the_same_id_and_body_then_marked_failed():
    with Receiver(secret := new_secret(), plan=lambda attempt, headers: (500, {}, 0)) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        event = one_event()
        events_relay()
        assert attempt_all(endpoint) == [False, False, False]

    assert {r.headers["webhook-id"] for r in receiver.received} == {event.public_id}
    assert len({r.body for r in receiver.received}) == 1
    delivery = Delivery.objects.get(event=event)
    assert (delivery.state, delivery.attempts) == (DeliveryState.FAILED, 3)
    log = list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("id"))
    assert [a.status_code for a in log] == [500, 500, 500]
    assert all(a.response_excerpt == "ok" and not a.succeeded for a in log)


@override_settings(WEBHOOK_RETRY_SECONDS=[60, 60])
def test_the_next_attempt_waits_for_the_schedules_delay():
    with Receiver(secret := new_secret(), plan=lambda attempt, headers: (502, {}, 0)) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        event = one_event()
        events_relay()
        assert attempt_all(endpoint) == [False]  # not due again for a minute

    delivery = Delivery.objects.get(event=event)
    assert delivery.state == DeliveryState.PENDING
    assert timedelta(seconds=55) < delivery.next_attempt_at - timezone.now() <= timedelta(seconds=60)


@override_settings(WEBHOOK_RETRY_SECONDS=[1])
def test_retry_after_on_429_is_respected():
    plan = lambda attempt, headers: (429, {"Retry-After": "120"}, 0)  # noqa: E731
    with Receiver(secret := new_secret(), plan=plan) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        event = one_event()
        events_relay()
        attempt_all(endpoint)

    delivery = Delivery.objects.get(event=event)
    assert delivery.next_attempt_at - timezone.now() > timedelta(seconds=115)


def test_a_redirect_is_a_failure_and_is_not_followed():
    plan = lambda attempt, headers: (302, {"Location": "/elsewhere"}, 0)  # noqa: E731
    with Receiver(secret := new_secret(), plan=plan) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        one_event()
        events_relay()
        assert attempt_all(endpoint) == [False]

    assert [r.path for r in receiver.received] == ["/hooks"]
    assert DeliveryAttempt.objects.get().status_code == 302


def test_410_gone_disables_the_endpoint():
    with Receiver(secret := new_secret(), plan=lambda attempt, headers: (410, {}, 0)) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        event = one_event()
        events_relay()
        attempt_all(endpoint)
        one_event()
        events_relay()  # a later event: no delivery to a disabled endpoint

    endpoint.refresh_from_db()
    assert endpoint.disabled_at is not None and "410" in endpoint.disabled_reason
    assert Delivery.objects.get(event=event).state == DeliveryState.FAILED
    assert Delivery.objects.filter(endpoint=endpoint).count() == 1
    assert len(receiver.received) == 1


@override_settings(WEBHOOK_TIMEOUT_SECONDS=0.5, WEBHOOK_RETRY_SECONDS=[0])
def test_an_answer_slower_than_the_timeout_is_a_failure():
    plan = lambda attempt, headers: (200, {}, 1.5 if attempt == 1 else 0)  # noqa: E731
    with Receiver(secret := new_secret(), plan=plan) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        event = one_event()
        events_relay()
        assert attempt_all(endpoint) == [False, True]

    first, second = DeliveryAttempt.objects.filter(delivery__event=event).order_by("id")
    assert "timed out" in first.error and first.status_code is None
    assert second.succeeded and second.status_code == 200


def test_an_endpoint_failing_every_attempt_for_days_is_disabled():
    with Receiver(secret := new_secret(), plan=lambda attempt, headers: (500, {}, 0)) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        WebhookEndpoint.objects.filter(id=endpoint.id).update(failing_since=timezone.now() - timedelta(days=6))
        one_event()
        events_relay()
        attempt_all(endpoint, rounds=1)

    endpoint.refresh_from_db()
    assert endpoint.disabled_at is not None and "days" in endpoint.disabled_reason


def test_a_success_clears_the_failing_streak():
    with Receiver(secret := new_secret()) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        WebhookEndpoint.objects.filter(id=endpoint.id).update(failing_since=timezone.now() - timedelta(days=1))
        one_event()
        events_relay()
        attempt_all(endpoint)

    endpoint.refresh_from_db()
    assert endpoint.failing_since is None and endpoint.disabled_at is None


@override_settings(WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT=2)
def test_no_more_than_the_bound_of_deliveries_are_in_flight_to_one_endpoint():
    endpoint = webhook_endpoint_create(url="http://127.0.0.1:9/", secret=new_secret())
    for _ in range(4):
        one_event()
    events_relay()

    leases = [delivery_lease_next(endpoint_id=endpoint.id) for _ in range(3)]

    assert leases[0] and leases[1] and leases[2] is None


def test_the_relay_fans_out_to_the_endpoints_that_take_the_type_only():
    everything = webhook_endpoint_create(url="http://127.0.0.1:9/a", secret=new_secret())
    claims_only = webhook_endpoint_create(url="http://127.0.0.1:9/b", secret=new_secret(),
                                          event_types=[EventType.PACKET_CLAIMED])
    disabled = webhook_endpoint_create(url="http://127.0.0.1:9/c", secret=new_secret())
    WebhookEndpoint.objects.filter(id=disabled.id).update(disabled_at=timezone.now())
    member_added = one_event()
    claimed = one_event(EventType.PACKET_CLAIMED)

    events_relay()

    assert set(Delivery.objects.values_list("event", "endpoint")) == {
        (member_added.id, everything.id), (claimed.id, everything.id), (claimed.id, claims_only.id)
    }


@override_settings(WEBHOOK_RETRY_SECONDS=[])
def test_an_operator_can_redeliver_an_event_and_every_failed_delivery_of_an_endpoint():
    with Receiver(secret := new_secret(), plan=lambda attempt, headers: (500 if attempt == 1 else 204, {}, 0)) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        first, second = one_event(), one_event()
        events_relay()
        assert attempt_all(endpoint) == [False, False]

        assert endpoint_redeliver_failed(endpoint_id=endpoint.id) == 2
        assert attempt_all(endpoint) == [True, True]
        assert event_redeliver(event_id=first.id) == 1
        assert attempt_all(endpoint) == [True]

    assert [len(receiver.by_id()[e.public_id]) for e in (first, second)] == [3, 2]


# --- registration and SSRF --------------------------------------------------------------


def test_add_webhook_endpoint_prints_the_new_endpoints_id(capsys):
    secret = new_secret()

    call_command("add_webhook_endpoint", "http://127.0.0.1:9999/hooks", "--secret", secret,
                 "--events", "packet.sent,packet.finished")

    endpoint_id = capsys.readouterr().out.strip()
    endpoint = WebhookEndpoint.objects.get(id=endpoint_id)
    assert (endpoint.url, endpoint.secret) == ("http://127.0.0.1:9999/hooks", secret)
    assert endpoint.event_types == ["packet.sent", "packet.finished"]


@pytest.mark.parametrize("args", [
    ["http://127.0.0.1:9/", "--secret", "not-a-secret"],
    ["http://127.0.0.1:9/", "--secret", "whsec_!!!"],
    ["http://127.0.0.1:9/", "--secret", "whsec_"],
    ["http://127.0.0.1:9/", "--secret", "whsec_c2VjcmV0", "--events", "packet.sent,packet.lost"],
    ["ftp://127.0.0.1/", "--secret", "whsec_c2VjcmV0"],
])
def test_add_webhook_endpoint_refuses_bad_input(args):
    with pytest.raises(CommandError):
        call_command("add_webhook_endpoint", *args)
    assert not WebhookEndpoint.objects.exists()


def public_dns(monkeypatch, address="93.184.215.14"):
    def fake(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@override_settings(WEBHOOK_ALLOW_PRIVATE_URLS=False)
@pytest.mark.parametrize("url", [
    "http://hooks.example.com/",  # not https
    "https://127.0.0.1/", "https://localhost/", "https://10.1.2.3/", "https://192.168.0.10/", "https://172.16.0.1/",
    "https://169.254.169.254/latest/meta-data", "https://[::1]/", "https://[::ffff:127.0.0.1]/", "https://0.0.0.0/",
    "https://user:pass@hooks.example.com/",
])
def test_production_refuses_urls_that_are_not_https_to_a_public_address(url):
    with pytest.raises(ValidationFailed) as refused:
        webhook_endpoint_create(url=url, secret=new_secret())
    assert "url" in refused.value.fields


@override_settings(WEBHOOK_ALLOW_PRIVATE_URLS=False)
def test_production_checks_the_address_again_at_delivery_and_never_connects_to_a_private_one(monkeypatch):
    # Given an endpoint whose name resolved to a public address at registration
    public_dns(monkeypatch)
    endpoint = webhook_endpoint_create(url="https://hooks.example.com/in", secret=new_secret())
    event = one_event()
    events_relay()

    # When its DNS answers with a loopback address at delivery time
    with Receiver(endpoint.secret) as receiver:
        public_dns(monkeypatch, address="127.0.0.1")
        attempt_all(endpoint, rounds=1)

    # Then nothing was sent, and the attempt says why
    assert receiver.received == []
    (attempt,) = DeliveryAttempt.objects.filter(delivery__event=event)
    assert attempt.error.startswith("refused") and "non-public" in attempt.error


