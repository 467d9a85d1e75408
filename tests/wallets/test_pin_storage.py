"""How the PIN is stored: HMAC-SHA256 under a key id, v1 PBKDF2 hashes rehashed, keys rotated."""

import pytest
from django.contrib.auth.hashers import make_password
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from config.errors import InvalidPin
from tests.factories import PIN, UserFactory
from wallets.models import PaymentPin
from wallets.pins import pin_hash
from wallets.services import pin_verify

WRONG = "999999"
OLD_KEY = "old-pin-key-0123456789-0123456789-abcdef"
NEW_KEY = "new-pin-key-0123456789-0123456789-abcdef"


def stored(user) -> PaymentPin:
    return PaymentPin.objects.get(user=user)


@pytest.mark.django_db
def test_a_new_pin_is_an_hmac_under_the_current_key_id():
    with override_settings(PIN_KEY=NEW_KEY, PIN_KEY_ID="k7"):
        user = UserFactory()

    record = stored(user)
    assert record.pin_key_id == "k7"
    assert record.pin_hash.startswith("hmac-sha256$")
    assert PIN not in record.pin_hash


@pytest.mark.django_db
def test_the_same_pin_of_two_users_is_stored_differently():
    alice, bob = UserFactory(), UserFactory()

    assert stored(alice).pin_hash != stored(bob).pin_hash


@pytest.mark.django_db(transaction=True)
@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"])
def test_a_v1_pbkdf2_hash_still_verifies_and_is_rehashed_on_the_right_pin():
    user = UserFactory()
    legacy = make_password(PIN)  # what v1 stored: Django's production hasher
    assert legacy.startswith("pbkdf2_sha256$")
    PaymentPin.objects.filter(user=user).update(pin_hash=legacy, pin_key_id="")

    pin_verify(user=user, pin=PIN)

    record = stored(user)
    assert record.pin_key_id == "1"
    assert record.pin_hash == pin_hash(user_id=user.pk, pin=PIN).digest
    pin_verify(user=user, pin=PIN)  # and the new form verifies


@pytest.mark.django_db(transaction=True)
def test_a_wrong_pin_against_a_v1_hash_is_counted_and_leaves_the_hash_alone():
    user = UserFactory()
    legacy = make_password(PIN)
    PaymentPin.objects.filter(user=user).update(pin_hash=legacy, pin_key_id="")

    with pytest.raises(InvalidPin):
        pin_verify(user=user, pin=WRONG)

    record = stored(user)
    assert (record.pin_hash, record.pin_key_id, record.failed_attempts) == (legacy, "", 1)


@pytest.mark.django_db(transaction=True)
def test_after_a_key_rotation_an_old_key_hash_verifies_and_is_rehashed_under_the_new_key():
    with override_settings(PIN_KEY=OLD_KEY, PIN_KEY_ID="1"):
        user = UserFactory()
    old_hash = stored(user).pin_hash

    with override_settings(PIN_KEY=NEW_KEY, PIN_KEY_ID="2", PIN_RETIRED_KEYS={"1": OLD_KEY}):
        pin_verify(user=user, pin=PIN)
        record = stored(user)
        assert record.pin_key_id == "2"
        assert record.pin_hash not in (old_hash, "")
        assert record.pin_hash == pin_hash(user_id=user.pk, pin=PIN).digest

    # Once rehashed the old key can go.
    with override_settings(PIN_KEY=NEW_KEY, PIN_KEY_ID="2", PIN_RETIRED_KEYS={}):
        pin_verify(user=user, pin=PIN)


@pytest.mark.django_db(transaction=True)
def test_after_a_key_rotation_a_wrong_pin_is_counted_and_not_rehashed():
    with override_settings(PIN_KEY=OLD_KEY, PIN_KEY_ID="1"):
        user = UserFactory()
    old_hash = stored(user).pin_hash

    with override_settings(PIN_KEY=NEW_KEY, PIN_KEY_ID="2", PIN_RETIRED_KEYS={"1": OLD_KEY}):
        with pytest.raises(InvalidPin, match="4 tries left"):
            pin_verify(user=user, pin=WRONG)

    record = stored(user)
    assert (record.pin_hash, record.pin_key_id, record.failed_attempts) == (old_hash, "1", 1)


@pytest.mark.django_db(transaction=True)
def test_a_hash_under_a_key_nobody_configured_is_an_error_not_a_wrong_try():
    with override_settings(PIN_KEY=OLD_KEY, PIN_KEY_ID="1"):
        user = UserFactory()

    with override_settings(PIN_KEY=NEW_KEY, PIN_KEY_ID="2", PIN_RETIRED_KEYS={}):
        with pytest.raises(ImproperlyConfigured, match="'1'"):
            pin_verify(user=user, pin=PIN)

    assert stored(user).failed_attempts == 0


@pytest.mark.django_db(transaction=True)
def test_a_pin_under_another_key_does_not_verify():
    with override_settings(PIN_KEY=OLD_KEY, PIN_KEY_ID="1"):
        user = UserFactory()

    # Same key id, different key: what a copied table without our key amounts to.
    with override_settings(PIN_KEY=NEW_KEY, PIN_KEY_ID="1"):
        with pytest.raises(InvalidPin):
            pin_verify(user=user, pin=PIN)
