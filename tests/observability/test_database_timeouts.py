"""Drill: a transaction holds a share's row lock and never ends.

Claims on that packet still answer: the other shares are paid, the claims left
waiting for the held share get a clean 503 `service_unavailable` once PostgreSQL's
lock_timeout passes, nothing is half-applied, and the stuck session is ended by the
database (idle_in_transaction_session_timeout), after which the share is claimable.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from django.core.management import call_command
from django.db import connection
from django.urls import path
from knox.models import AuthToken
from rest_framework.decorators import api_view

from redpackets.models import PacketKind, Share
from redpackets.services import packet_send
from tests.factories import UserFactory, group_with_members
from tests.processes import control_connection
from wallets.models import Account, AccountKind


@api_view(["GET"])
def slow_statement(request):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 50")
        cursor.execute("SELECT pg_sleep(2)")


urlpatterns = [path("slow", slow_statement)]


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_a_statement_timeout_answers_503_service_unavailable_in_the_envelope(user_api):
    response = user_api.get("/slow")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response["Retry-After"] == "1"


@pytest.mark.django_db
def test_every_connection_has_the_timeouts_and_keepalives():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL, which is not reachable here")
    with connection.cursor() as cursor:
        values = {}
        for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"):
            cursor.execute(f"SHOW {name}")
            values[name] = cursor.fetchone()[0]
    assert values == {"statement_timeout": "20s", "lock_timeout": "10s", "idle_in_transaction_session_timeout": "1min"}
    assert connection.get_connection_params()["keepalives"] == 1


def balance_of(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_share_locked_by_a_transaction_that_never_ends(stack):
    # Given a packet of 5 shares, 8 members who want one, and a web server with a 1 s lock timeout
    sender = UserFactory(balance=100_000)
    claimers = [UserFactory(pin=None) for _ in range(8)]
    group = group_with_members(sender, claimers)
    packet = packet_send(sender=sender, group_id=group.id, kind=PacketKind.FIXED, share_count=5, share_amount=300)
    tokens = {user.pk: AuthToken.objects.create(user)[1] for user in claimers}
    stack.web(workers=1, DB_LOCK_TIMEOUT_MS="1000", WEB_THREADS="8")
    # and a client of the database (the app's own settings, a 3 s idle-in-transaction timeout) that locks
    # share 0 in a transaction and then hangs
    holder_name = f"stuck-holder-{stack.tag}"
    params = {**connection.get_connection_params(), "application_name": holder_name,
              "options": "-c idle_in_transaction_session_timeout=3000"}
    params.pop("cursor_factory", None)
    params.pop("context", None)
    holder = psycopg.connect(**params)
    holder.execute("SELECT id FROM redpackets_share WHERE packet_id = %s AND seq = 0 FOR UPDATE", [packet.id])
    locked_at = time.monotonic()

    # When all 8 claim at once
    def claim(user):
        return requests.post(stack.url(f"/api/v1/packets/{packet.id}/claim"), timeout=30,
                             headers={"Authorization": f"Bearer {tokens[user.pk]}", "Connection": "close"})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(claim, claimers))

    # Then 4 are paid the free shares and the other 4 get a clean 503 after the lock timeout
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 4 + [503] * 4, [(a.status_code, a.text) for a in answers]
    refused = [user for user, answer in zip(claimers, answers) if answer.status_code == 503]
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json() == {"error": {"code": "service_unavailable", "message": answer.json()["error"][
                "message"], "fields": {}}}
            assert answer.headers["Retry-After"] == "1"
    # and nothing is half-applied: the refused claimers got no share and no money
    assert not Share.objects.filter(packet=packet, claimed_by__in=refused).exists()
    assert all(balance_of(user) == 0 for user in refused)
    assert Share.objects.filter(packet=packet, claimed_by__isnull=False).count() == 4

    # When the holder stays idle in its transaction
    control = control_connection(f"stuck-control-{stack.tag}")
    try:
        while control.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                              [holder_name]).fetchone()[0]:
            assert time.monotonic() - locked_at < 20, "the database did not end the stuck session"
            time.sleep(0.2)
        ended_after = time.monotonic() - locked_at
    finally:
        control.close()

    # Then the database ended its session, the holder's connection is gone, and the share is claimable
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
        holder.execute("SELECT 1")
    holder.close()
    assert ended_after < 10
    retry = claim(refused[0])
    assert retry.status_code == 201, retry.text
    assert sorted(claim(user).status_code for user in refused[1:]) == [409, 409, 409]
    call_command("reconcile")
