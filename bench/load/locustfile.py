"""Locust users for the load test; run by bench/load/run.py, one phase per locust run.

Not meant to be started by hand: the driver seeds the database, writes the
identities (tokens, groups, senders) to the JSON file named by LOAD_STATE and
the phase's settings to LOAD_PHASE, picks the user classes of the phase on the
command line, and reads back the file named by LOAD_RESULT: every request's
start time, latency, status and verdict, and the rounds of the hot-packet bursts.

User classes:
- WalletReader: GET /api/v1/wallet in a closed loop (the trivial endpoint).
- ChatMember:   a member of a few groups reading its wallet and history, viewing
                and claiming the packets sent to its groups, listing a group's packets.
- Sender:       sends packets to its groups (PIN, Idempotency-Key), sometimes
                retries one with the same key, as a client whose reply got lost.
- SendLoop:     group owners sending small packets with no pause (the send rate).
- HotSender + HotClaimer: one sender and a few hundred claimers of one group. Each
                round the sender sends a packet (or, in a "spread" round, as many
                packets as the claimers fill); every claimer, parked on an event,
                claims at the same instant; the round ends with the last answer.

Which answers count as errors: any 5xx or connection failure, and any status the
endpoint does not promise for this traffic. Claims may be answered 201 (paid),
200 (repeat), 409 packet_exhausted or 410 packet_expired; those are the rules
working, not errors.
"""

import itertools
import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from pathlib import Path

import gevent
from gevent.event import Event
from locust import FastHttpUser, between, constant, events, task
from locust.exception import StopUser

STATE = json.loads(Path(os.environ["LOAD_STATE"]).read_text())
PHASE = json.loads(os.environ.get("LOAD_PHASE", "{}"))
RESULT_PATH = os.environ.get("LOAD_RESULT")
USERS = STATE["users"]  # [[username, token], ...]

WALLET = "GET /api/v1/wallet"
HISTORY = "GET /api/v1/wallet/transactions"
PACKET = "GET /api/v1/packets/{id}"
GROUP_PACKETS = "GET /api/v1/groups/{id}/packets"
SEND = "POST /api/v1/packets"
SEND_RETRY = "POST /api/v1/packets (retry, same key)"
CLAIM = "POST /api/v1/packets/{id}/claim"
HOT_SEND = "POST /api/v1/packets (hot)"
HOT_CLAIM = "POST /api/v1/packets/{id}/claim (hot"  # + ", one)" or ", spread)"

CLAIM_OK = {201, 200, 409, 410}


# --- recording ---------------------------------------------------------------------

RECORDS: dict[str, list] = defaultdict(list)  # name -> [[start, ms, status, ok], ...]
ERROR_SAMPLES: list[str] = []


@events.request.add_listener
def _record(request_type, name, response_time, response, exception, start_time=None, **kwargs):
    status = getattr(response, "status_code", 0) or 0
    RECORDS[name].append([round(start_time or time.time(), 4), round(response_time, 2), status, exception is None])
    if exception is not None and len(ERROR_SAMPLES) < 50:
        ERROR_SAMPLES.append(f"{name}: {status} {str(exception)[:300]}")


@events.quitting.add_listener
def _write_results(environment, **kwargs):
    if RESULT_PATH:
        Path(RESULT_PATH).write_text(json.dumps({
            "records": RECORDS,
            "rounds": BURST.rounds,
            "errors": ERROR_SAMPLES,
            "idempotency_mismatches": IDEMPOTENCY_MISMATCHES,
        }))


