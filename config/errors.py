"""The one error envelope of the API: {"error": {"code", "message", "fields"[, "details"]}}.

Services raise ServiceError subclasses (a stable code, an HTTP status and a human
message); this module turns those, DRF's own exceptions and anything unexpected
into the envelope. Django's 400/403/404/500 handlers use it too, so no path of
the service answers with an HTML error page.
"""

import logging
from datetime import datetime

import psycopg.errors
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import OperationalError
from django.http import Http404, JsonResponse, UnreadablePostError
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A business rule refused the request; nothing was written."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "validation_error"
    default_message = "The request was refused."

    def __init__(
        self, message: str | None = None, *, fields: dict[str, list[str]] | None = None, details: dict | None = None
    ):
        self.message = message or self.default_message
        self.fields = fields or {}
        # Machine-readable facts beyond the code (config.schema.ERROR_DETAILS documents them by code).
        self.details = details or {}
        super().__init__(self.message)


class ValidationFailed(ServiceError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "validation_error"
    default_message = "Invalid input."

    @classmethod
    def on(cls, field: str, message: str) -> "ValidationFailed":
        return cls(message, fields={field: [message]})


class BadCredentials(ServiceError):
    status_code = status.HTTP_401_UNAUTHORIZED
    code = "not_authenticated"
    default_message = "Invalid username or password."


class NotFound(ServiceError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"
    default_message = "Not found."


class PermissionDenied(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "permission_denied"
    default_message = "You are not allowed to do this."


class InsufficientFunds(ServiceError):
    status_code = status.HTTP_409_CONFLICT
    code = "insufficient_funds"
    default_message = "Your balance is too low."


class IdempotencyConflict(ServiceError):
    status_code = status.HTTP_409_CONFLICT
    code = "idempotency_conflict"
    default_message = "This Idempotency-Key was already used with a different request."


class PinNotSet(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "pin_not_set"
    default_message = "Set a payment PIN before sending money."


class InvalidPin(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "invalid_pin"
    default_message = "The payment PIN is wrong."


class PinLocked(ServiceError):
    status_code = status.HTTP_423_LOCKED
    code = "pin_locked"
    default_message = "Too many wrong PINs; try again later."

    def __init__(self, *, locked_until: datetime):
        super().__init__(
            f"Too many wrong PINs; try again after {locked_until.isoformat()}.",
            details={"locked_until": serializers.DateTimeField().to_representation(locked_until)},
        )


class PacketExhausted(ServiceError):
    status_code = status.HTTP_409_CONFLICT
    code = "packet_exhausted"
    default_message = "Every share of this packet has been claimed."


class PacketExpired(ServiceError):
    status_code = status.HTTP_410_GONE
    code = "packet_expired"
    default_message = "This packet has expired."


class NotRecipient(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "not_recipient"
    default_message = "This packet is for someone else."


class WrongPassphrase(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "wrong_passphrase"
    default_message = "This packet needs its passphrase."


class PassphraseLocked(ServiceError):
    status_code = status.HTTP_423_LOCKED
    code = "passphrase_locked"
    default_message = "Too many wrong passphrases; you are locked out of this packet."


class ServiceUnavailable(ServiceError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "service_unavailable"
    default_message = "The service is busy; nothing was changed. Try again in a moment."


class PayloadTooLarge(ServiceError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"
    default_message = "The request body is too large."


# PostgreSQL gave up waiting (lock_timeout, statement_timeout): the transaction rolled back whole.
_DATABASE_TIMEOUTS = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)


def as_service_error(exc: Exception) -> ServiceError | None:
    """The envelope error for an exception raised below the services, or None when it is a real failure."""
    if isinstance(exc, OperationalError) and isinstance(exc.__cause__, _DATABASE_TIMEOUTS):
        return ServiceUnavailable()
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge()
    if isinstance(exc, UnreadablePostError):  # the client stopped sending its body (API_BODY_READ_TIMEOUT_SECONDS)
        return ValidationFailed("The request body stopped arriving before it was complete.")
    return None


# Codes for DRF's own exceptions, by class; the first match wins.
_DRF_CODES: list[tuple[type[exceptions.APIException], int, str]] = [
    (exceptions.ValidationError, 400, "validation_error"),
    (exceptions.ParseError, 400, "validation_error"),
    (exceptions.NotAuthenticated, 401, "not_authenticated"),
    (exceptions.AuthenticationFailed, 401, "not_authenticated"),
    (exceptions.PermissionDenied, 403, "permission_denied"),
    (exceptions.NotFound, 404, "not_found"),
    (exceptions.MethodNotAllowed, 405, "method_not_allowed"),
    (exceptions.NotAcceptable, 406, "not_acceptable"),
    (exceptions.UnsupportedMediaType, 415, "unsupported_media_type"),
    (exceptions.Throttled, 429, "throttled"),
]


def envelope(code: str, message: str, fields: dict | None = None, details: dict | None = None) -> dict:
    error = {"code": code, "message": message, "fields": fields or {}}
    if details:
        error["details"] = details  # an optional key, only where a code has details
    return {"error": error}


def _flatten_fields(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as {"field" | "field.sub" | "items.0": [messages]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            out.update(_flatten_fields(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(detail, list) and detail and all(not isinstance(d, (dict, list)) for d in detail):
        return {prefix or "non_field_errors": [str(d) for d in detail]}
    if isinstance(detail, list):
        out = {}
        for index, value in enumerate(detail):
            out.update(_flatten_fields(value, f"{prefix}.{index}" if prefix else str(index)))
        return out
    return {prefix or "non_field_errors": [str(detail)]}


def _first_message(fields: dict[str, list[str]]) -> str:
    for name, messages in fields.items():
        if messages:
            return messages[0] if name == "non_field_errors" else f"{name}: {messages[0]}"
    return "Invalid input."


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every exception becomes the envelope."""
    headers = {}
    mapped = as_service_error(exc)
    if isinstance(mapped, ServiceUnavailable):
        logger.warning("PostgreSQL gave up waiting (%s): answered 503", type(exc.__cause__).__name__)
        headers["Retry-After"] = "1"
    exc = mapped or exc
    if isinstance(exc, ServiceError):
        return Response(envelope(exc.code, exc.message, exc.fields, exc.details), status=exc.status_code,
                        headers=headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.APIException):
        status_code, code = exc.status_code, "error"
        for cls, mapped_status, mapped_code in _DRF_CODES:
            if isinstance(exc, cls):
                status_code, code = mapped_status, mapped_code
                break
        if isinstance(exc, (exceptions.ValidationError, exceptions.ParseError)) and not isinstance(exc.detail, str):
            fields = _flatten_fields(exc.detail)
            message = _first_message(fields)
        else:
            fields, message = {}, str(exc.detail)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(int(exc.wait) + 1)
        if status_code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return Response(envelope(code, message, fields), status=status_code, headers=headers)
    logger.exception("Unhandled error in %s", context.get("view").__class__.__name__ if context else "?")
    return Response(envelope("internal_error", "Something went wrong on our side."), status=500)


def _json_handler(status_code: int, code: str, message: str):
    def handler(request, exception=None):
        return JsonResponse(envelope(code, message), status=status_code)

    return handler


bad_request = _json_handler(400, "validation_error", "Bad request.")
permission_denied = _json_handler(403, "permission_denied", "You are not allowed to do this.")
page_not_found = _json_handler(404, "not_found", "Not found.")


def server_error(request):
    return JsonResponse(envelope("internal_error", "Something went wrong on our side."), status=500)


def csrf_failure(request, reason=""):
    return JsonResponse(envelope("permission_denied", f"CSRF check failed: {reason}"), status=403)
