"""The signature checks that docs/events.md gives receivers, run against a real delivery:
the standard-library Python one and the Node one (implementations we did not ship)."""

import json
import re
import shutil
import subprocess

import pytest
from django.conf import settings

from events.services import events_relay, webhook_endpoint_create
from tests.events.receiver import Receiver
from tests.events.test_webhooks import attempt_all, new_secret, one_event

pytestmark = pytest.mark.django_db

DOC = (settings.BASE_DIR / "docs" / "events.md").read_text()


def snippet(language: str, heading: str) -> str:
    section = DOC.split(heading, 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def delivery():
    with Receiver(secret := new_secret()) as receiver:
        endpoint = webhook_endpoint_create(url=receiver.url, secret=secret)
        one_event()
        events_relay()
        attempt_all(endpoint)
    (got,) = receiver.received
    return secret, got


def test_the_python_snippet_accepts_our_signature_and_refuses_a_forged_body(delivery):
    secret, got = delivery
    code = snippet("python", "or with the standard library only:")
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the documentation's own snippet
    verify = namespace["verify_webhook"]

    assert verify(secret, got.headers, got.body)
    assert not verify(secret, got.headers, got.body.replace(b"member_added", b"member_gone"))
    assert not verify(new_secret(), got.headers, got.body)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_the_node_snippet_accepts_our_signature_and_refuses_a_forged_body(delivery):
    secret, got = delivery
    code = snippet("js", "### Verifying a signature in Node")
    script = code + (
        "\nconst [secret, headers, body] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "\nconsole.log(JSON.stringify([verifyWebhook(secret, headers, body),"
        " verifyWebhook(secret, headers, body + ' '), verifyWebhook(secret, headers, Buffer.from(body))]));"
    )
    result = subprocess.run(["node", "-e", script], input=json.dumps([secret, got.headers, got.body.decode()]),
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, False, True]
