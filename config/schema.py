"""OpenAPI pieces shared by every API module: the Bearer scheme and error responses."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from config.errors import ServiceError
from wallets.idempotency import MAX_KEY_LENGTH


class KnoxBearerScheme(OpenApiAuthenticationExtension):
    target_class = "knox.auth.TokenAuthentication"
    name = "bearerAuth"
    # Above drf-spectacular's bundled knox extension (priority 0), which would win otherwise.
    priority = 1

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A token from POST /api/v1/auth/token."}


ErrorEnvelope = inline_serializer(
    name="ErrorEnvelope",
    fields={
        "error": inline_serializer(
            name="Error",
            fields={
                "code": serializers.CharField(help_text="Stable machine code, e.g. insufficient_funds."),
                "message": serializers.CharField(help_text="Human-readable explanation."),
                "fields": serializers.DictField(
                    child=serializers.ListField(child=serializers.CharField()),
                    help_text="Field name to messages; validation errors only.",
                ),
            },
        )
    },
)


def errors(*cases: tuple[int, str] | type[ServiceError]) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for error cases: ServiceError classes or (status, code) pairs."""
    by_status: dict[int, list[str]] = {}
    for case in cases:
        status, code = (case.status_code, case.code) if isinstance(case, type) else case
        by_status.setdefault(status, []).append(code)
    return {
        status: OpenApiResponse(ErrorEnvelope, description="Error codes: " + ", ".join(f"`{c}`" for c in codes))
        for status, codes in sorted(by_status.items())
    }


VALIDATION = (400, "validation_error")
UNAUTHENTICATED = (401, "not_authenticated")
NOT_FOUND = (404, "not_found")
THROTTLED = (429, "throttled")
# A paginated list: a bad page_size is a validation error, an unknown or forged cursor 404.
LIST_ERRORS = (VALIDATION, UNAUTHENTICATED, NOT_FOUND)

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    # What wallets.idempotency accepts; a blank or longer key is 400 validation_error.
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": r"[^ \t]"},
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "Makes the POST safe to retry: the same key with the same body replays the first "
        "response and moves no money twice; with a different body, 409 idempotency_conflict. "
        "A key is remembered for 24 hours (IDEMPOTENCY_KEY_TTL_HOURS)."
    ),
)


def drop_trailing_slash_aliases(endpoints, **kwargs):
    """SPECTACULAR preprocessing hook: the contract's paths have no trailing slash.

    config.urls also routes each path with a slash (tolerated, same view); documenting
    both would publish every operation twice under colliding operation ids.
    """
    return [
        (path, path_regex, method, callback)
        for path, path_regex, method, callback in endpoints
        if not (path.startswith("/api/v1/") and path.endswith("/"))
    ]


# Errors any operation can meet before or beneath its own code (config/request_limits.py, config/errors.py).
PAYLOAD_TOO_LARGE = (413, "payload_too_large")
SERVICE_UNAVAILABLE = (503, "service_unavailable")


def add_operational_errors(result, generator, request, public):
    """POSTPROCESSING hook: 413 on every operation that takes a body, 503 (a database timeout) on every one."""
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    for item in result.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            cases = [SERVICE_UNAVAILABLE] + ([PAYLOAD_TOO_LARGE] if "requestBody" in operation else [])
            for status, code in cases:
                operation["responses"].setdefault(
                    str(status), {"description": f"Error codes: `{code}`", "content": envelope})
    return result
