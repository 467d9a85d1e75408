"""The admin dashboard: escrow, active and expiring packets, sweep lag, backlogs, queues, each linking to its list."""

import base64
import re
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from events.models import Event
from events.services import events_relay, webhook_endpoint_create
from redpackets.models import Packet, PacketKind
from redpackets.services import packet_claim, packet_refund_expired, packet_send
from tests.factories import PASSWORD, UserFactory, group_with_members
from wallets.models import AdjustmentRequest, PaymentPin, ReconciliationMode
from wallets.services import adjustment_request, reconciliation_run

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()


@pytest.fixture
def root():
    return User.objects.create_superuser("root", password=PASSWORD)


@pytest.fixture
def admin_client(root) -> Client:
    client = Client()
    client.force_login(root)
    return client


def figures(client: Client) -> dict[str, tuple[str, str | None]]:
    """{label: (value, link)} as the page shows them."""
    response = client.get(reverse("admin:dashboard"))
    assert response.status_code == 200
    return {figure.label: (figure.value, figure.url)
            for section in response.context["sections"].values() for figure in section}


def send(sender, group, *, ttl: int, **terms) -> Packet:
    with override_settings(REDPACKET_TTL_SECONDS=ttl):
        return packet_send(sender=sender, group_id=group.id, **terms)


def test_the_dashboard_shows_escrow_packets_and_the_sweep_lag_with_links(admin_client):
    sender = UserFactory(balance=100_000)
    crowd = [UserFactory(pin=None) for _ in range(3)]
    group = group_with_members(sender, crowd)
    active = send(sender, group, ttl=3600, kind=PacketKind.FIXED, share_count=3, share_amount=1_000)
    packet_claim(packet_id=active.id, user=crowd[0])
    finished = send(sender, group, ttl=3600, kind=PacketKind.FIXED, share_count=1, share_amount=700)
    packet_claim(packet_id=finished.id, user=crowd[1])
    unswept = send(sender, group, ttl=1, kind=PacketKind.FIXED, share_count=2, share_amount=250)
    swept = send(sender, group, ttl=1, kind=PacketKind.FIXED, share_count=2, share_amount=40)
    time.sleep(max(0.0, (swept.expires_at - timezone.now()).total_seconds()) + 0.05)
    packet_refund_expired(packet_id=swept.id)

    shown = figures(admin_client)

    # 2 free shares of the active packet + 2 of the unswept one
    assert shown["Money in escrow"] == ("25.00 CNY", reverse("admin:wallets_account_changelist"))
    assert shown["Active packets"] == ("1", "/admin/redpackets/packet/?status=active")
    value, expiring_url = shown["Expiring packets"]
    assert value == "1"
    assert [p.id for p in admin_client.get(expiring_url).context["cl"].result_list] == [unswept.id]
    lag, oldest_url = shown["Sweep lag"]
    assert re.fullmatch(r"\d+ s", lag)
    assert oldest_url == reverse("admin:redpackets_packet_change", args=[unswept.id])
    assert [p.id for p in admin_client.get(shown["Active packets"][1]).context["cl"].result_list] == [active.id]


def test_a_sweep_behind_its_window_is_flagged(admin_client):
    sender = UserFactory(balance=10_000)
    group = group_with_members(sender, [UserFactory(pin=None)])
    late = send(sender, group, ttl=1, kind=PacketKind.FIXED, share_count=1, share_amount=100)
    time.sleep(max(0.0, (late.expires_at - timezone.now()).total_seconds()) + 1.1)  # no sweep runs in tests

    with override_settings(REDPACKET_SWEEP_SECONDS=1):
        response = admin_client.get(reverse("admin:dashboard"))

    (lag,) = [f for s in response.context["sections"].values() for f in s if f.label == "Sweep lag"]
    assert lag.alert and int(lag.value.split()[0]) >= 1
    assert b'class="figure alert" data-figure="sweep-lag"' in response.content


def test_with_nothing_going_on_the_dashboard_says_so(admin_client):
    shown = figures(admin_client)

    assert shown["Money in escrow"][0] == "nothing"
    assert shown["Active packets"][0] == shown["Expiring packets"][0] == "0"
    assert shown["Sweep lag"][0] == "none"


def test_the_dashboard_shows_the_operators_queues_and_the_reconciliation(admin_client, root):
    alice = UserFactory(balance=500)
    adjustment_request(wallet=alice.wallet, amount=100, reason="ticket #1", operator=root)
    PaymentPin.objects.filter(user=alice).update(locked_until=timezone.now() + timedelta(minutes=10))

    shown = figures(admin_client)

    value, url = shown["Adjustments waiting for approval"]
    assert value == "1"
    assert list(admin_client.get(url).context["cl"].result_list) == list(AdjustmentRequest.objects.all())
    assert shown["Locked PINs"] == ("1", reverse("admin:wallets_paymentpin_changelist"))
    assert shown["Last reconciliation"] == ("never run", reverse("admin:wallets_wallet_reconcile"))
    assert admin_client.get(shown["Last reconciliation"][1]).status_code == 200

    run = reconciliation_run(mode=ReconciliationMode.FULL)
    value, url = figures(admin_client)["Last reconciliation"]

    assert value == "OK"
    assert f'data-run="{run.pk}"'.encode() in admin_client.get(url).content


def test_the_outbox_and_webhook_backlog_count_what_waits_and_link_to_it(admin_client):
    # Given two packets sent (an event each in the outbox) and a webhook endpoint
    sender = UserFactory(balance=10_000)
    group = group_with_members(sender, [UserFactory(pin=None)])
    for _ in range(2):
        send(sender, group, ttl=3600, kind=PacketKind.FIXED, share_count=1, share_amount=100)
    webhook_endpoint_create(url="http://127.0.0.1:9/hooks", secret="whsec_" + base64.b64encode(b"k" * 24).decode())
    waiting = set(Event.objects.filter(position__isnull=True).values_list("id", flat=True))
    # (the group's creation may have recorded events of its own)
    assert len(waiting) >= 2

    before_relay = figures(admin_client)

    assert before_relay["Outbox backlog"][0] == str(len(waiting))
    assert before_relay["Webhook backlog"][0] == "0"
    listed = admin_client.get(before_relay["Outbox backlog"][1]).context["cl"].result_list
    assert {event.id for event in listed} == waiting

    # When the relay positions them, each gets a delivery to make
    events_relay()
    after_relay = figures(admin_client)

    assert after_relay["Outbox backlog"][0] == "0"
    assert after_relay["Webhook backlog"][0] == str(len(waiting))
    listed = admin_client.get(after_relay["Webhook backlog"][1]).context["cl"].result_list
    assert {delivery.event_id for delivery in listed} == waiting


def test_the_admin_index_links_to_the_dashboard_and_staff_only_see_it(admin_client):
    index = admin_client.get(reverse("admin:index"))
    anonymous = Client().get(reverse("admin:dashboard"))

    assert f'href="{reverse("admin:dashboard")}"'.encode() in index.content
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
