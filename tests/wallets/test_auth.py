"""Registration, tokens and their revocation, and the wallet every user starts with."""

import pytest
from django.contrib.auth import get_user_model
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.factories import PASSWORD, UserFactory
from wallets.models import Account, AccountKind

pytestmark = pytest.mark.django_db

User = get_user_model()


def obtain_token(api: APIClient, username: str, password: str = PASSWORD) -> str:
    response = api.post("/api/v1/auth/token", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_register_creates_the_user_and_answers_id_and_username(api):
    response = api.post("/api/v1/auth/register", {"username": "alice", "password": "correct-horse-77"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "username"}
    assert body["username"] == "alice"
    assert isinstance(body["id"], str) and body["id"]
    user = User.objects.get(username="alice")
    assert str(user.pk) == body["id"]
    assert user.check_password("correct-horse-77")


def test_a_new_user_has_an_empty_cny_wallet(api):
    api.post("/api/v1/auth/register", {"username": "alice", "password": "correct-horse-77"}, format="json")
    token = obtain_token(api, "alice", "correct-horse-77")

    response = bearer(token).get("/api/v1/wallet")

    assert response.status_code == 200, response.content
    assert response.json() == {"balance": 0, "currency": "CNY"}
    wallet = Account.objects.get(user__username="alice")
    assert (wallet.kind, wallet.balance, wallet.currency) == (AccountKind.WALLET, 0, "CNY")


def test_register_refuses_a_taken_username(api):
    UserFactory(username="alice")

    response = api.post("/api/v1/auth/register", {"username": "alice", "password": "correct-horse-77"}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["username"]
    assert User.objects.filter(username="alice").count() == 1


def test_register_refuses_a_username_that_differs_only_in_case(api):
    UserFactory(username="alice")

    response = api.post("/api/v1/auth/register", {"username": "ALICE", "password": "correct-horse-77"}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert "username" in error["fields"]
    assert not User.objects.filter(username="ALICE").exists()


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("x7#kQ", id="too-short"),
        pytest.param("password", id="too-common"),
        pytest.param("", id="blank"),
    ],
)
def test_register_refuses_a_weak_password(api, password):
    response = api.post("/api/v1/auth/register", {"username": "alice", "password": password}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["password"]
    assert error["fields"]["password"]
    assert not User.objects.filter(username="alice").exists()
    assert not Account.objects.filter(kind=AccountKind.WALLET).exists()


def test_register_lists_every_missing_field(api):
    response = api.post("/api/v1/auth/register", {}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert set(error["fields"]) == {"username", "password"}


def test_register_refuses_a_username_with_spaces(api):
    response = api.post("/api/v1/auth/register", {"username": "al ice", "password": "correct-horse-77"}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert "username" in error["fields"]
    assert not User.objects.exists()


def test_token_is_issued_for_the_right_password_and_opens_the_wallet(api):
    user = UserFactory(balance=700)

    response = api.post("/api/v1/auth/token", {"username": user.username, "password": PASSWORD}, format="json")

    assert response.status_code == 200, response.content
    token = response.json()["token"]
    assert isinstance(token, str) and len(token) >= 32
    assert AuthToken.objects.filter(user=user).count() == 1
    wallet = bearer(token).get("/api/v1/wallet")
    assert wallet.status_code == 200
    assert wallet.json()["balance"] == 700


def test_token_is_refused_for_a_wrong_password(api):
    user = UserFactory()

    response = api.post("/api/v1/auth/token", {"username": user.username, "password": "not-the-password"}, format="json")

    assert_error(response, 401, "not_authenticated")
    assert not AuthToken.objects.filter(user=user).exists()


def test_token_is_refused_for_an_unknown_user(api):
    response = api.post("/api/v1/auth/token", {"username": "nobody", "password": PASSWORD}, format="json")

    assert_error(response, 401, "not_authenticated")


def test_wallet_needs_a_bearer_token(api, user):
    response = api.get("/api/v1/wallet")

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer not-a-real-token", id="unknown-token"),
        pytest.param("Bearer", id="empty-bearer"),
        pytest.param("Basic dXNlcjA6dGVzdC1wYXNzd29yZC0xMjM=", id="basic-auth"),
    ],
)
def test_wallet_refuses_a_bad_authorization_header(api, user, header):
    api.credentials(HTTP_AUTHORIZATION=header)

    response = api.get("/api/v1/wallet")

    assert_error(response, 401, "not_authenticated")


def test_wallet_refuses_a_valid_token_under_another_scheme(api, user):
    token = obtain_token(api, user.username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = client.get("/api/v1/wallet")

    assert_error(response, 401, "not_authenticated")


def test_logout_revokes_only_the_token_it_was_sent_with(api, user):
    first, second = obtain_token(api, user.username), obtain_token(api, user.username)

    response = bearer(first).post("/api/v1/auth/logout")

    assert response.status_code == 204, response.content
    assert_error(bearer(first).get("/api/v1/wallet"), 401, "not_authenticated")
    assert bearer(second).get("/api/v1/wallet").status_code == 200
    assert AuthToken.objects.filter(user=user).count() == 1


def test_logout_all_revokes_every_token_of_the_caller_only(api, user):
    other = UserFactory()
    tokens = [obtain_token(api, user.username) for _ in range(3)]
    other_token = obtain_token(api, other.username)

    response = bearer(tokens[0]).post("/api/v1/auth/logout-all")

    assert response.status_code == 204, response.content
    for token in tokens:
        assert_error(bearer(token).get("/api/v1/wallet"), 401, "not_authenticated")
    assert not AuthToken.objects.filter(user=user).exists()
    assert bearer(other_token).get("/api/v1/wallet").status_code == 200


def test_logout_needs_a_token(api, user):
    response = api.post("/api/v1/auth/logout")

    assert_error(response, 401, "not_authenticated")


@pytest.mark.django_db
def test_database_refuses_a_username_that_differs_only_in_case():
    from django.contrib.auth import get_user_model
    from django.db import IntegrityError, transaction

    User = get_user_model()
    User.objects.create_user(username="casey")

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create_user(username="CASEY")

    assert User.objects.filter(username__iexact="casey").count() == 1


@pytest.mark.django_db
def test_logging_in_beyond_the_token_limit_revokes_the_oldest_tokens(api, settings):
    # Given a user allowed three tokens
    settings.AUTH_TOKENS_PER_USER = 3
    user = UserFactory()
    tokens = [
        api.post("/api/v1/auth/token", {"username": user.username, "password": PASSWORD}, format="json").json()["token"]
        for _ in range(5)
    ]

    # When each token is used
    answers = [APIClient().get("/api/v1/wallet", HTTP_AUTHORIZATION=f"Bearer {t}").status_code for t in tokens]

    # Then the two oldest were revoked and the three newest work
    assert answers == [401, 401, 200, 200, 200]
    assert AuthToken.objects.filter(user=user).count() == 3
