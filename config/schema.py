"""OpenAPI pieces shared by every API module: the Bearer scheme and error responses."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
import json
from collections import Counter

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from config.errors import ServiceError
from wallets.idempotency import MAX_KEY_LENGTH


class KnoxBearerScheme(OpenApiAuthenticationExtension):
    target_class = "knox.auth.TokenAuthentication"
    match_subclasses = True  # wallets.auth.OneQueryTokenAuthentication
    name = "bearerAuth"
    # Above drf-spectacular's bundled knox extension (priority 0), which would win otherwise.
    priority = 1

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A token from POST /api/v1/auth/token."}


# --- errors ------------------------------------------------------------------------------
# Every error is {"error": {"code", "message", "fields"[, "details"]}}. Each operation documents
# its error statuses with the codes each can carry as an enum (components named after the codes,
# shared by the operations with the same set); `default` is the envelope with any code.

# Extra facts an error carries in `details`, by code.
ERROR_DETAILS: dict[str, dict] = {
    "pin_locked": {
        "type": "object",
        "properties": {
            "locked_until": {
                "type": "string", "format": "date-time",
                "description": "When the PIN takes tries again (UTC).",
            },
        },
        "required": ["locked_until"],
    },
}

# Answers of the HTTP layer that any operation can give, whatever its own errors.
STANDARD_ERRORS: dict[int, tuple[str, str]] = {
    405: ("method_not_allowed", "The path does not take this method (see `Allow`)."),
    406: ("not_acceptable", "The Accept header excludes application/json, the only media type served."),
    503: ("service_unavailable", "PostgreSQL gave up waiting (a lock or statement timeout): nothing was changed; "
                                 "try again after `Retry-After`."),
}
BODY_ERRORS: dict[int, tuple[str, str]] = {
    413: ("payload_too_large", "The body is larger than the service accepts."),
    415: ("unsupported_media_type", "The body is not application/json."),
}

_ERROR_CODE_SETS: dict[str, tuple[str, ...]] = {}


def _error_name(codes: tuple[str, ...]) -> str:
    """`NotFoundError`, `InsufficientFundsOrIdempotencyConflictError`: the codes it can carry."""
    words = ["".join(part.title() for part in code.removesuffix("_error").split("_")) for code in codes]
    return "Or".join(words) + "Error"


def _error_schemas(codes: tuple[str, ...] | None) -> dict:
    """The `Error` body and its envelope for these codes (None: any code)."""
    name = "Error" if codes is None else _error_name(codes)
    code = {"type": "string", "description": "Stable machine code; new codes may be added."}
    if codes is not None:
        code = {"type": "string", "enum": list(codes), "description": "Stable machine code."}
    details, required = {"$ref": "#/components/schemas/ErrorDetails"}, ["code", "message", "fields"]
    if codes is not None and len(codes) == 1 and codes[0] in ERROR_DETAILS:
        details = {"$ref": f"#/components/schemas/{_error_name(codes)}Details"}
        required.append("details")
    body = {
        "type": "object",
        "properties": {
            "code": code,
            "message": {"type": "string", "description": "Human-readable explanation, in English."},
            "fields": {"$ref": "#/components/schemas/ErrorFields"},
            "details": details,
        },
        "required": required,
    }
    envelope = {
        "type": "object",
        "properties": {"error": {"$ref": f"#/components/schemas/{name}"}},
        "required": ["error"],
    }
    return {name: body, f"{name}Envelope": envelope}


# Shared by every error body.
ERROR_PARTS = {
    "ErrorFields": {
        "type": "object",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
        "description": "Field name (`field`, `field.sub`, `items.0`) to messages; validation errors only, `{}` otherwise.",
    },
    "ErrorDetails": {
        "type": "object",
        "additionalProperties": {},
        "description": "Extra facts for some codes (`pin_locked`: `locked_until`); absent otherwise.",
    },
    **{f"{_error_name((code,))}Details": schema for code, schema in ERROR_DETAILS.items()},
}


def _error_response(codes: tuple[str, ...], description: str) -> dict:
    name = _error_name(codes)
    _ERROR_CODE_SETS[name] = codes
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}Envelope"}}},
    }


def errors(*cases: tuple[int, str] | type[ServiceError]) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for error cases: ServiceError classes or (status, code) pairs."""
    by_status: dict[int, list[str]] = {}
    for case in cases:
        status, code = (case.status_code, case.code) if isinstance(case, type) else case
        by_status.setdefault(status, []).append(code)
    return {
        status: OpenApiResponse(
            {"$ref": f"#/components/schemas/{_error_name(tuple(codes))}Envelope"},
            description="Error codes: " + ", ".join(f"`{c}`" for c in codes),
        )
        for status, codes in sorted(by_status.items())
        if _ERROR_CODE_SETS.setdefault(_error_name(tuple(codes)), tuple(codes))
    }


# Example values (the demo data of `make run`: seed_demo's PIN; a group id in the ids' shape).
EXAMPLE_GROUP_ID = "3f2a0c1e-8b7d-4e5f-9a6b-1c2d3e4f5a6b"
EXAMPLE_PIN = "123456"

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


# --- the finished document ------------------------------------------------------------------

# Properties that hold money (integer minor units): int64, so no client narrows them to 32 bits.
MONEY_PROPERTIES = frozenset({
    "amount", "balance", "balance_after", "total_amount", "share_amount", "claimed_amount",
    "remaining_amount", "refunded_amount", "cap", "shares",
})

