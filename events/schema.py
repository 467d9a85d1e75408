"""The Event schema: one variant per type, discriminated by `type`, each with its `data` typed.

This app stores and delivers `data` without knowing its shape. The app that records a type
declares the serializer of its data with @event_data (redpackets.apis), and the schema of the
feed and of the webhook bodies becomes a `oneOf` of `PacketSentEvent`, `PacketClaimedEvent`, ...
so that a generated client gets each type's data as a real type.
"""

import functools

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_serializer
from rest_framework import serializers

from events.models import EventType

_DATA: dict[str, type[serializers.Serializer]] = {}


def event_data(event_type: EventType):
    """Class decorator: the serializer describes the `data` of events of this type."""

    def register(serializer: type[serializers.Serializer]) -> type[serializers.Serializer]:
        _DATA[event_type.value] = serializer
        return serializer

    return register


def component_name(event_type: str) -> str:
    """`packet.sent` -> `PacketSentEvent`, `group.member_added` -> `GroupMemberAddedEvent`."""
    words = event_type.replace(".", "_").split("_")
    return "".join(word.title() for word in words) + "Event"


@functools.cache
def _variant(event_type: str) -> type[serializers.Serializer]:
    # Cached: the schema generator must meet the same class each time it resolves the oneOf.
    name = component_name(event_type)
    fields = {
        "__doc__": f"A `{event_type}` event, in the feed and as a webhook's body.",
        "id": serializers.CharField(help_text="Opaque; the same in the feed and as `webhook-id`. Deduplicate by it."),
        "type": serializers.ChoiceField(choices=[event_type]),
        "timestamp": serializers.DateTimeField(help_text="When the change happened (UTC)."),
        "data": _DATA[event_type](),
    }
    return extend_schema_serializer(component_name=name)(type(name, (serializers.Serializer,), fields))


def event_variants() -> dict[str, type[serializers.Serializer]]:
    """Each event type with its variant, in the catalogue's order."""
    missing = [t for t in EventType.values if t not in _DATA]
    if missing:
        raise LookupError(f"No @event_data serializer for the event types {missing}")
    return {event_type: _variant(event_type) for event_type in EventType.values}


def event_schema(**kwargs) -> PolymorphicProxySerializer:
    """The `Event` component: a oneOf of the variants, with a discriminator on `type`."""
    return PolymorphicProxySerializer(
        component_name="Event", serializers=event_variants, resource_type_field_name="type", **kwargs,
    )


def _header(name: str, description: str) -> dict:
    return {"name": name, "in": "header", "required": True, "schema": {"type": "string"}, "description": description}


# OpenAPI 3.0 has no `webhooks` (3.1 has); Redoc and Redocly read `x-webhooks` instead.
WEBHOOK = {
    "post": {
        "operationId": "webhook_event",
        "summary": "An event, POSTed to each endpoint that takes its type",
        "description": (
            "Standard Webhooks: the body is the event exactly as the feed has it. Answer 2xx within "
            "`WEBHOOK_TIMEOUT_SECONDS` (5); anything else is retried after each delay of `WEBHOOK_RETRY_SECONDS`, "
            "then the delivery is failed. Delivery is at least once: deduplicate by `webhook-id`. "
            "Verifying the signature: docs/events.md."
        ),
        "tags": ["events"],
        "security": [],
        "parameters": [
            _header("webhook-id", "The event's `id`: the same on every retry."),
            _header("webhook-timestamp", "Unix seconds of this attempt."),
            _header("webhook-signature", "`v1,` + base64(HMAC-SHA256(key, `{webhook-id}.{webhook-timestamp}.{body}`)); "
                    "while a secret is rotated, both signatures, separated by a space."),
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}}},
        "responses": {
            "2XX": {"description": "Delivered."},
            "default": {"description": "Not delivered: tried again later."},
        },
    }
}


def describe_webhooks(result, generator, request, public):
    """SPECTACULAR postprocessing hook: the webhook body is the `Event` of the feed."""
    result["x-webhooks"] = {"event": WEBHOOK}
    return result
