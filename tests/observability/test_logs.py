"""Structured logs: a request id on every line of a request, returned as X-Request-ID, kept from a trusted
proxy, carried into Celery tasks and the webhook deliveries of the events a request records; and no PIN,
password or token in any line of a whole run."""

import ipaddress
import json
import logging
import sys
import time
import uuid

import pytest
import requests
import structlog
from django.test import override_settings

from config.logging import logging_config
from events.models import Delivery, Event, EventType
from events.services import webhook_endpoint_create
from redpackets.tasks import refund_expired_packets
from tests.events.receiver import Receiver
from tests.events.test_webhooks import new_secret
from tests.factories import PIN, UserFactory, token_for

LOCALHOST = [ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.django_db
def test_every_answer_carries_a_new_request_id(client):
    first = client.get("/api/v1/wallet")
    second = client.get("/healthz")

    assert len(first["X-Request-ID"]) == 32 and len(second["X-Request-ID"]) == 32
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "trusted, offered, kept",
    [
        (LOCALHOST, "lb-7f3a9c", True),
        ([], "lb-7f3a9c", False),  # nobody is trusted by default: a client cannot choose its id
        ([ipaddress.ip_network("10.0.0.0/8")], "lb-7f3a9c", False),
        (LOCALHOST, "x" * 129, False),
        (LOCALHOST, "line\nbreak", False),
    ],
)
def test_a_request_id_is_taken_only_from_a_trusted_proxy_and_only_when_well_formed(client, trusted, offered, kept):
    with override_settings(TRUSTED_PROXIES=trusted):
        response = client.get("/healthz", headers={"X-Request-ID": offered})

    assert (response["X-Request-ID"] == offered) is kept


