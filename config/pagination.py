"""Cursor pagination in the contract's shape: {"results": [...], "next": url | null}."""

from rest_framework.pagination import CursorPagination
from rest_framework.response import Response


class NewestFirstCursorPagination(CursorPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = "-created_at"

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
