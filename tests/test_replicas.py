"""Read replicas against a real PostgreSQL streaming replica started by the test.

A private primary (initdb on a free port; the shared cluster is never touched), a
replica made from it with pg_basebackup, and the service in gunicorn with
DATABASE_REPLICA_URL. Lag is made on purpose with pg_wal_replay_pause(): a read
that shows the paused replica's stale state proves it read the replica; one that
shows the fresh state proves the primary.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.factories import PIN
from tests.processes import REPO_ROOT, Proc, free_port
from tests.test_fault_drills import call, wait_for_http

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WINDOW = 2  # REPLICA_READ_YOUR_WRITES_SECONDS for the server under test


def pg_bin(name: str) -> list[str]:
    """The command of a PostgreSQL program; as root, run as the postgres user (initdb and
    postgres refuse root)."""
    found = shutil.which(name) or next(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), None)
    assert found, f"{name} is needed to start a private PostgreSQL"
    return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + [str(found)]


def owned_dir() -> Path:
    """A temporary folder the server's user can own (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="rp-replicas-"))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


def start_postgres(data: Path, port: int, log: Path) -> Proc:
    proc = Proc(f"postgres-{port}", [*pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
                                     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                dict(os.environ), log)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            psycopg.connect(f"postgres://postgres@127.0.0.1:{port}/postgres", connect_timeout=1).close()
            return proc
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise AssertionError(f"private PostgreSQL on {port} did not start:\n{proc.output()[-2000:]}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(primary url, replica url, log folder) of a private streaming pair with the service's schema."""
    root = tmp_path_factory.mktemp("replicas")
    data = owned_dir()
    primary_dir, replica_dir = data / "primary", data / "replica"
    started: list[Proc] = []
    try:
        subprocess.run([*pg_bin("initdb"), "-D", str(primary_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*pg_bin("sh"), "-c", f"echo 'wal_level = replica' >> {primary_dir}/postgresql.conf"],
                       check=True)
        primary_port = free_port()
        started.append(start_postgres(primary_dir, primary_port, root / "primary.log"))
        primary = f"postgres://postgres@127.0.0.1:{primary_port}/rp"
        with psycopg.connect(f"postgres://postgres@127.0.0.1:{primary_port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE rp")
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": primary}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO_ROOT, env=env, check=True,
                       capture_output=True, timeout=300)
        subprocess.run([*pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary_port), "-U", "postgres",
                        "-D", str(replica_dir), "-R", "-X", "stream"], check=True, capture_output=True, timeout=120)
        replica_port = free_port()
        started.append(start_postgres(replica_dir, replica_port, root / "replica.log"))
        replica = f"postgres://postgres@127.0.0.1:{replica_port}/rp"
        with psycopg.connect(replica) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0], "the replica is not a standby"
        yield primary, replica, root
    finally:
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(data, ignore_errors=True)


SEED = """
import json
from knox.models import AuthToken
from tests.factories import UserFactory, group_with_members
alice = UserFactory(username="alice", balance=100_000)
bob, carol = UserFactory(username="bob", pin=None), UserFactory(username="carol", pin=None)
group = group_with_members(alice, [bob, carol], name="Family")
print(json.dumps({"group": str(group.id), **{u.username: AuthToken.objects.create(u)[1] for u in (alice, bob, carol)}}))
"""