def json_lines(text: str, *, banner: bool = False) -> list[dict]:
    """Every line of a log (after Celery's start-up banner, which is for people); each must be one JSON object."""
    lines = []
    if banner:
        text = text[text.index("\n{") + 1:]
    for line in text.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON log line: {line!r}") from None
    return lines


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_whole_run_logs_json_with_request_ids_and_no_secret(stack):
    # Given the web server and a worker logging JSON, the load balancer trusted for request ids
    stack.web(workers=2, LOG_FORMAT="json", TRUSTED_PROXIES="127.0.0.1")
    worker = stack.worker(LOG_FORMAT="json", CELERY_TASK_LOG_LEVEL="INFO")  # its per-task lines
    suffix = uuid.uuid4().hex[:8]
    password, pin, wrong_pin = f"Pw-{suffix}-horse-battery", "975318", "864208"
    secrets = {password, pin, wrong_pin}
    session = requests.Session()

    def call(method, path, token=None, body=None, request_id=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if request_id:
            headers["X-Request-ID"] = request_id
        return session.request(method, stack.url(path), json=body, headers=headers, timeout=30)

    # When two users register, log in, set PINs, top up, one sends a packet with the PIN (once wrongly)
    # and the other claims it
    tokens, answers = {}, []
    for name in (f"ann{suffix}", f"ben{suffix}"):
        answers.append(call("POST", "/api/v1/auth/register", body={"username": name, "password": password}))
        answers.append(call("POST", "/api/v1/auth/token", body={"username": name, "password": password}))
        tokens[name] = answers[-1].json()["token"]
        secrets.add(tokens[name])
        answers.append(call("PUT", "/api/v1/wallet/pin", tokens[name], {"pin": pin}))
        answers.append(call("POST", "/api/v1/wallet/topups", tokens[name], {"amount": 5000}))
    ann, ben = tokens
    group = call("POST", "/api/v1/groups", tokens[ann], {"name": "Logs", "members": [ben]}).json()
    send = {"group": group["id"], "kind": "random", "share_count": 2, "total_amount": 500}
    answers.append(call("POST", "/api/v1/packets", tokens[ann], {**send, "pin": wrong_pin}))
    sent = call("POST", "/api/v1/packets", tokens[ann], {**send, "pin": pin}, request_id=f"lb-{suffix}")
    answers.append(call("POST", f"/api/v1/packets/{sent.json()['id']}/claim", tokens[ben]))
    answers.append(call("PUT", "/api/v1/wallet/pin", tokens[ben], {"pin": wrong_pin, "current_pin": "000000"}))
    # and a task is enqueued while a request id is bound, as a request's code would
    with structlog.contextvars.bound_contextvars(request_id=f"task-cause-{suffix}"):
        refund_expired_packets.delay()
    worker.wait_until(f"task-cause-{suffix}", timeout=30)
    time.sleep(1.0)  # the last access lines reach the log

    # Then the answers were the expected ones, each with its request id
    assert [a.status_code for a in answers] == [201, 200, 204, 201] * 2 + [403, 201, 403]
    assert sent.status_code == 201 and sent.headers["X-Request-ID"] == f"lb-{suffix}"
    # and every line of the web server and the worker is JSON; every line of a request has its id
    web_lines = json_lines(stack.started[0].output())
    access = [line for line in web_lines if line.get("event") == "request"]
    assert len(access) >= 14
    assert all(line.get("request_id") for line in access)
    ids = {a.headers["X-Request-ID"] for a in answers}
    assert ids <= {line["request_id"] for line in access}
    assert any(line["request_id"] == f"lb-{suffix}" and line["status"] == 201 for line in access)
    task_lines = [line for line in json_lines(worker.output(), banner=True) if line.get("request_id") == f"task-cause-{suffix}"]
    assert task_lines and all(line.get("task_id") for line in task_lines)
    # and no password, PIN or token appears anywhere in any log
    for proc in stack.started:
        output = proc.output()
        leaked = [secret for secret in secrets if secret in output]
        assert not leaked, f"{proc.name} logged {leaked}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_the_request_id_of_a_send_reaches_the_relay_every_delivery_attempt_and_the_receiver(stack):
    # Given a receiver that fails each event's first attempt, and the Procfile's processes logging JSON
    # behind a trusted load balancer
    def plan(attempt, headers):
        return 500 if attempt == 1 else 200, {}, 0

    with Receiver(secret := new_secret(), plan=plan) as receiver:
        webhook_endpoint_create(url=receiver.url, secret=secret)
        stack.web(workers=1, LOG_FORMAT="json", TRUSTED_PROXIES="127.0.0.1")
        relay = stack.worker(LOG_FORMAT="json", EVENTS_RELAY_SECONDS="0.5")
        hooks = stack.webhooks_worker(LOG_FORMAT="json", WEBHOOK_RETRY_SECONDS="1")
        sender, member = UserFactory(balance=5000), UserFactory()
        token = token_for(sender)
        suffix = uuid.uuid4().hex[:8]
        group_request, send_request = f"lb-group-{suffix}", f"lb-send-{suffix}"

        # When the sender makes a group and sends a packet through the API, each with the proxy's X-Request-ID
        group = requests.post(stack.url("/api/v1/groups"), json={"name": "Ids", "members": [member.username]},
                              headers={"Authorization": f"Bearer {token}", "X-Request-ID": group_request}, timeout=30)
        sent = requests.post(stack.url("/api/v1/packets"),
                             json={"group": group.json()["id"], "kind": "fixed", "share_count": 1, "share_amount": 100,
                                   "pin": PIN},
                             headers={"Authorization": f"Bearer {token}", "X-Request-ID": send_request}, timeout=30)
        assert (group.status_code, sent.status_code) == (201, 201)
        events = {e.public_id: e for e in Event.objects.filter(group_id=group.json()["id"])}
        receiver.wait_for(set(events), timeout=30, alive=hooks.alive)

    # Then each event keeps the id of the request that recorded it
    cause = {e.public_id: {EventType.PACKET_SENT: send_request, EventType.GROUP_MEMBER_ADDED: group_request}[e.type]
             for e in events.values()}
    assert sorted(cause.values()) == sorted([group_request] * 2 + [send_request])
    assert all(e.request_id == cause[i] for i, e in events.items())
    # and the receiver got it as X-Request-ID on every attempt, failed and delivered, outside the signed body
    by_id = receiver.by_id()
    for event_id, request_id in cause.items():
        attempts = by_id[event_id]
        assert [a.status for a in attempts[:2]] == [500, 200]
        assert all(a.verified and a.headers["x-request-id"] == request_id for a in attempts)
        assert request_id not in attempts[0].body.decode()
    # and every line of the relay about an event, and of each attempt of its delivery, logs under that id
    time.sleep(1.0)  # the last attempt's line reaches the log
    relayed = [line for line in json_lines(relay.output(), banner=True) if line["event"].startswith("Event evt_")]
    deliveries = {f"Webhook delivery {d.id} ": cause[d.event.public_id]
                  for d in Delivery.objects.filter(event_id__in=[e.id for e in events.values()]).select_related("event")}
    attempted = [(line, request_id) for line in json_lines(hooks.output(), banner=True)
                 for prefix, request_id in deliveries.items() if line["event"].startswith(prefix)]
    for event_id, request_id in cause.items():
        lines = [line for line in relayed if line["event"].startswith(f"Event {event_id} ")]
        assert len(lines) == 1 and lines[0]["request_id"] == request_id and lines[0]["task_id"]
    assert len(attempted) >= 2 * len(cause)
    assert all(line["request_id"] == request_id and line["task_id"] for line, request_id in attempted)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_traceback_shows_no_local_variable_and_no_secret_key(fmt):
    # Given the service's log formatter
    config = logging_config(fmt=fmt, level="INFO")["formatters"]["structured"]
    formatter = config.pop("()")(**config)

    # When an error is logged from a frame holding a PIN, with a token passed as an extra field
    def verify(pin):
        raise ValueError("PIN check failed")

    pin = "".join(reversed("813579"))  # not spelled out on the line the traceback quotes
    try:
        verify(pin)
    except ValueError:
        record = logging.getLogger("test").makeRecord(
            "test", logging.ERROR, __file__, 1, "Unhandled error", (), sys.exc_info(), extra={"token": "tok-5e5e5e"})
    line = formatter.format(record)

    # Then the traceback is there, the values are not
    assert "ValueError: PIN check failed" in line
    assert "975318" not in line and "tok-5e5e5e" not in line
