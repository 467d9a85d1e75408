"""Assertions shared by the API tests."""

import json


def assert_error(response, status: int, code: str, fields=None) -> dict:
    """The response is the error envelope with this status and code (and, if given,
    exactly these `fields`, each with messages); returns the inner error."""
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    error = body["error"]
    # `details` is optional: only codes with machine-readable facts carry it (pin_locked: locked_until).
    assert set(error) - {"details"} == {"code", "message", "fields"}, error
    assert "details" not in error or (isinstance(error["details"], dict) and error["details"]), error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["fields"], dict), error
    if fields is not None:
        assert set(error["fields"]) == set(fields), error
        assert all(messages and all(isinstance(m, str) for m in messages) for messages in error["fields"].values())
    return error


def integers_in(value) -> list[int]:
    """Every integer in a JSON body, to show that a number does not appear anywhere."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [i for v in value.values() for i in integers_in(v)]
    if isinstance(value, list):
        return [i for v in value for i in integers_in(v)]
    return []
