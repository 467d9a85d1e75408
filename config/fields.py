r"""Serializer fields shared by the API modules.

DRF's own fields are lenient where the published schema is not: CharField takes
10 or 1.5 as "10" / "1.5" and trims blanks before checking lengths and patterns
(so " alice" passes a no-blanks pattern and 8 spaces make a blank password), UUIDField
takes an integer or a UUID without hyphens. The API takes exactly what its OpenAPI
schema says, so these fields refuse the rest and keep strings as they were sent.
"""

import re

from rest_framework import serializers


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer and nothing else: money and counts never arrive as 10.0, "10" or true."""

    default_error_messages = {"invalid": "A whole number (JSON integer) is required."}

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonStringOnly:
    """Mixin for CharField and its subclasses: a JSON string as sent, never a number coerced to one."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(JsonStringOnly, serializers.CharField):
    default_error_messages = {"invalid": "A string is required."}


class StrictUUIDField(serializers.UUIDField):
    """A UUID in its canonical string form (as the schema's `format: uuid` says)."""

    _CANONICAL = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

    def to_internal_value(self, data):
        if not isinstance(data, str) or not self._CANONICAL.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class PinField(JsonStringOnly, serializers.RegexField):
    def __init__(self, **kwargs):
        # [0-9], not \d: \d also matches full-width and other Unicode digits.
        super().__init__(r"^[0-9]{6}\Z", max_length=6, min_length=6, **kwargs)
        self.error_messages["invalid"] = "A PIN is exactly 6 digits."
