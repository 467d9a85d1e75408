"""The pull feed: GET /api/v1/events?after=<id>."""

from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from config import schema
from config.errors import NotFound
from events.schema import event_schema
from events.selectors import FEED_PAGE, event_body, events_feed
from events.services import events_relay


@extend_schema_serializer(component_name="EventFeed")
class EventFeedSerializer(serializers.Serializer):
    results = event_schema(many=True)
    next = serializers.URLField(help_text="Never null: the URL to poll for what comes after these results.")


class EventFeedApi(APIView):
    @extend_schema(
        operation_id="events_list",
        tags=["events"],
        summary="Follow the events of the caller's groups",
        description=(
            f"Events of the groups the caller belongs to, oldest first, at most {FEED_PAGE}, strictly after "
            "`after` (from the start when absent). Keep following `next`: every event is seen exactly once, "
            "in order, also when transactions commit out of order."
        ),
        parameters=[
            OpenApiParameter(
                "after", str, OpenApiParameter.QUERY, required=False,
                description="The id of the last event seen; an unknown one (or one of another group) is 404.",
            )
        ],
        responses={200: EventFeedSerializer, **schema.errors(schema.UNAUTHENTICATED, NotFound)},
    )
    def get(self, request):
        after = request.query_params.get("after")
        # Events committed up to now get their positions before we read.
        events_relay()
        events = events_feed(viewer=request.user, after=after)
        cursor = events[-1].public_id if events else after
        next_url = request.build_absolute_uri(request.path + (f"?{urlencode({'after': cursor})}" if cursor else ""))
        return Response({"results": [event_body(e) for e in events], "next": next_url})
