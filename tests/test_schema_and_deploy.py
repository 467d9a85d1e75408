"""The published OpenAPI schema matches the contract, and production settings pass Django's deploy checks."""

import os
import secrets
import subprocess
import sys

import pytest
import yaml
from django.conf import settings

CONTRACT_OPERATIONS = {
    ("/api/v1/auth/register", "post"),
    ("/api/v1/auth/token", "post"),
    ("/api/v1/wallet", "get"),
    ("/api/v1/wallet/pin", "put"),
    ("/api/v1/wallet/topups", "post"),
    ("/api/v1/wallet/transactions", "get"),
    ("/api/v1/groups", "post"),
    ("/api/v1/groups/{group_id}", "get"),
    ("/api/v1/groups/{group_id}/members", "post"),
    ("/api/v1/groups/{group_id}/packets", "get"),
    ("/api/v1/packets", "post"),
    ("/api/v1/packets/{packet_id}", "get"),
    ("/api/v1/packets/{packet_id}/claim", "post"),
}
HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


def manage(*args: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    """Run manage.py in a fresh process with only the given settings environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "CACHE_"))}
    clean.update({"VAR_DIR": str(tmp_path / "var"), "PYTHONDONTWRITEBYTECODE": "1", **env})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR, env=clean, capture_output=True, text=True, timeout=300,
    )


def production_env(**extra: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "PIN_KEY": secrets.token_urlsafe(32),
        "DJANGO_ALLOWED_HOSTS": "example.com",
        "METRICS_TOKEN": secrets.token_urlsafe(32),
        **extra,
    }


@pytest.fixture(scope="module")
def schema() -> dict:
    from rest_framework.test import APIClient

    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return response.json()


def operations(schema: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in schema["paths"].items() for method in item if method in HTTP_METHODS}


def component(schema: dict, name: str) -> dict:
    return schema["components"]["schemas"][name]


def response_schema(schema: dict, path: str, method: str, status: str) -> dict:
    ref = schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    return component(schema, ref.rsplit("/", 1)[-1])


# --- generation ------------------------------------------------------------------------


def test_schema_generation_is_valid_and_free_of_warnings(tmp_path):
    out = tmp_path / "schema.yaml"

    result = manage("spectacular", "--validate", "--fail-on-warn", "--file", str(out),
                    env={"DJANGO_SETTINGS_MODULE": "config.settings.base"}, tmp_path=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Error" not in result.stderr, result.stderr
    generated = yaml.safe_load(out.read_text())
    assert CONTRACT_OPERATIONS <= operations(generated)


# --- contents ----------------------------------------------------------------------------


def test_schema_documents_every_contract_operation(schema):
    assert CONTRACT_OPERATIONS <= operations(schema)


def test_schema_documents_each_path_once_without_the_tolerated_trailing_slash(schema):
    assert not [path for path in schema["paths"] if path.endswith("/")]
    operation_ids = [op["operationId"] for item in schema["paths"].values() for m, op in item.items() if m in HTTP_METHODS]
    assert len(operation_ids) == len(set(operation_ids))


def test_schema_requires_the_bearer_token_except_on_register_and_token(schema):
    assert schema["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "A token from POST /api/v1/auth/token."}
    }
    for path, method in CONTRACT_OPERATIONS:
        security = schema["paths"][path][method].get("security", schema.get("security"))
        if path in {"/api/v1/auth/register", "/api/v1/auth/token"}:
            assert not [s for s in security or [] if s], (path, security)
        else:
            assert security == [{"bearerAuth": []}], (path, security)


def error_of(schema: dict, path: str, method: str, status: str) -> dict:
    """The `error` object of an error response: its codes are an enum."""
    envelope = response_schema(schema, path, method, status)
    assert envelope["required"] == ["error"]
    return component(schema, envelope["properties"]["error"]["$ref"].rsplit("/", 1)[-1])


@pytest.mark.parametrize(
    ("path", "method", "status", "codes"),
    [
        ("/api/v1/auth/register", "post", "400", ["validation_error"]),
        ("/api/v1/auth/token", "post", "401", ["not_authenticated"]),
        ("/api/v1/wallet/topups", "post", "409", ["idempotency_conflict"]),
        ("/api/v1/wallet/pin", "put", "423", ["pin_locked"]),
        ("/api/v1/packets", "post", "403", ["pin_not_set", "invalid_pin"]),
        ("/api/v1/packets", "post", "409", ["insufficient_funds", "idempotency_conflict"]),
        ("/api/v1/packets/{packet_id}/claim", "post", "410", ["packet_expired"]),
        ("/api/v1/packets/{packet_id}", "get", "404", ["not_found"]),
    ],
)
def test_schema_errors_are_the_envelope_with_each_statuses_codes_as_an_enum(schema, path, method, status, codes):
    error = error_of(schema, path, method, status)

    assert {"code", "message", "fields"} <= set(error["required"])
    assert error["properties"]["code"]["enum"] == codes
    fields = component(schema, error["properties"]["fields"]["$ref"].rsplit("/", 1)[-1])
    assert fields["additionalProperties"] == {"type": "array", "items": {"type": "string"}}


def test_schema_pin_lock_states_its_end_in_the_errors_details(schema):
    for path, method in [("/api/v1/wallet/pin", "put"), ("/api/v1/packets", "post")]:
        error = error_of(schema, path, method, "423")

        assert "details" in error["required"]
        details = component(schema, error["properties"]["details"]["$ref"].rsplit("/", 1)[-1])
        assert details["required"] == ["locked_until"]
        assert details["properties"]["locked_until"] == {
            "type": "string", "format": "date-time", "description": "When the PIN takes tries again (UTC).",
        }


def test_schema_every_operation_answers_default_and_the_http_layers_errors(schema):
    generic = component(schema, "Error")
    assert "enum" not in generic["properties"]["code"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation["responses"]
            assert responses["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorEnvelope"
            }, (path, method)
            expected = {"405": "method_not_allowed", "406": "not_acceptable"}
            if "requestBody" in operation:
                expected |= {"413": "payload_too_large", "415": "unsupported_media_type"}
            for status, code in expected.items():
                assert error_of(schema, path, method, status)["properties"]["code"]["enum"] == [code], (path, method)
            if "429" in responses:
                assert responses["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer", (path, method)
            assert operation.get("summary"), (path, method)


def _schemas_in(node):
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _schemas_in(child)
    elif isinstance(node, list):
        for child in node:
            yield from _schemas_in(child)


def test_schema_ids_are_opaque_strings_and_nothing_is_nullable_without_a_type(schema):
    nodes = list(_schemas_in(schema))

    assert not [n for n in nodes if n.get("format") == "uuid"]
    # OpenAPI 3.0.3: nullable only adds null to its own `type`; without one, null is refused.
    assert not [n for n in nodes if n.get("nullable") and "type" not in n]
    assert component(schema, "Packet")["properties"]["my_claim"] == {"$ref": "#/components/schemas/MyClaim"}
    assert component(schema, "MyClaim")["nullable"] is True
    for name in ["id", "group"]:
        assert component(schema, "Packet")["properties"][name] == {"type": "string"}


def test_schema_money_is_int64_everywhere(schema):
    from config.schema import MONEY_PROPERTIES

    money = [
        (name, prop)
        for node in _schemas_in(schema["components"]["schemas"]) if node.get("type") == "object"
        for name, prop in (node.get("properties") or {}).items() if name in MONEY_PROPERTIES
    ]

    assert len(money) >= 10
    for name, prop in money:
        assert (prop.get("items", prop)).get("format") == "int64", (name, prop)


def test_schema_names_its_servers_and_licence(schema):
    assert schema["servers"] == [{"url": "/", "description": "This service"}]
    assert schema["info"]["license"] == {"name": "MIT", "url": "https://opensource.org/license/mit"}


@pytest.mark.parametrize("path", ["/api/v1/wallet/topups", "/api/v1/packets"])
def test_schema_offers_an_idempotency_key_on_money_moving_posts(schema, path):
    parameters = schema["paths"][path]["post"].get("parameters", [])

    assert {"in": "header", "name": "Idempotency-Key"} in [{"in": p["in"], "name": p["name"]} for p in parameters]


@pytest.mark.parametrize(
    ("path", "method", "status", "fields"),
    [
        ("/api/v1/auth/register", "post", "201", {"id", "username"}),
        ("/api/v1/auth/token", "post", "200", {"token"}),
        ("/api/v1/wallet", "get", "200", {"balance", "currency"}),
        ("/api/v1/wallet/topups", "post", "201", {"id", "amount", "balance"}),
        ("/api/v1/groups", "post", "201", {"id", "name", "owner", "members"}),
        ("/api/v1/packets/{packet_id}/claim", "post", "201", {"packet", "amount", "claimed_at"}),
        (
            "/api/v1/packets/{packet_id}", "get", "200",
            {"id", "group", "sender", "kind", "greeting", "total_amount", "share_count", "claimed_count",
             "claimed_amount", "remaining_amount", "refunded_amount", "status", "created_at", "expires_at",
             "finished_at", "claims", "my_claim"},
        ),
    ],
)
def test_schema_responses_carry_the_contract_fields(schema, path, method, status, fields):
    body = response_schema(schema, path, method, status)

    assert fields <= set(body["properties"]), fields - set(body["properties"])
    assert fields <= set(body.get("required", [])), fields - set(body.get("required", []))


def test_schema_types_each_events_data_by_its_type_in_the_feed_and_the_webhook_body(schema):
    from events.models import EventType

    event = component(schema, "Event")
    variants = {ref: component(schema, ref.rsplit("/", 1)[-1]) for ref in event["discriminator"]["mapping"].values()}

    assert event["discriminator"]["propertyName"] == "type"
    assert set(event["discriminator"]["mapping"]) == set(EventType.values)
    assert [v["$ref"] for v in event["oneOf"]] == list(event["discriminator"]["mapping"].values())
    for event_type, ref in event["discriminator"]["mapping"].items():
        variant = variants[ref]
        assert {"id", "type", "timestamp", "data"} <= set(variant["required"])
        assert component(schema, variant["properties"]["type"]["$ref"].rsplit("/", 1)[-1])["enum"] == [event_type]
        assert "$ref" in variant["properties"]["data"]  # a component of its own, not a free-form object
    sent = component(schema, "PacketSentEventData")["properties"]["packet"]
    assert sent["allOf"] == [{"$ref": "#/components/schemas/Packet"}]
    assert set(component(schema, "PacketClaimedEventData")["required"]) == {"packet", "group", "claim"}
    assert set(component(schema, "GroupMemberAddedEventData")["required"]) == {"group", "user"}
    feed = response_schema(schema, "/api/v1/events", "get", "200")
    assert feed["properties"]["results"]["items"] == {"$ref": "#/components/schemas/Event"}
    webhook = schema["x-webhooks"]["event"]["post"]
    assert webhook["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Event"}
    assert {p["name"] for p in webhook["parameters"]} == {"webhook-id", "webhook-timestamp", "webhook-signature"}


def test_schema_lists_are_results_and_next(schema):
    for path in ["/api/v1/wallet/transactions", "/api/v1/groups/{group_id}/packets"]:
        page = response_schema(schema, path, "get", "200")
        assert set(page["properties"]) == {"results", "next"}, path
        assert page["properties"]["next"]["nullable"] is True
        assert any(p["name"] == "cursor" for p in schema["paths"][path]["get"]["parameters"])


def test_schema_money_is_integers_and_kinds_are_the_contracts(schema):
    transaction = component(schema, "WalletTransaction")
    kinds = component(schema, "TransactionKindEnum")

    assert {"id", "kind", "amount", "balance_after", "created_at", "packet"} <= set(transaction["properties"])
    for name in ["amount", "balance_after"]:
        assert transaction["properties"][name]["type"] == "integer"
    assert set(kinds["enum"]) == {"topup", "packet_send", "packet_claim", "packet_refund", "adjustment"}
    assert component(schema, "Wallet")["properties"]["balance"]["type"] == "integer"
    assert component(schema, "TopupRequest")["properties"]["amount"]["type"] == "integer"
    assert component(schema, "Group")["properties"]["members"]["items"] == {"type": "string"}


# --- serving ------------------------------------------------------------------------------


def test_schema_is_served_as_yaml_without_a_token(client):
    response = client.get("/api/schema/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert yaml.safe_load(response.content)["openapi"].startswith("3.")


def test_docs_page_is_served(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"/api/schema/" in response.content


# --- deployment ------------------------------------------------------------------------------


def test_production_settings_pass_the_deploy_checks(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(), tmp_path=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_without_a_metrics_token_fail_the_deploy_checks(tmp_path):
    env = production_env()
    del env["METRICS_TOKEN"]

    result = manage("check", "--deploy", env=env, tmp_path=tmp_path)

    assert result.returncode != 0
    assert "observability.E001" in result.stderr + result.stdout


def test_production_settings_switch_sandbox_topups_and_debug_off(tmp_path):
    result = manage(
        "shell", "-c", "from django.conf import settings; print(settings.SANDBOX_TOPUPS, settings.DEBUG)",
        env=production_env(), tmp_path=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    env = production_env()
    del env["DJANGO_SECRET_KEY"]

    result = manage("check", env=env, tmp_path=tmp_path)

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_production_settings_without_a_pin_key_fail_the_deploy_checks_but_still_start(tmp_path):
    env = production_env()
    del env["PIN_KEY"]

    checked = manage("check", "--deploy", env=env, tmp_path=tmp_path)
    started = manage("shell", "-c", "from django.conf import settings; print(settings.PIN_KEY_ID)",
                     env=env, tmp_path=tmp_path)

    assert checked.returncode != 0
    assert "wallets.E004" in checked.stderr + checked.stdout
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().splitlines()[-1] == "from-secret"


@pytest.mark.parametrize("reason", ["short", "the secret key"])
def test_the_deploy_checks_refuse_a_weak_or_reused_pin_key(tmp_path, reason):
    env = production_env()
    env["PIN_KEY"] = "too-short" if reason == "short" else env["DJANGO_SECRET_KEY"]

    result = manage("check", "--deploy", env=env, tmp_path=tmp_path)

    assert result.returncode != 0
    assert ("wallets.E001" if reason == "short" else "wallets.E002") in result.stderr


@pytest.mark.django_db
def test_swagger_ui_is_served_by_the_service_itself_not_a_cdn(client):
    response = client.get("/api/docs/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
