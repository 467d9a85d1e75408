"""The operators' admin for groups and packets, and its "expire now" action."""

import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from redpackets.models import Packet, PacketKind, PacketStatus, Share
from redpackets.selectors import packet_detail
from redpackets.services import packet_claim, packet_refund_expired, packet_send
from tests.factories import PASSWORD, UserFactory, group_with_members
from wallets.models import Account, AccountKind, LedgerTransaction, TransactionKind
from wallets.money import format_money

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

CHANGELIST = "admin:redpackets_packet_changelist"


def balance_of(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def refunds_of(packet):
    return LedgerTransaction.objects.filter(packet_id=packet.id, kind=TransactionKind.PACKET_REFUND)


@pytest.fixture
def admin_client() -> Client:
    superuser = get_user_model().objects.create_superuser(username="root", password=PASSWORD)
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def staff_client() -> Client:
    staff = UserFactory(pin=None)
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    staff.user_permissions.add(
        Permission.objects.get(codename="view_packet", content_type__app_label="redpackets"),
        Permission.objects.get(codename="view_chatgroup", content_type__app_label="redpackets"),
    )
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def sender():
    return UserFactory(balance=100_000)


@pytest.fixture
def crowd():
    return [UserFactory(pin=None) for _ in range(4)]


@pytest.fixture
def group(sender, crowd):
    return group_with_members(sender, crowd, name="Family")


def send(sender, group, *, ttl: int = 3600, **terms) -> Packet:
    with override_settings(REDPACKET_TTL_SECONDS=ttl):
        return packet_send(sender=sender, group_id=group.id, **terms)


def listed(client: Client, **query) -> set:
    response = client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    return {packet.id for packet in response.context["cl"].result_list}


def test_the_packet_list_filters_by_status_and_kind(admin_client, sender, crowd, group):
    # Given an active, a finished, an expired-and-refunded and an expired-not-yet-swept packet
    active = send(sender, group, kind=PacketKind.RANDOM, share_count=3, total_amount=900)
    packet_claim(packet_id=active.id, user=crowd[0])
    finished = send(sender, group, ttl=1, kind=PacketKind.FIXED, share_count=2, share_amount=100)
    for user in crowd[:2]:
        packet_claim(packet_id=finished.id, user=user)
    refunded = send(sender, group, ttl=1, kind=PacketKind.FIXED, share_count=2, share_amount=50)
    unswept = send(sender, group, ttl=1, kind=PacketKind.RANDOM, share_count=2, total_amount=80)
    time.sleep(max(0.0, (unswept.expires_at - timezone.now()).total_seconds()) + 0.05)
    packet_refund_expired(packet_id=refunded.id)

    # Then each filter lists exactly its packets
    assert listed(admin_client) == {active.id, finished.id, refunded.id, unswept.id}
    assert listed(admin_client, status=PacketStatus.ACTIVE) == {active.id}
    assert listed(admin_client, status=PacketStatus.FINISHED) == {finished.id}
    assert listed(admin_client, status=PacketStatus.EXPIRED) == {refunded.id}
    assert listed(admin_client, status=PacketStatus.EXPIRING) == {unswept.id}
    assert listed(admin_client, kind__exact=PacketKind.FIXED) == {finished.id, refunded.id}
    assert listed(admin_client, kind__exact=PacketKind.RANDOM, status=PacketStatus.EXPIRING) == {unswept.id}
    assert listed(admin_client, kind__exact=PacketKind.RANDOM, status=PacketStatus.EXPIRED) == set()

    # and the list shows each packet's derived status
    response = admin_client.get(reverse(CHANGELIST))
    content = response.content.decode()
    for status in PacketStatus:
        assert f">{status.value}<" in content


def test_the_packet_page_shows_its_shares(admin_client, sender, crowd, group):
    packet = send(sender, group, kind=PacketKind.RANDOM, share_count=4, total_amount=4_321)
    claim = packet_claim(packet_id=packet.id, user=crowd[0])

    response = admin_client.get(reverse("admin:redpackets_packet_change", args=[packet.id]))

    assert response.status_code == 200
    (shares_formset,) = [
        formset for formset in response.context["inline_admin_formsets"] if formset.formset.model is Share
    ]
    shown = [form.instance for form in shares_formset.formset.forms]
    assert [share.seq for share in shown] == [0, 1, 2, 3]
    assert sum(share.amount for share in shown) == 4_321
    content = response.content.decode()
    assert crowd[0].username in content
    shown_amounts = re.findall(r'<td class="field-amount_display">\s*<p>([^<]*)</p>', content)
    assert shown_amounts == [format_money(share.amount, "CNY") for share in shown]
    assert format_money(claim.amount, "CNY") in shown_amounts
    assert "43.21 CNY" in content


def test_expire_now_refunds_an_active_packet_once_through_the_service(admin_client, sender, crowd, group):
    # Given an active packet with one of its three shares claimed
    packet = send(sender, group, kind=PacketKind.FIXED, share_count=3, share_amount=1_000)
    packet_claim(packet_id=packet.id, user=crowd[0])
    assert balance_of(sender) == 97_000
    expire = {"action": "expire_now", "_selected_action": [str(packet.id)]}

    # When a superuser runs "expire now" on it, it first asks, and moves nothing
    confirmation = admin_client.post(reverse(CHANGELIST), expire)

    assert confirmation.status_code == 200
    assert confirmation.templates[0].name == "admin/redpackets/expire_now_confirmation.html"
    assert "20.00 CNY" in confirmation.content.decode()  # the two free shares it would refund
    assert 'name="post" value="yes"' in confirmation.content.decode()
    packet.refresh_from_db()
    assert packet.settled_at is None
    assert balance_of(sender) == 97_000
    assert refunds_of(packet).count() == 0

    # When they confirm
    response = admin_client.post(reverse(CHANGELIST), {**expire, "post": "yes"}, follow=True)

    # Then the two free shares are back with the sender, in one refund
    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == ["Expired 1 packet(s); 0 were settled already."]
    packet.refresh_from_db()
    assert packet.settled_at is not None
    assert packet.refunded_amount == 2_000
    assert balance_of(sender) == 99_000
    assert refunds_of(packet).count() == 1
    assert Share.objects.filter(packet=packet, refunded=True).count() == 2
    assert packet_detail(packet_id=packet.id, viewer=sender).status == PacketStatus.EXPIRED
    assert listed(admin_client, status=PacketStatus.EXPIRED) == {packet.id}
    call_command("reconcile")

    # When it is run again (a second tab's confirmation), nothing more happens
    settled_at = packet.settled_at
    response = admin_client.post(reverse(CHANGELIST), {**expire, "post": "yes"}, follow=True)

    assert [str(m) for m in response.context["messages"]] == ["Expired 0 packet(s); 1 were settled already."]
    packet.refresh_from_db()
    assert packet.settled_at == settled_at
    assert balance_of(sender) == 99_000
    assert refunds_of(packet).count() == 1
    call_command("reconcile")


def test_a_staff_member_who_is_not_a_superuser_cannot_expire_packets(staff_client, sender, crowd, group):
    packet = send(sender, group, kind=PacketKind.FIXED, share_count=2, share_amount=500)

    page = staff_client.get(reverse(CHANGELIST))
    response = staff_client.post(
        reverse(CHANGELIST), {"action": "expire_now", "_selected_action": [str(packet.id)], "post": "yes"}, follow=True
    )

    assert page.status_code == 200
    assert "expire_now" not in page.content.decode()
    assert "expire_now" not in page.context["cl"].model_admin.get_actions(page.wsgi_request)
    assert response.status_code == 200
    packet.refresh_from_db()
    assert packet.settled_at is None
    assert refunds_of(packet).count() == 0
    assert balance_of(sender) == 99_000


def test_the_group_page_shows_its_members(admin_client, sender, crowd, group):
    changelist = admin_client.get(reverse("admin:redpackets_chatgroup_changelist"))
    page = admin_client.get(reverse("admin:redpackets_chatgroup_change", args=[group.id]))

    assert changelist.status_code == 200
    (row,) = changelist.context["cl"].result_list
    assert row.member_total == 5
    assert page.status_code == 200
    content = page.content.decode()
    for user in [sender, *crowd]:
        assert user.username in content
    (memberships,) = page.context["inline_admin_formsets"]
    assert {form.instance.user_id for form in memberships.formset.forms} == {u.pk for u in [sender, *crowd]}
