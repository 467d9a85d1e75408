"""docs/api.md, the project's API reference, keeps up with the served OpenAPI schema."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

HTTP_METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def schema() -> dict:
    return APIClient().get("/api/schema/", {"format": "json"}).json()


@pytest.fixture(scope="module")
def doc() -> str:
    return (Path(settings.BASE_DIR) / "docs" / "api.md").read_text()


def _error_codes(schema: dict) -> set[str]:
    return {
        code
        for name, component in schema["components"]["schemas"].items()
        if name.endswith("Error")
        for code in component.get("properties", {}).get("code", {}).get("enum", [])
    }


def test_the_api_reference_names_every_operation_of_the_schema(schema, doc):
    documented = set(re.findall(r"\*\*`(GET|PUT|POST|PATCH|DELETE) (/[^`?\s]*)", doc))
    operations = {
        (method.upper(), path) for path, item in schema["paths"].items() for method in item if method in HTTP_METHODS
    }

    assert operations - documented == set()


def test_the_api_reference_names_every_error_code_of_the_schema(schema, doc):
    codes = _error_codes(schema)

    assert len(codes) >= 15
    assert {code for code in codes if f"`{code}`" not in doc} == set()


def test_the_api_reference_names_every_field_of_the_packet(schema, doc):
    fields = set(schema["components"]["schemas"]["Packet"]["properties"])

    assert {f for f in fields if f"`{f}`" not in doc} == set()


def test_the_api_reference_links_nowhere_outside_the_repository(doc):
    links = re.findall(r"\]\(([^)]+)\)", doc) + re.findall(r"https?://\S+", doc)

    assert [link for link in links if not link.startswith("#")] == []
