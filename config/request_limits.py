"""Hostile input stops at the door: oversized bodies, deep JSON, odd charsets, bodies that never arrive.

- A body over API_MAX_BODY_BYTES (by its Content-Length) is answered 413
  `payload_too_large` before a byte of it is read.
- JSON nested deeper than API_MAX_JSON_DEPTH is 400 `validation_error`; so is
  JSON the parser cannot even take apart (a stack overflow's worth of brackets,
  an unknown charset).
- A client that stops sending its body for API_BODY_READ_TIMEOUT_SECONDS is cut
  off (400). Headers that trickle in are gunicorn's to bound; in production a
  buffering proxy (nginx's client_header_timeout / client_body_timeout) sits in front.
"""


from django.conf import settings
from django.http import JsonResponse
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from config.errors import PayloadTooLarge, envelope


class BodyLimitMiddleware:
    """Early in MIDDLEWARE: refuses what is too big by its Content-Length, bounds the body's read."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads such a body as empty
        if length > settings.API_MAX_BODY_BYTES:
            error = PayloadTooLarge(f"The request body is {length} bytes; at most {settings.API_MAX_BODY_BYTES} are taken.")
            return JsonResponse(envelope(error.code, error.message), status=error.status_code)
        sock = request.META.get("gunicorn.socket")
        if sock is not None and length:
            # Each read of the body waits at most this long for the next bytes (gunicorn resets it per request).
            sock.settimeout(settings.API_BODY_READ_TIMEOUT_SECONDS)
        return self.get_response(request)


def _nesting_exceeds(value, limit: int) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, with every way JSON can fail answered 400 instead of 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {settings.API_MAX_JSON_DEPTH} levels.") from None
        except LookupError as exc:  # codecs: an unknown charset in Content-Type
            raise ParseError(f"JSON parse error - {exc}.") from None
        if isinstance(data, dict | list) and _nesting_exceeds(data, settings.API_MAX_JSON_DEPTH):
            raise ParseError(f"JSON parse error - nested deeper than {settings.API_MAX_JSON_DEPTH} levels.")
        return data


