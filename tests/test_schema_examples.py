"""Swagger's example bodies are requests that work: each one, sent to the service on the demo data, succeeds."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from knox.models import AuthToken
from rest_framework.test import APIClient

from config.schema import EXAMPLE_GROUP_ID
from redpackets.models import ChatGroup
from redpackets.services import packet_send
from wallets.services import user_register

HTTP_METHODS = {"get", "put", "post", "patch", "delete"}


def _schema() -> dict:
    return APIClient().get("/api/schema/", {"format": "json"}).json()


def request_examples():
    cases = []
    for path, item in _schema()["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS or "requestBody" not in operation:
                continue
            examples = operation["requestBody"]["content"]["application/json"].get("examples", {})
            cases += [pytest.param(path, method, name, ex["value"], id=f"{operation['operationId']}-{name}")
                      for name, ex in examples.items()]
    return cases


def test_every_operation_that_takes_a_body_has_examples():
    operations = {
        op["operationId"] for item in _schema()["paths"].values() for m, op in item.items()
        if m in HTTP_METHODS and "requestBody" in op
    }

    assert operations == {p.id.split("-")[0] for p in request_examples()}


def test_the_send_examples_cover_each_packet_kind():
    kinds = {p.values[3]["kind"] for p in request_examples() if p.values[0] == "/api/v1/packets"}

    assert kinds == {"random", "fixed"}


@pytest.mark.django_db(transaction=True)  # a send commits its PIN try outside the transaction
@pytest.mark.parametrize(("path", "method", "name", "body"), request_examples())
def test_each_request_example_succeeds_on_the_demo_data(path, method, name, body):
    # Given the demo data of `make run`, and dora registered without a PIN
    call_command("seed_demo", stdout=StringIO())
    dora = user_register(username="dora", password="lucky-money-2026") if "auth/register" not in path else None
    family = ChatGroup.objects.get(name="Family")
    users = get_user_model().objects
    caller = dora if path == "/api/v1/wallet/pin" and "current_pin" not in body else users.get(username="alice")
    # A claim example is sent by bob to a packet of alice's with the example's passphrase, if any.
    packet = None
    if "{packet_id}" in path:
        caller = users.get(username="bob")
        packet = packet_send(
            sender=users.get(username="alice"), group_id=family.id, kind="random", share_count=2, total_amount=200,
            passphrase=body.get("passphrase"),
        )
    client = APIClient()
    if "auth/" not in path:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {AuthToken.objects.create(caller)[1]}")
    if body.get("group") == EXAMPLE_GROUP_ID:
        body = {**body, "group": str(family.id)}

    # When the example is sent as it stands
    url = path.replace("{group_id}", str(family.id)).replace("{packet_id}", str(packet.id) if packet else "")
    response = getattr(client, method)(url, body, format="json")

    # Then it works
    assert 200 <= response.status_code < 300, (name, response.content)
