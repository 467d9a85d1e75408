"""API fuzzing: schemathesis drives every operation of the published schema in-process.

The schema is loaded from the service's own /api/schema/ and the requests go
through the real WSGI application (middleware, DRF, knox) to PostgreSQL. Each
operation gets schemathesis' examples, coverage (boundary values, unexpected
methods, negated constraints) and fuzzing phases, in both generation modes:
positive (valid per the schema) and negative (invalid per the schema).

Every response must pass:
- not_a_server_error: never a 5xx;
- status_code_conformance, content_type_conformance, response_schema_conformance,
  response_headers_conformance: the schema tells the truth about each answer;
- negative_data_rejection: input outside the schema gets a 4xx (no 5xx allowed);
- positive_data_acceptance: input the schema allows is not refused as malformed;
- ignored_auth, unsupported_method, allow_header_conformance, missing_required_header;
- error_envelope (ours): every 4xx and 5xx is the contract's
  {"error": {"code", "message", "fields"}} as JSON.

The caller is a user with a balance and the PIN tests.factories.PIN, owner of a
group with members, which holds packets in every state (active, finished,
expired, exclusive to someone else); another group and packet are not theirs.
In a share of the cases, path parameters, `group`, `pin`, `current_pin` and
usernames in bodies are swapped for real ones, and half of the valid packet sends
are bent into the business rules (share_count within the group, total_amount
within the caller's reach), so the fuzz reaches past 404 and 400. Only values
valid for their field are replaced, by values just as valid, so a negative case
stays negative; every choice is a function of the case itself, so Hypothesis
replays and shrinks the same request.

Between cases the PIN row is reset (right hash, no failed tries, no lock) and
the throttle counters are cleared: five wrong PINs from the fuzzer would
otherwise make every later send a trivial 423, and the per-minute rates a
trivial 429 (both have their own tests). A fresh token is issued per case,
because the logout operations revoke the one they are called with.

Generated strings carry no NUL character: DRF refuses one in any string field
(400; PostgreSQL text cannot hold it), a rule the schema does not repeat on each
string. Five operations may answer schema-valid input with 400, for rules a JSON
schema cannot state (RELATIONAL_RULES below); everywhere else a 400 for valid
input is a failure.

At the end of the session the figures (cases by operation, phase and mode,
check outcomes, statuses) are printed in the terminal summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter, defaultdict
from datetime import timedelta
from unittest import mock

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from knox.models import AuthToken
from schemathesis.config import SchemathesisConfig

from config.wsgi import application
from redpackets.services import packet_claim, packet_refund_expired, packet_send
from tests.factories import PIN, UserFactory, group_with_members
from wallets.models import PaymentPin
from wallets.pins import pin_hash

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# Hypothesis examples per operation; the examples and coverage phases add their own
# deterministic cases on top. The whole file runs in about a minute on two cores;
# FUZZ_MAX_EXAMPLES=1000 digs deeper by hand.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))

# Input outside the schema: refused as malformed (400), or before the body is looked at
# (401 no token, 404 no such path/object, 405/415 wrong method or media type).
NEGATIVE_STATUSES = ["400", "401", "404", "405", "415"]
# Input inside the schema: anything but "malformed". 403/404/409/410 are business answers
# (not yours, no such object, no funds, exhausted, expired), 429 the rate limit.
POSITIVE_STATUSES = ["2xx", "401", "403", "404", "409", "410", "429"]
# Operations whose bodies meet rules a JSON schema cannot state, so schema-valid input can
# still be 400 validation_error, as the contract says: a username must be free (register) or
# exist (groups, members, recipient); a password must not be common; share_count is at most the
# group's member count and total_amount between share_count and share_count x the cap; a PIN
# change needs current_pin once a PIN is set.
RELATIONAL_RULES = ["auth_register", "groups_create", "groups_members_add", "packets_create", "wallet_pin_set"]

config = SchemathesisConfig.from_dict(
    {
        # The token is ours to send (see test_api_fuzz); ignored_auth checks the 401s without it.
        # No NUL characters in generated strings: DRF refuses them in every string field (400,
        # PostgreSQL text cannot hold them), a rule the schema does not spell out on each string.
        "generation": {"mode": "all", "with-security-parameters": False, "allow-x00": False},
        "checks": {
            "negative_data_rejection": {"expected-statuses": NEGATIVE_STATUSES},
            "positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES},
        },
        "operations": [
            {
                "include-operation-id": RELATIONAL_RULES,
                "checks": {"positive_data_acceptance": {"expected-statuses": [*POSITIVE_STATUSES, "400"]}},
            }
        ],
    }
)
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=config)

# --- the real world the fuzz can reach -------------------------------------------------

WORLD: dict = {}


@pytest.fixture
def world(transactional_db):
    """A caller with money and a PIN, a group, and packets in every state.

    Claimable by the caller: `active`, `active_fixed`, `for_me` (exclusive to them); not:
    `finished` (409), `exclusive` to someone else (403), `expired` (410), `foreign` (404).
    """
    me = UserFactory(username="fuzzer", balance=5_000_000)
    friends = [UserFactory(username=f"friend{i}", balance=100_000) for i in range(3)]
    outsider = UserFactory(username="outsider", balance=100_000)
    strangers = [UserFactory(username=f"stranger{i}") for i in range(3)]  # in no group: members to add
    group = group_with_members(me, friends, name="Fuzz group")
    foreign_group = group_with_members(outsider, [friends[0]], name="Not mine")

    active = packet_send(sender=friends[0], group_id=group.id, kind="random", share_count=3, total_amount=300)
    active_fixed = packet_send(sender=friends[2], group_id=group.id, kind="fixed", share_count=4, share_amount=25)
    for_me = packet_send(
        sender=friends[1], group_id=group.id, kind="random", share_count=1, total_amount=88, recipient_username=me.username
    )
    finished = packet_send(sender=friends[1], group_id=group.id, kind="random", share_count=2, total_amount=50)
    for claimer in friends[:2]:
        packet_claim(packet_id=finished.id, user=claimer)
    exclusive = packet_send(
        sender=friends[0], group_id=group.id, kind="fixed", share_count=1, share_amount=10,
        recipient_username=friends[1].username,
    )
    past = timezone.now() - timedelta(days=3)
    with mock.patch("django.utils.timezone.now", return_value=past):
        expired = packet_send(sender=friends[2], group_id=group.id, kind="fixed", share_count=2, share_amount=5)
    packet_refund_expired(packet_id=expired.id)
    foreign = packet_send(sender=outsider, group_id=foreign_group.id, kind="fixed", share_count=1, share_amount=7)

    WORLD.clear()
    WORLD.update(
        user=me,
        groups=[str(group.id), str(foreign_group.id)],
        packets=[str(p.id) for p in (active, active_fixed, for_me, finished, exclusive, expired, foreign)],
        usernames=[f.username for f in friends] + [outsider.username, me.username] + [u.username for u in strangers],
        member_count=1 + len(friends),
    )
    # The WSGI handler would close the connection after every request (CONN_MAX_AGE=0), as
    # Django's test client avoids too; the data is committed either way (transactional test).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WORLD
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
    WORLD.clear()


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _pick(seed: str, options: list, share: int = 3) -> object | None:
    """One of `options` in `share` of every share+1 cases, chosen by the case's own value."""
    digest = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    if digest % (share + 1) == 0:
        return None
    return options[(digest // (share + 1)) % len(options)]


PIN_RE = re.compile(r"^[0-9]{6}$")


def _valid_string(value, low: int, high: int, pattern: re.Pattern | None = None) -> bool:
    return isinstance(value, str) and low <= len(value) <= high and (pattern is None or bool(pattern.match(value)))


def point_at_real_objects(case) -> None:
    """Swap generated values for real ones, in some of the cases.

    Only a value that is valid for its field is replaced, and by one just as valid for it,
    so a negative case stays negative where it was negated.
    """
    # Choices are keyed on the whole case as generated: Hypothesis repeats single values a lot.
    seed = json.dumps([case.path_parameters, case.query, case.body], sort_keys=True, default=repr)
    params = case.path_parameters or {}
    for name, pool in (("group_id", WORLD["groups"]), ("packet_id", WORLD["packets"])):
        value = params.get(name)
        if isinstance(value, str) and UUID_RE.match(value):
            real = _pick(f"{seed}|{name}", pool)
            if real is not None:
                params[name] = real
    body = case.body
    if not isinstance(body, dict):
        return
    operation = case.operation.definition.raw.get("operationId")
    usernames = WORLD["usernames"]
    swaps: dict[str, tuple] = {}  # field: (is valid, replacements)
    if operation == "packets_create":
        swaps["group"] = (lambda v: isinstance(v, str) and UUID_RE.match(v), WORLD["groups"][:1] * 3 + WORLD["groups"][1:])
        swaps["pin"] = (lambda v: _valid_string(v, 1, 64), [PIN, PIN, PIN])
        swaps["recipient"] = (lambda v: _valid_string(v, 1, 150), usernames[:5])  # members and one outsider
    elif operation == "wallet_pin_set":
        swaps["current_pin"] = (lambda v: _valid_string(v, 6, 6, PIN_RE), [PIN])
    elif operation in ("groups_members_add", "auth_token", "auth_register"):
        swaps["username"] = (lambda v: _valid_string(v, 1, 150) and re.match(r"^[A-Za-z0-9_.@+-]+$", v), usernames)
    for field, (is_valid, pool) in swaps.items():
        if field in body and is_valid(body[field]):
            # A taken username on register is a plain 400 every time: only now and then.
            real = _pick(f"{seed}|{field}", pool, share=1 if operation == "auth_register" else 3)
            if real is not None:
                body[field] = real
    if operation == "packets_create" and case.meta is not None and case.meta.generation.mode.is_positive:
        keep_business_rules(body, seed)
    members = body.get("members")
    if operation == "groups_create" and isinstance(members, list) and members:
        if all(_valid_string(m, 1, 150) for m in members) and _pick(f"{seed}|members", [True]) is not None:
            body["members"] = [usernames[i % len(usernames)] for i in range(len(members))]


def keep_business_rules(body: dict, seed: str) -> None:
    """In half of the valid sends, bend the terms into what the business rules allow.

    The schema cannot say "share_count at most the group's members" or "total_amount
    between share_count and share_count x the cap", so random valid bodies almost never
    send a packet. Every value written here is as valid for the schema as the one it
    replaces, and the choice is a function of the body, so replays send the same request.
    """
    if _pick(f"{seed}|rules", [True], share=1) is None:
        return
    count, cap = body.get("share_count"), django_settings.REDPACKET_MAX_SHARE
    if not isinstance(count, int) or isinstance(count, bool):
        return
    count = 1 if body.get("recipient") is not None else 1 + count % WORLD["member_count"]
    body["share_count"] = count
    amount = body.get("total_amount") if body.get("kind") == "random" else body.get("share_amount")
    amount = amount if isinstance(amount, int) and not isinstance(amount, bool) else count
    if body.get("kind") == "random":
        body.pop("share_amount", None)
        body["total_amount"] = count + amount % (count * cap - count + 1)
    elif body.get("kind") == "fixed":
        body["share_amount"] = 1 + (amount - 1) % cap
        if "total_amount" in body:
            body["total_amount"] = body["share_amount"] * count


def reset_between_cases(user) -> None:
    stored = pin_hash(user_id=user.pk, pin=PIN)
    PaymentPin.objects.filter(user=user).update(
        pin_hash=stored.digest, pin_key_id=stored.key_id, failed_attempts=0, first_failed_at=None, locked_until=None
    )
    cache.clear()


# --- our own check: the error envelope -----------------------------------------------------


def error_envelope(ctx, response, case):
    """Every 4xx and 5xx is the contract's envelope, as JSON."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code} answered as {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the envelope: {body!r}"
    error = body["error"]
    # `details` is optional, for the codes that carry it (the schema's response says which).
    assert isinstance(error, dict) and set(error) - {"details"} == {"code", "message", "fields"}, f"not the envelope: {body!r}"
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["fields"], dict), body
    assert all(isinstance(m, list) and all(isinstance(s, str) for s in m) for m in error["fields"].values()), body
    return None


# --- figures ------------------------------------------------------------------------------------

STATS: dict = {
    "cases": Counter(),
    "by_phase_mode": Counter(),
    "statuses": Counter(),
    "statuses_by_operation": defaultdict(Counter),
    "checks": defaultdict(Counter),
    "failures": [],
    "seconds": Counter(),
}


@schema.hook
def after_validate(context, case, response, results):
    for result in results:
        STATS["checks"][result.name][result.status.name.lower()] += 1
        if result.failure is not None:
            STATS["failures"].append(f"{case.operation.label}: {result.name}: {result.failure.title}")


class FuzzSummary:
    def pytest_terminal_summary(self, terminalreporter):
        if not STATS["cases"]:
            return
        write = terminalreporter.write_line
        terminalreporter.section("API fuzzing (schemathesis)")
        total = sum(STATS["cases"].values())
        seconds = sum(STATS["seconds"].values())
        write(f"{total} cases over {len(STATS['cases'])} operations; {seconds:.1f}s in requests and checks")
        for label, count in sorted(STATS["cases"].items()):
            statuses = " ".join(f"{k}:{v}" for k, v in sorted(STATS["statuses_by_operation"][label].items()))
            write(f"  {count:5d}  {label}  ({STATS['seconds'][label]:.1f}s)  {statuses}")
        write("by phase/mode: " + ", ".join(f"{k}={v}" for k, v in sorted(STATS["by_phase_mode"].items())))
        write("statuses: " + ", ".join(f"{k}={v}" for k, v in sorted(STATS["statuses"].items())))
        write("checks (passed/failed):")
        for name, outcome in sorted(STATS["checks"].items()):
            write(f"  {name}: {outcome['success']}/{outcome['failure']}")
        failures = sorted(set(STATS["failures"]))
        write(f"distinct failures: {len(failures)}")
        for failure in failures[:50]:
            write(f"  {failure}")


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary(request):
    if not request.config.pluginmanager.has_plugin("api-fuzz-summary"):
        request.config.pluginmanager.register(FuzzSummary(), "api-fuzz-summary")
    yield


# --- the fuzz -------------------------------------------------------------------------------------


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_fuzz(case, world):
    reset_between_cases(world["user"])
    point_at_real_objects(case)
    _, token = AuthToken.objects.create(world["user"])
    started = time.perf_counter()
    try:
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"}, additional_checks=[error_envelope]
        )
    finally:
        label = case.operation.label
        STATS["cases"][label] += 1
        STATS["seconds"][label] += time.perf_counter() - started
        meta = case.meta
        if meta is not None:
            STATS["by_phase_mode"][f"{meta.phase.name.value}/{meta.generation.mode.value}"] += 1
    STATS["statuses"][response.status_code] += 1
    STATS["statuses_by_operation"][case.operation.label][response.status_code] += 1
