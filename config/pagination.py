"""Cursor pagination in the contract's shape: {"results": [...], "next": url | null}."""

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response


class NewestFirstCursorPagination(CursorPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = "-created_at"

    def get_page_size(self, request):
        # DRF ignores a page_size it cannot use (a word, 0, -1) and clamps a large one;
        # the schema says an integer from 1 to max_page_size, so anything else is refused.
        values = request.query_params.getlist(self.page_size_query_param)
        if not values:
            return self.page_size
        value = values[0]
        if len(values) > 1 or not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= self.max_page_size:
            message = f"page_size is one whole number from 1 to {self.max_page_size}."
            raise ValidationError({self.page_size_query_param: [message]})
        return int(value)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size, default=self.page_size)
                parameter["description"] = f"Results per page, 1 to {self.max_page_size} (default {self.page_size})."
            elif parameter["name"] == self.cursor_query_param:
                parameter["description"] = "The `next` link's cursor; an unknown or forged one is 404 not_found."
        return parameters

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