RESPONSE_HEADERS: dict[int, dict] = {
    401: {"WWW-Authenticate": {"description": "`Bearer realm=\"api\"`.", "schema": {"type": "string"}}},
    405: {"Allow": {"description": "The methods the path takes.", "schema": {"type": "string"}}},
    **{
        status: {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "format": "int32", "minimum": 1},
            }
        }
        for status in (429, 503)
    },
}

HTTP_METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")


def finish_document(result, generator, request, public):
    """SPECTACULAR postprocessing hook: what drf-spectacular does not say by itself.

    - every operation answers `default` with the envelope (500 `internal_error` included), and
      the HTTP layer's 405/406 (413/415 where it takes a body) with their codes;
    - the error components named by errors() are added, with typed response headers;
    - a nullable nested object is valid OpenAPI 3.0 (drf-spectacular's `allOf` + `nullable`
      without `type` refuses null under a strict validator);
    - ids are opaque strings (no `format: uuid`), money is `int64`.
    """
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            operation.setdefault("security", [])  # stated even where none is needed (register, token)
            responses = operation.setdefault("responses", {})
            standard = {**STANDARD_ERRORS, **(BODY_ERRORS if "requestBody" in operation else {})}
            for status, (code, description) in standard.items():
                responses.setdefault(str(status), _error_response((code,), description))
            responses["default"] = {
                "description": "Any other error, 500 `internal_error` included: the envelope with its code.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
            }
            for status, headers in RESPONSE_HEADERS.items():
                if str(status) in responses:
                    responses[str(status)].setdefault("headers", {}).update(headers)
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(ERROR_PARTS)
    schemas.update(_error_schemas(None))
    for codes in _ERROR_CODE_SETS.values():
        schemas.update(_error_schemas(codes))
    result["components"]["schemas"] = dict(sorted(schemas.items()))
    _make_nullable_refs_valid(result)
    _walk(result, _opaque_ids_and_int64_money)
    _bodies_of_one_of_required(result)
    for name, schema in result["components"]["schemas"].items():
        if name.endswith("Request"):
            _defaults_in_words(schema)
    return result


def _bodies_of_one_of_required(result: dict) -> None:
    """A body that is one of several shapes, each with required properties, is itself required.

    drf-spectacular marks a serializer's body required by its required fields, which a
    PolymorphicProxySerializer (the packet send's random | fixed) does not have itself.
    """
    schemas = result["components"]["schemas"]
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            body = operation.get("requestBody") if method in HTTP_METHODS else None
            if not body or body.get("required"):
                continue
            ref = body["content"].get("application/json", {}).get("schema", {}).get("$ref", "")
            variants = schemas.get(ref.rsplit("/", 1)[-1], {}).get("oneOf", [])
            if variants and all(schemas[v["$ref"].rsplit("/", 1)[-1]].get("required") for v in variants):
                body["required"] = True


def _defaults_in_words(schema: dict) -> None:
    """A request property's default goes into its description instead of `default`.

    Generators read `default` as "always present" (openapi-typescript makes such a property
    required), so `greeting` would be mandatory in a typed client although the service
    takes it as optional.
    """
    for prop in (schema.get("properties") or {}).values():
        if "default" in prop:
            default = prop.pop("default")
            said = f"Optional; `{json.dumps(default, ensure_ascii=False)}` when absent."
            prop["description"] = f"{prop['description']} {said}" if prop.get("description") else said


def _walk(node, visit, key=None):
    if isinstance(node, dict):
        visit(node, key)
        for child_key, child in node.items():
            _walk(child, visit, child_key)
    elif isinstance(node, list):
        for child in node:
            _walk(child, visit, key)


def _opaque_ids_and_int64_money(schema: dict, key) -> None:
    if schema.get("format") == "uuid":
        del schema["format"]
    for name, prop in (schema.get("properties") or {}).items() if schema.get("type") == "object" else ():
        if name in MONEY_PROPERTIES:
            target = prop.get("items", {}) if prop.get("type") == "array" else prop
            if target.get("type") == "integer":
                target["format"] = "int64"


def _make_nullable_refs_valid(result: dict) -> None:
    """`{allOf: [$ref X], nullable: true}` becomes `$ref X` with X nullable, or X inlined.

    OpenAPI 3.0.3: `nullable` only adds null to the types of its own `type`; the `allOf`
    still refuses null. A component only ever used nullable is marked nullable itself;
    one also used as a plain value is copied inline where it may be null.
    """
    schemas = result.get("components", {}).get("schemas", {})
    nullable_uses: dict[str, list[dict]] = {}
    all_uses: Counter = Counter()

    def collect(node, key):
        all_of = node.get("allOf")
        if node.get("nullable") and isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
            nullable_uses.setdefault(all_of[0]["$ref"], []).append(node)
        if isinstance(node.get("$ref"), str):
            all_uses[node["$ref"]] += 1

    _walk(result, collect)
    for ref, uses in nullable_uses.items():
        target = schemas[ref.rsplit("/", 1)[-1]]
        only_nullable = all_uses[ref] == len(uses)
        descriptions = [{k: v for k, v in use.items() if k in ("description", "readOnly")} for use in uses]
        for use, description in zip(uses, descriptions):
            use.clear()
            if only_nullable:
                use["$ref"] = ref  # siblings of a $ref are ignored in 3.0
            else:
                use.update({**target, **description, "nullable": True})
        if only_nullable:
            target["nullable"] = True
            if len(uses) == 1 and "description" in descriptions[0]:  # said once, on the component
                target.setdefault("description", descriptions[0]["description"])
