"""The page at /: the client's shell, its demo logins only when DEMO_LOGINS is on, its CSP."""

import json
import os
import re
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.test import override_settings

from wallets.management.commands.seed_demo import DEMO_PASSWORD, DEMO_USERS

pytestmark = pytest.mark.django_db


def page_config(client) -> dict:
    response = client.get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    match = re.search(r'<script id="client-config" type="application/json">(.*?)</script>', response.content.decode())
    return json.loads(match.group(1))


def test_the_root_is_the_client_not_a_json_404(client):
    response = client.get("/")
    body = response.content.decode()
    assert '<script type="module" src="/static/client/app.mjs"></script>' in body
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "connect-src 'self'" in response["Content-Security-Policy"]
    assert page_config(client)["api"] == "/api/v1/"


def test_demo_logins_are_offered_once_the_demo_data_is_loaded(client, capsys):
    assert page_config(client)["demoLogins"] == []  # no demo users yet
    call_command("seed_demo")
    logins = page_config(client)["demoLogins"]
    assert [login["username"] for login in logins] == list(DEMO_USERS)
    assert {login["password"] for login in logins} == {DEMO_PASSWORD}
    assert client.post("/api/v1/auth/token", {"username": "bob", "password": DEMO_PASSWORD},
                       content_type="application/json").status_code == 200


def test_no_demo_logins_while_the_setting_is_off(client, capsys):
    call_command("seed_demo")
    with override_settings(DEMO_LOGINS=False):
        assert page_config(client)["demoLogins"] == []
        assert DEMO_PASSWORD not in client.get("/").content.decode()


def test_production_settings_turn_demo_logins_off():
    env = {**os.environ, "DJANGO_SECRET_KEY": "x" * 60, "PIN_KEY": "y" * 60, "DJANGO_SETTINGS_MODULE": "config.settings.production"}
    env.pop("DEMO_LOGINS", None)
    code = "from django.conf import settings; print(settings.DEMO_LOGINS)"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "False", run.stderr


def test_only_get_is_served_at_the_root(client):
    assert client.post("/").status_code == 405
