"""Serializer fields shared by the API modules."""

from rest_framework import serializers


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer and nothing else: money and counts never arrive as 10.0, "10" or true."""

    default_error_messages = {"invalid": "A whole number (JSON integer) is required."}

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("invalid")
        return super().to_internal_value(data)


class PinField(serializers.RegexField):
    def __init__(self, **kwargs):
        # [0-9], not \d: \d also matches full-width and other Unicode digits.
        super().__init__(r"^[0-9]{6}\Z", max_length=6, min_length=6, **kwargs)
        self.error_messages["invalid"] = "A PIN is exactly 6 digits."