@pytest.fixture(scope="module")
def service(cluster):
    primary, replica, root = cluster
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": primary,
           "DATABASE_REPLICA_URL": replica, "REPLICA_READ_YOUR_WRITES_SECONDS": str(WINDOW), "API_THROTTLE": "off",
           "VAR_DIR": str(root / "var"), "PYTHONUNBUFFERED": "1"}
    env.pop("CACHE_URL", None)  # one gunicorn process: its local cache holds the write marks
    seeded = subprocess.run([sys.executable, "manage.py", "shell", "-c", SEED], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    world = json.loads(seeded.stdout.strip().splitlines()[-1])
    port = free_port()
    web = Proc("web", [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
                       "--workers", "1", "--threads", "4"], env, root / "web.log")
    try:
        wait_for_http(port, world["alice"], web)
        yield port, world, replica
    finally:
        web.stop()
        print(web.output()[-5000:])


def replica_sql(replica: str, sql: str):
    with psycopg.connect(replica, autocommit=True) as conn:
        return conn.execute(sql).fetchone()


def wait_replayed(replica: str, packet_id: str) -> None:
    deadline = time.time() + 20
    while not replica_sql(replica, f"SELECT count(*) FROM redpackets_packet WHERE id = '{packet_id}'")[0]:
        assert time.time() < deadline, "the replica never replayed the packet"
        time.sleep(0.1)


def claimed_count(port: int, token: str, packet_id: str) -> int:
    reply = call(port, "GET", f"/api/v1/packets/{packet_id}", token=token)
    assert reply.status == 200, reply.body
    return reply.json()["claimed_count"]


def history_kinds(port: int, token: str) -> list[str]:
    reply = call(port, "GET", "/api/v1/wallet/transactions", token=token)
    assert reply.status == 200, reply.body
    return [entry["kind"] for entry in reply.json()["results"]]


def test_reads_go_to_the_replica_money_and_a_writers_next_reads_to_the_primary(service):
    port, world, replica = service
    sent = call(port, "POST", "/api/v1/packets", token=world["alice"], key=str(uuid.uuid4()),
                body={"group": world["group"], "kind": "fixed", "share_count": 2, "share_amount": 300,
                      "pin": PIN})
    assert sent.status == 201, sent.body
    packet_id = sent.json()["id"]
    wait_replayed(replica, packet_id)
    time.sleep(WINDOW + 0.5)  # alice's own window after her send has passed
    replica_sql(replica, "SELECT pg_wal_replay_pause()")
    try:
        # A claim while the replica lags: the money path reads and writes the primary.
        claim = call(port, "POST", f"/api/v1/packets/{packet_id}/claim", token=world["bob"])
        assert claim.status == 201, claim.body
        assert call(port, "GET", "/api/v1/wallet", token=world["bob"]).json()["balance"] == 300

        # bob, who just wrote, reads his own claim (primary); carol reads the paused replica.
        assert claimed_count(port, world["bob"], packet_id) == 1
        assert history_kinds(port, world["bob"])[:1] == ["packet_claim"]
        assert claimed_count(port, world["carol"], packet_id) == 0
        assert claimed_count(port, world["alice"], packet_id) == 0

        # Once bob's window has passed he reads the replica too.
        time.sleep(WINDOW + 0.5)
        assert claimed_count(port, world["bob"], packet_id) == 0
        assert history_kinds(port, world["bob"]) == []

        # carol's claim sees bob's (primary), though her reads so far came from the replica.
        second = call(port, "POST", f"/api/v1/packets/{packet_id}/claim", token=world["carol"])
        assert second.status == 201, second.body
        third = call(port, "POST", f"/api/v1/packets/{packet_id}/claim", token=world["alice"])
        assert third.status == 409 and third.code() == "packet_exhausted", third.body
    finally:
        replica_sql(replica, "SELECT pg_wal_replay_resume()")

    # Replay resumed: every reader converges.
    deadline = time.time() + 20
    while claimed_count(port, world["alice"], packet_id) != 2:
        assert time.time() < deadline, "the replica did not catch up"
        time.sleep(0.2)


def test_the_group_packet_list_reads_the_replica(service):
    port, world, replica = service
    sent = call(port, "POST", "/api/v1/packets", token=world["alice"], key=str(uuid.uuid4()),
                body={"group": world["group"], "kind": "fixed", "share_count": 1, "share_amount": 100,
                      "pin": PIN})
    assert sent.status == 201, sent.body
    wait_replayed(replica, sent.json()["id"])
    replica_sql(replica, "SELECT pg_wal_replay_pause()")
    try:
        newer = call(port, "POST", "/api/v1/packets", token=world["alice"], key=str(uuid.uuid4()),
                     body={"group": world["group"], "kind": "fixed", "share_count": 1, "share_amount": 100,
                           "pin": PIN})
        assert newer.status == 201, newer.body

        def listed(token):
            reply = call(port, "GET", f"/api/v1/groups/{world['group']}/packets", token=token)
            assert reply.status == 200, reply.body
            return [p["id"] for p in reply.json()["results"]]

        assert newer.json()["id"] in listed(world["alice"])  # her own send: primary
        assert newer.json()["id"] not in listed(world["bob"])  # the paused replica
        assert sent.json()["id"] in listed(world["bob"])
    finally:
        replica_sql(replica, "SELECT pg_wal_replay_resume()")
