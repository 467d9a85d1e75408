"""Support unlocks a locked payment PIN in the admin: with a reason, audited, read-only afterwards."""

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from config.errors import PermissionDenied, ValidationFailed
from tests.factories import PASSWORD, PIN, UserFactory, login
from wallets.models import PaymentPin, PinUnlock
from wallets.services import pin_unlock

pytestmark = pytest.mark.django_db
User = get_user_model()
REASON = "Identity checked on a video call, ticket #77"


def operator(username: str, *codenames: str):
    staff = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="wallets", codename__in=codenames))
    return User.objects.get(pk=staff.pk)


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def change_pin(api, current_pin: str):
    return api.put("/api/v1/wallet/pin", {"pin": "135791", "current_pin": current_pin}, format="json")


@pytest.fixture
def support():
    return operator("sam", "view_paymentpin", "add_pinunlock", "view_pinunlock")


@pytest.fixture
def locked_user():
    """A user who typed a wrong PIN until it locked."""
    user = UserFactory(username="alice")
    api = login(user)
    for _ in range(settings.PIN_MAX_FAILURES):
        change_pin(api, current_pin="999999")
    locked = change_pin(api, current_pin=PIN)
    assert (locked.status_code, locked.json()["error"]["code"]) == (423, "pin_locked")
    return user


def test_support_unlocks_a_locked_pin_with_a_reason_and_it_is_recorded(support, locked_user):
    record = PaymentPin.objects.get(user=locked_user)
    lock = record.locked_until
    sam = client_of(support)
    unlock_url = reverse("admin:wallets_paymentpin_unlock", args=[record.pk])

    page = sam.get(reverse("admin:wallets_paymentpin_change", args=[record.pk]))
    form = sam.get(unlock_url)
    without_reason = sam.post(unlock_url, {"reason": "  "})

    assert b"Unlock</a>" in page.content
    assert form.status_code == 200 and b'name="reason"' in form.content
    assert without_reason.status_code == 200 and without_reason.context["form"].errors["reason"]
    assert PaymentPin.objects.get(user=locked_user).locked_until == lock

    done = sam.post(unlock_url, {"reason": REASON}, follow=True)

    assert [str(m) for m in done.context["messages"]] == [
        "Unlocked the PIN of alice; the unlock is recorded with your reason."]
    record.refresh_from_db()
    assert (record.failed_attempts, record.first_failed_at, record.locked_until) == (0, None, None)
    audit = PinUnlock.objects.get()
    assert (audit.user, audit.unlocked_by, audit.reason, audit.lifted_lock_until) == (locked_user, support, REASON, lock)
    # The user's own PIN works again (unchanged by the unlock)
    assert change_pin(login(locked_user), current_pin=PIN).status_code == 204


def test_a_pin_that_is_not_locked_has_nothing_to_unlock(support):
    user = UserFactory()
    record = PaymentPin.objects.get(user=user)

    page = client_of(support).get(reverse("admin:wallets_paymentpin_change", args=[record.pk]))
    attempt = client_of(support).post(reverse("admin:wallets_paymentpin_unlock", args=[record.pk]), {"reason": REASON})

    assert b"Unlock</a>" not in page.content
    assert attempt.context["form"].non_field_errors() == ["This PIN is not locked."]
    assert not PinUnlock.objects.exists()


def test_staff_without_the_unlock_permission_cannot_unlock(locked_user):
    viewer = operator("vic", "view_paymentpin")
    record = PaymentPin.objects.get(user=locked_user)

    page = client_of(viewer).get(reverse("admin:wallets_paymentpin_change", args=[record.pk]))
    attempt = client_of(viewer).post(reverse("admin:wallets_paymentpin_unlock", args=[record.pk]), {"reason": REASON})

    assert page.status_code == 200 and b"Unlock</a>" not in page.content
    assert attempt.status_code == 403
    assert PaymentPin.objects.get(user=locked_user).locked_until is not None
    assert not PinUnlock.objects.exists()


def test_nobody_unlocks_their_own_pin(locked_user):
    locked_user.is_staff = True
    locked_user.save(update_fields=["is_staff"])
    locked_user.user_permissions.add(Permission.objects.get(codename="add_pinunlock"))
    me = User.objects.get(pk=locked_user.pk)

    with pytest.raises(PermissionDenied):
        pin_unlock(user=me, operator=me, reason=REASON)
    with pytest.raises(ValidationFailed):
        pin_unlock(user=me, operator=User.objects.create_superuser("root", password=PASSWORD), reason=" ")
    assert PaymentPin.objects.get(user=locked_user).locked_until is not None


def test_the_audit_is_read_only_in_the_admin(support, locked_user):
    pin_unlock(user=locked_user, operator=support, reason=REASON)
    audit = PinUnlock.objects.get()
    root = client_of(User.objects.create_superuser("root", password=PASSWORD))

    listed = root.get(reverse("admin:wallets_pinunlock_changelist"))
    seen_by_support = client_of(support).get(reverse("admin:wallets_pinunlock_changelist"))
    add = root.get(reverse("admin:wallets_pinunlock_add"))
    edit = root.post(reverse("admin:wallets_pinunlock_change", args=[audit.pk]), {"reason": "nothing happened"})
    delete = root.post(reverse("admin:wallets_pinunlock_delete", args=[audit.pk]), {"post": "yes"})

    assert listed.status_code == 200 and REASON.encode() in listed.content
    assert seen_by_support.status_code == 200 and REASON.encode() in seen_by_support.content
    assert (add.status_code, edit.status_code, delete.status_code) == (403, 403, 403)
    audit.refresh_from_db()
    assert audit.reason == REASON


@pytest.mark.postgres
def test_the_database_keeps_the_audit_as_written(support, locked_user):
    audit = pin_unlock(user=locked_user, operator=support, reason=REASON)

    for change in (lambda rows: rows.update(reason="nothing happened"), lambda rows: rows.delete()):
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            change(PinUnlock.objects.filter(pk=audit.pk))


def test_the_database_refuses_an_unlock_by_its_owner_or_without_a_reason(locked_user, support):
    lock = PaymentPin.objects.get(user=locked_user).locked_until
    with pytest.raises(IntegrityError, match="pin_unlock_not_by_its_owner"), transaction.atomic():
        PinUnlock.objects.create(user=locked_user, unlocked_by=locked_user, reason=REASON, lifted_lock_until=lock)
    with pytest.raises(IntegrityError, match="pin_unlock_has_reason"), transaction.atomic():
        PinUnlock.objects.create(user=locked_user, unlocked_by=support, reason="", lifted_lock_until=lock)
