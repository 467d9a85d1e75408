"""Cursor pagination in the contract's shape: {"results": [...], "next": url | null}."""

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response


class NewestFirstCursorPagination(CursorPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = "-created_at"

    def decode_cursor(self, request):
        # DRF checks the cursor's shape but not its position, which goes straight into
        # a filter: a forged position would fail there as a 500 instead of a 404.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None and not self.position_is_valid(cursor.position):
            raise NotFound(self.invalid_cursor_message)
        return cursor

    def position_is_valid(self, position: str) -> bool:
        try:
            return parse_datetime(position) is not None
        except ValueError:
            return False

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "nullable": True, "format": "uri"},
            },
        }


class LedgerCursorPagination(NewestFirstCursorPagination):
    # Entry ids grow with every posting: a strict, unique order for the cursor.
    ordering = "-id"

    def position_is_valid(self, position: str) -> bool:
        return position.isascii() and position.isdigit() and len(position) <= 19