def _code(response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except Exception:
        return None


def _expect(response, statuses, codes=None):
    """Mark the answer a success when its status (and error code) is one this traffic may get."""
    status = response.status_code
    if status in statuses and (codes is None or status < 400 or _code(response) == codes.get(status)):
        response.success()
    else:
        response.failure(f"unexpected {status}: {(response.text or '')[:200]}")


# --- who is who ----------------------------------------------------------------------


# gunicorn closes a kept-alive connection after 2 idle seconds (its default --keep-alive,
# which the Procfile keeps). A request sent on such a connection just as the server closes
# it is lost, and a POST is not retried (RFC 9110 9.2.2). Like a proxy whose upstream
# keepalive_timeout is below the backend's, the client drops connections idle for longer
# than this and opens a new one.
IDLE_LIMIT = 1.0


class ApiUser(FastHttpUser):
    abstract = True
    network_timeout = 60.0
    connection_timeout = 30.0
    _last_used = 0.0

    def as_user(self, index: int) -> None:
        self.username, token = USERS[index]
        self.auth = {"Authorization": f"Bearer {token}"}

    def _fresh_connection_if_idle(self) -> None:
        if time.monotonic() - self._last_used > IDLE_LIMIT:
            self.client.client.clientpool.close()

    def _used(self) -> None:
        self._last_used = time.monotonic()

    def get_json(self, path: str, name: str):
        self._fresh_connection_if_idle()
        with self.client.get(path, headers=self.auth, name=name, catch_response=True) as response:
            _expect(response, {200})
        self._used()
        return response

    def claim(self, packet_id: str, name: str):
        self._fresh_connection_if_idle()
        with self.client.post(f"/api/v1/packets/{packet_id}/claim", headers=self.auth, name=name,
                              catch_response=True) as response:
            _expect(response, CLAIM_OK, {409: "packet_exhausted", 410: "packet_expired"})
        self._used()
        return response

    def send(self, body: dict, key: str, name: str):
        self._fresh_connection_if_idle()
        headers = {**self.auth, "Idempotency-Key": key}
        with self.client.post("/api/v1/packets", json=body, headers=headers, name=name,
                              catch_response=True) as response:
            _expect(response, {201})
        self._used()
        return response


_next_reader = itertools.count()


class WalletReader(ApiUser):
    """The trivial authenticated endpoint, as fast as it answers."""

    wait_time = constant(0)

    def on_start(self):
        self.as_user(next(_next_reader) % len(USERS))

    @task
    def wallet(self):
        self.get_json("/api/v1/wallet", WALLET)


# --- mixed traffic ---------------------------------------------------------------------

GROUPS = {g["id"]: g for g in STATE["groups"]}
RECENT: dict[str, deque] = defaultdict(lambda: deque(maxlen=12))  # group id -> recent packet ids
IDEMPOTENCY_MISMATCHES: list[str] = []
_next_member = itertools.count()
_next_sender = itertools.count()


class ChatMember(ApiUser):
    """Reads, views and claims in the groups it belongs to, with a chat user's pauses."""

    wait_time = between(PHASE.get("member_wait_min", 0.5), PHASE.get("member_wait_max", 2.0))

    def on_start(self):
        index = STATE["members"][next(_next_member) % len(STATE["members"])]
        self.as_user(index)
        self.groups = STATE["groups_of"][str(index)]
        self.tried: set[str] = set()

    def _recent_packet(self, untried: bool):
        group = random.choice(self.groups)
        packets = [p for p in RECENT[group] if not untried or p not in self.tried]
        return random.choice(packets) if packets else None

    @task(3)
    def wallet(self):
        self.get_json("/api/v1/wallet", WALLET)

    @task(2)
    def history(self):
        self.get_json("/api/v1/wallet/transactions", HISTORY)

    @task(4)
    def view_packet(self):
        packet = self._recent_packet(untried=False)
        if packet is None:
            return self.wallet()
        self.get_json(f"/api/v1/packets/{packet}", PACKET)

    @task(5)
    def claim_packet(self):
        packet = self._recent_packet(untried=True)
        if packet is None:
            return self.history()
        self.tried.add(packet)
        self.claim(packet, CLAIM)

    @task(1)
    def group_packets(self):
        self.get_json(f"/api/v1/groups/{random.choice(self.groups)}/packets", GROUP_PACKETS)


class Sender(ApiUser):
    """Group owners sending packets in turn; one send in ten is retried with its key."""

    fixed_count = PHASE.get("senders", 0)
    wait_time = between(PHASE.get("send_wait_min", 2.0), PHASE.get("send_wait_max", 5.0))

    def on_start(self):
        me, count = next(_next_sender), max(1, PHASE.get("senders", 1))
        self.my_groups = STATE["groups"][me::count] or STATE["groups"]
        self.turn = itertools.cycle(self.my_groups)

    @task
    def send_packet(self):
        group = next(self.turn)
        self.as_user(group["owner"])
        shares = random.randint(2, min(len(group["members"]), 20))
        body = {"group": group["id"], "pin": STATE["pin"], "greeting": "load test", "share_count": shares}
        if random.random() < 0.5:
            body |= {"kind": "random", "total_amount": shares * random.randint(50, 500)}
        else:
            body |= {"kind": "fixed", "share_amount": random.randint(50, 500)}
        key = str(uuid.uuid4())
        response = self.send(body, key, SEND)
        if response.status_code != 201:
            return
        packet_id = response.json()["id"]
        RECENT[group["id"]].append(packet_id)
        if random.random() < 0.1:
            again = self.send(body, key, SEND_RETRY)
            if again.status_code == 201 and again.json()["id"] != packet_id:
                IDEMPOTENCY_MISMATCHES.append(f"key {key}: {packet_id} then {again.json()['id']}")


SEND_LOOP = "POST /api/v1/packets (closed loop)"
_next_looper = itertools.count()


class SendLoop(ApiUser):
    """One group owner per locust user sending small fixed packets with no pause (the send rate)."""

    wait_time = constant(0)

    def on_start(self):
        self.my_group = STATE["groups"][next(_next_looper) % len(STATE["groups"])]
        self.as_user(self.my_group["owner"])

    @task
    def send_packet(self):
        body = {"group": self.my_group["id"], "pin": STATE["pin"], "kind": "fixed", "share_count": 5,
                "share_amount": 100, "greeting": "send rate"}
        self.send(body, str(uuid.uuid4()), SEND_LOOP)


# --- hot packets ---------------------------------------------------------------------------


class Burst:
    """The hot sender's rounds: claimers park on an event and are released together.

    A round is "one": every claimer on one packet, more claimers than shares; or
    "spread": the same claimers over several packets at once, as many claimers per
    packet as it has shares, so that every claim is paid.
    """

    def __init__(self):
        self.round = 0
        self.kind = ""
        self.packets: list[str] = []
        self.registered = 0
        self.pending = 0
        self.by_packet: dict[str, Counter] = {}
        self.started = 0.0
        self.rounds: list[dict] = []
        self._new = Event()
        self._done = Event()

    def register(self) -> int:
        self.registered += 1
        return self.registered - 1

    def start_round(self, kind: str, packets: list[str], claimers: int):
        self.round += 1
        self.kind, self.packets, self.pending = kind, packets, claimers
        self.by_packet = {p: Counter() for p in packets}
        self._done.clear()
        self.started = time.time()
        released, self._new = self._new, Event()
        released.set()

    def next_round(self, seen: int, slot: int) -> tuple[int, str, str]:
        while self.round <= seen:
            self._new.wait()
        return self.round, self.kind, self.packets[slot % len(self.packets)]

    def finish_one(self, packet: str, status: int):
        self.by_packet[packet][status] += 1
        self.pending -= 1
        if self.pending == 0:
            statuses = sum(self.by_packet.values(), Counter())
            self.rounds.append({
                "kind": self.kind, "start": self.started, "end": time.time(),
                "claims": sum(statuses.values()), "statuses": dict(statuses),
                "packets": {p: dict(c) for p, c in self.by_packet.items()},
            })
            self._done.set()

    def wait_done(self, timeout: float) -> bool:
        return self._done.wait(timeout)


BURST = Burst()
_next_claimer = itertools.count()


class HotClaimer(ApiUser):
    fixed_count = PHASE.get("hot_claimers", 0)
    wait_time = constant(0)

    def on_start(self):
        claimers = STATE["hot"]["claimers"]
        self.as_user(claimers[next(_next_claimer) % len(claimers)])
        self.seen = 0
        self.slot = BURST.register()

    @task
    def claim_hot(self):
        self.seen, kind, packet = BURST.next_round(self.seen, self.slot)
        try:
            response = self.claim(packet, f"{HOT_CLAIM}, {kind})")
            status = response.status_code
        except Exception:
            status = 0
        BURST.finish_one(packet, status)


class HotSender(ApiUser):
    fixed_count = 1 if PHASE.get("hot_rounds") else 0
    wait_time = constant(0)

    def on_start(self):
        self.as_user(STATE["hot"]["sender"])
        deadline = time.monotonic() + 60
        while BURST.registered < PHASE["hot_claimers"] and time.monotonic() < deadline:
            gevent.sleep(0.05)
        self.kinds = itertools.cycle(PHASE.get("round_kinds", ["one"]))
        gevent.sleep(PHASE.get("hot_first_delay", 0.5))

    @task
    def hot_round(self):
        if BURST.round >= PHASE["hot_rounds"]:
            if PHASE.get("quit_after_rounds"):
                gevent.spawn(self.environment.runner.quit)
            raise StopUser()
        hot, kind = STATE["hot"], next(self.kinds)
        count = max(1, BURST.registered // hot["share_count"]) if kind == "spread" else 1
        body = {"group": hot["group"], "pin": STATE["pin"], "kind": "random", "greeting": "hot packet",
                "share_count": hot["share_count"], "total_amount": hot["share_count"] * hot["share_value"]}
        packets = []
        for _ in range(count):
            response = self.send(body, str(uuid.uuid4()), HOT_SEND)
            if response.status_code != 201:
                gevent.sleep(1)
                return
            packets.append(response.json()["id"])
        BURST.start_round(kind, packets, BURST.registered)
        BURST.wait_done(timeout=60)
        gevent.sleep(PHASE.get("hot_gap", 0))
