"""Test data through the services, so every balance comes from a ledger posting."""

import factory
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from redpackets.services import group_create
from wallets.services import pin_set, user_register, wallet_topup

PASSWORD = "test-password-123"
PIN = "246810"


class UserFactory(factory.django.DjangoModelFactory):
    """A registered user with a wallet; `balance` tops it up, `pin` sets a PIN."""

    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")

    @classmethod
    def _create(cls, model_class, username, balance=0, pin=PIN, **kwargs):
        user = user_register(username=username, password=PASSWORD)
        if balance:
            wallet_topup(user=user, amount=balance)
        if pin:
            pin_set(user=user, pin=pin)
        return user


def token_for(user) -> str:
    from knox.models import AuthToken

    return AuthToken.objects.create(user)[1]


def login(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client


def group_with_members(owner, members, name="Friends"):
    return group_create(owner=owner, name=name, member_usernames=[m.username for m in members])
