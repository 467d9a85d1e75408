"""Assertions on the API's one error body: {"error": {"code", "message", "fields"}}."""

import json


def assert_error(response, status: int, code: str) -> dict:
    """The response is an error envelope with this status and code; returns the inner error."""
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["fields"], dict), error
    return error
