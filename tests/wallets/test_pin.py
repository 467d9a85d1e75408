"""The payment PIN: setting and changing it, and locking it after repeated wrong tries."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from config.errors import InvalidPin, PinLocked, PinNotSet
from redpackets.models import Packet
from tests.assertions import assert_error
from tests.concurrency import run_concurrently
from tests.factories import PIN, UserFactory, group_with_members, login
from wallets.models import Account, PaymentPin
from wallets.pins import PinHash, pin_check
from wallets.services import pin_verify

WRONG = "999999"
NEW = "135791"


def change_pin(client, pin=NEW, current_pin=None):
    body = {"pin": pin} if current_pin is None else {"pin": pin, "current_pin": current_pin}
    return client.put("/api/v1/wallet/pin", body, format="json")


def pin_is(user, pin: str) -> bool:
    record = PaymentPin.objects.get(user=user)
    right, _ = pin_check(user_id=user.pk, pin=pin, stored=PinHash(key_id=record.pin_key_id, digest=record.pin_hash))
    return right


def wrong_tries(client, count: int) -> list:
    return [change_pin(client, current_pin=WRONG) for _ in range(count)]


@pytest.mark.django_db
def test_setting_a_first_pin_needs_no_current_pin(api):
    user = UserFactory(pin=None)
    client = login(user)

    response = change_pin(client, pin="123456")

    assert response.status_code == 204, response.content
    assert response.content == b""
    assert pin_is(user, "123456")


@pytest.mark.django_db
def test_the_pin_is_stored_hashed(api):
    user = UserFactory(pin=None)

    change_pin(login(user), pin="123456")

    assert "123456" not in PaymentPin.objects.get(user=user).pin_hash


@pytest.mark.django_db
@pytest.mark.parametrize(
    "pin",
    [
        pytest.param("12345", id="five-digits"),
        pytest.param("1234567", id="seven-digits"),
        pytest.param("12a456", id="letter"),
        pytest.param(" 12345", id="space"),
        pytest.param("", id="empty"),
        pytest.param("１２３４５６", id="fullwidth-digits"),
        pytest.param("\u0660\u0661\u0662\u0663\u0664\u0665", id="arabic-indic-digits"),
        pytest.param(None, id="null"),
    ],
)
def test_a_malformed_pin_is_refused(pin):
    user = UserFactory(pin=None)

    response = login(user).put("/api/v1/wallet/pin", {"pin": pin}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["pin"]
    assert not PaymentPin.objects.filter(user=user).exists()


@pytest.mark.django_db
def test_a_missing_pin_is_refused(user_api):
    response = user_api.put("/api/v1/wallet/pin", {}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert "pin" in error["fields"]


@pytest.mark.django_db
def test_a_malformed_current_pin_is_refused_without_counting_a_try(user, user_api):
    response = change_pin(user_api, current_pin="12")

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["current_pin"]
    assert PaymentPin.objects.get(user=user).failed_attempts == 0


@pytest.mark.django_db
def test_changing_the_pin_requires_the_current_pin(user, user_api):
    response = change_pin(user_api)

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["current_pin"]
    assert pin_is(user, PIN)


@pytest.mark.django_db
def test_changing_the_pin_with_a_wrong_current_pin_is_refused_and_counted(user, user_api):
    response = change_pin(user_api, current_pin=WRONG)

    assert_error(response, 403, "invalid_pin")
    assert pin_is(user, PIN)
    assert PaymentPin.objects.get(user=user).failed_attempts == 1


@pytest.mark.django_db
def test_changing_the_pin_with_the_current_pin_replaces_it(user, user_api):
    response = change_pin(user_api, current_pin=PIN)

    assert response.status_code == 204, response.content
    assert pin_is(user, NEW)
    assert not pin_is(user, PIN)


@pytest.mark.django_db
def test_five_wrong_pins_lock_it_and_then_even_the_right_pin_is_refused(user, user_api):
    before = timezone.now()

    responses = wrong_tries(user_api, settings.PIN_MAX_FAILURES)
    after_lock = change_pin(user_api, current_pin=PIN)

    for response in responses:
        assert_error(response, 403, "invalid_pin")
    error = assert_error(after_lock, 423, "pin_locked")
    assert pin_is(user, PIN)
    record = PaymentPin.objects.get(user=user)
    assert before + settings.PIN_LOCK_DURATION <= record.locked_until <= timezone.now() + settings.PIN_LOCK_DURATION
    assert parse_datetime(error["details"]["locked_until"]) == record.locked_until


@pytest.mark.django_db
def test_four_wrong_pins_do_not_lock_it(user, user_api):
    wrong_tries(user_api, settings.PIN_MAX_FAILURES - 1)

    response = change_pin(user_api, current_pin=PIN)

    assert response.status_code == 204, response.content
    assert pin_is(user, NEW)


@pytest.mark.django_db
def test_a_wrong_pin_while_locked_stays_locked_and_does_not_extend_the_lock(user, user_api):
    wrong_tries(user_api, settings.PIN_MAX_FAILURES)
    locked_until = PaymentPin.objects.get(user=user).locked_until

    response = change_pin(user_api, current_pin=WRONG)

    assert_error(response, 423, "pin_locked")
    assert PaymentPin.objects.get(user=user).locked_until == locked_until


@pytest.mark.django_db
def test_the_lock_lifts_after_the_lock_duration(user, user_api):
    wrong_tries(user_api, settings.PIN_MAX_FAILURES)
    PaymentPin.objects.filter(user=user).update(locked_until=timezone.now() - timedelta(seconds=1))

    response = change_pin(user_api, current_pin=PIN)

    assert response.status_code == 204, response.content
    assert pin_is(user, NEW)
    record = PaymentPin.objects.get(user=user)
    assert (record.failed_attempts, record.first_failed_at, record.locked_until) == (0, None, None)


@pytest.mark.django_db
def test_after_a_lock_lifts_the_count_starts_again(user, user_api):
    wrong_tries(user_api, settings.PIN_MAX_FAILURES)
    PaymentPin.objects.filter(user=user).update(locked_until=timezone.now() - timedelta(seconds=1))

    responses = wrong_tries(user_api, settings.PIN_MAX_FAILURES)

    for response in responses:
        assert_error(response, 403, "invalid_pin")
    assert_error(change_pin(user_api, current_pin=PIN), 423, "pin_locked")


@pytest.mark.django_db
def test_the_right_pin_resets_the_count_of_wrong_tries(user, user_api):
    wrong_tries(user_api, settings.PIN_MAX_FAILURES - 1)
    assert change_pin(user_api, pin=PIN, current_pin=PIN).status_code == 204

    responses = wrong_tries(user_api, settings.PIN_MAX_FAILURES - 1)

    for response in responses:
        assert_error(response, 403, "invalid_pin")
    assert PaymentPin.objects.get(user=user).locked_until is None
    assert change_pin(user_api, current_pin=PIN).status_code == 204


@pytest.mark.django_db
def test_wrong_tries_older_than_the_failure_window_are_forgotten(user, user_api):
    wrong_tries(user_api, settings.PIN_MAX_FAILURES - 1)
    PaymentPin.objects.filter(user=user).update(
        first_failed_at=timezone.now() - settings.PIN_FAILURE_WINDOW - timedelta(seconds=1)
    )

    response = change_pin(user_api, current_pin=WRONG)

    assert_error(response, 403, "invalid_pin")
    record = PaymentPin.objects.get(user=user)
    assert record.failed_attempts == 1
    assert record.locked_until is None


@pytest.mark.django_db
def test_one_users_wrong_pins_do_not_lock_another(user, user_api):
    other = UserFactory()
    wrong_tries(user_api, settings.PIN_MAX_FAILURES)

    response = change_pin(login(other), current_pin=PIN)

    assert response.status_code == 204, response.content


@pytest.mark.django_db(transaction=True)
def test_pin_verify_accepts_the_right_pin_and_refuses_a_missing_one():
    user = UserFactory()
    no_pin = UserFactory(pin=None)

    pin_verify(user=user, pin=PIN)

    with pytest.raises(PinNotSet):
        pin_verify(user=no_pin, pin=PIN)
    with pytest.raises(InvalidPin):
        pin_verify(user=user, pin=WRONG)
    assert PaymentPin.objects.get(user=user).failed_attempts == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_wrong_pins_lock_after_exactly_five():
    user = UserFactory()
    attempts = 20

    results, errors = run_concurrently(lambda: pin_verify(user=user, pin=WRONG), [()] * attempts)

    assert results == [None] * attempts
    kinds = [type(e) for e in errors]
    assert kinds.count(InvalidPin) == settings.PIN_MAX_FAILURES
    assert kinds.count(PinLocked) == attempts - settings.PIN_MAX_FAILURES
    record = PaymentPin.objects.get(user=user)
    assert record.locked_until is not None and record.locked_until > timezone.now()
    with pytest.raises(PinLocked):
        pin_verify(user=user, pin=PIN)


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_right_and_wrong_pins_never_exceed_five_wrong_answers():
    user = UserFactory()
    pins = [WRONG if i % 2 else PIN for i in range(20)]

    results, errors = run_concurrently(lambda pin: pin_verify(user=user, pin=pin), [(p,) for p in pins])

    for pin, error in zip(pins, errors):
        if pin == PIN:
            assert error is None or isinstance(error, PinLocked)
        else:
            assert isinstance(error, (InvalidPin, PinLocked))
    # The try that locks says so; there is at most one, and only then do PinLocked answers appear.
    locking = [e for e in errors if isinstance(e, InvalidPin) and "locked" in e.message]
    record = PaymentPin.objects.get(user=user)
    locked = record.locked_until is not None and record.locked_until > timezone.now()
    assert len(locking) == (1 if locked else 0)
    assert any(isinstance(e, PinLocked) for e in errors) <= locked
    assert record.failed_attempts < settings.PIN_MAX_FAILURES


def send_packet(client, group, pin):
    body = {"group": str(group.id), "kind": "fixed", "share_count": 1, "share_amount": 100}
    if pin is not None:
        body["pin"] = pin
    return client.post("/api/v1/packets", body, format="json")


@pytest.mark.django_db(transaction=True)
def test_wrong_pins_on_sends_lock_sending_and_move_no_money():
    sender = UserFactory(balance=1000)
    group = group_with_members(sender, [UserFactory()])
    client = login(sender)

    wrong = [send_packet(client, group, WRONG) for _ in range(settings.PIN_MAX_FAILURES)]
    right = send_packet(client, group, PIN)

    for response in wrong:
        assert_error(response, 403, "invalid_pin")
    assert_error(right, 423, "pin_locked")
    assert Account.objects.get(user=sender).balance == 1000
    assert not Packet.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_sending_without_a_pin_set_or_given_is_refused():
    no_pin = UserFactory(balance=1000, pin=None)
    with_pin = UserFactory(balance=1000)
    group = group_with_members(no_pin, [with_pin])

    unset = send_packet(login(no_pin), group, PIN)
    missing = send_packet(login(with_pin), group, None)

    assert_error(unset, 403, "pin_not_set")
    error = assert_error(missing, 400, "validation_error")
    assert list(error["fields"]) == ["pin"]
    assert Account.objects.get(user=no_pin).balance == Account.objects.get(user=with_pin).balance == 1000
    assert not Packet.objects.exists()
    assert PaymentPin.objects.get(user=with_pin).failed_attempts == 0
