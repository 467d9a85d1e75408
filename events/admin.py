from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from config.admin import ReadOnlyAdminMixin, ReadOnlyTabularInline
from config.errors import ValidationFailed
from events.models import Delivery, DeliveryAttempt, DeliveryState, Event, EventType, WebhookEndpoint
from events.services import (
    endpoint_redeliver_failed,
    event_redeliver,
    webhook_endpoint_disable,
    webhook_endpoint_enable,
    webhook_endpoint_validate,
)


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        choices=EventType.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every type.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "secret", "previous_secret", "event_types"]
        help_texts = {
            "secret": "whsec_ followed by base64. To rotate: put the new one here and the old one below.",
            "previous_secret": "During a rotation, the old secret: both signatures are sent.",
        }

    def clean(self):
        data = super().clean()
        try:
            webhook_endpoint_validate(
                url=data.get("url", ""), secret=data.get("secret", ""),
                previous_secret=data.get("previous_secret", ""), event_types=data.get("event_types", []),
            )
        except ValidationFailed as exc:
            for field, errors in exc.fields.items():
                for error in errors:
                    self.add_error(field if field in self.fields else None, error)
        return data


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["url", "types", "state", "failing_since", "created_at"]
    list_filter = [("disabled_at", admin.EmptyFieldListFilter)]
    readonly_fields = ["id", "created_at", "disabled_at", "disabled_reason", "failing_since"]
    actions = ["disable", "enable", "redeliver_failed"]

    @admin.display(description="event types")
    def types(self, endpoint):
        return ", ".join(endpoint.event_types) or "all"

    @admin.display(description="state")
    def state(self, endpoint):
        if endpoint.disabled_at is None:
            return "enabled"
        return format_html('<strong style="color:#ba2121">disabled</strong> since {}: {}',
                           f"{endpoint.disabled_at:%Y-%m-%d %H:%M}", endpoint.disabled_reason)

    @admin.action(description="Disable the selected endpoints")
    def disable(self, request, queryset):
        count = sum(webhook_endpoint_disable(endpoint_id=e.id, reason=f"Disabled by {request.user}.") for e in queryset)
        self.message_user(request, f"{count} endpoint(s) disabled.", messages.SUCCESS)

    @admin.action(description="Enable the selected endpoints")
    def enable(self, request, queryset):
        count = sum(webhook_endpoint_enable(endpoint_id=e.id) for e in queryset)
        self.message_user(request, f"{count} endpoint(s) enabled.", messages.SUCCESS)

    @admin.action(description="Redeliver every failed delivery of the selected endpoints")
    def redeliver_failed(self, request, queryset):
        count = sum(endpoint_redeliver_failed(endpoint_id=e.id) for e in queryset)
        self.message_user(request, f"{count} failed deliveries queued again.", messages.SUCCESS)


class AttemptInline(ReadOnlyTabularInline):
    model = DeliveryAttempt
    fields = ["attempted_at", "status_code", "latency_ms", "response_excerpt", "error"]
    readonly_fields = fields


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "event", "endpoint", "state", "attempts", "next_attempt_at", "delivered_at"]
    list_filter = ["state", "endpoint"]
    list_select_related = ["event", "endpoint"]
    readonly_fields = ["event", "endpoint", "state", "attempts", "next_attempt_at", "leased_until", "created_at",
                       "delivered_at"]
    exclude = ["lease_token"]
    inlines = [AttemptInline]
    actions = ["redeliver"]

    @admin.action(description="Redeliver these deliveries' events")
    def redeliver(self, request, queryset):
        count = sum(event_redeliver(event_id=d.event_id) for d in queryset)
        self.message_user(request, f"{count} deliveries queued.", messages.SUCCESS)


class DeliveryInline(ReadOnlyTabularInline):
    model = Delivery
    fields = ["endpoint", "state", "attempts", "next_attempt_at", "delivered_at"]
    readonly_fields = fields
    show_change_link = True


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["public_id", "type", "group_id", "created_at", "position", "delivery_states"]
    list_filter = ["type"]
    search_fields = ["subject", "group_id", "request_id"]
    readonly_fields = ["public_id", "type", "group_id", "subject", "data", "created_at", "position", "unique_key",
                       "request_id"]
    inlines = [DeliveryInline]
    actions = ["redeliver"]

    @admin.display(description="deliveries")
    def delivery_states(self, event):
        states = list(event.deliveries.values_list("state", flat=True))
        return ", ".join(f"{states.count(s)} {s}" for s in DeliveryState.values if s in states) or "-"

    @admin.action(description="Redeliver the selected events to every endpoint that takes them")
    def redeliver(self, request, queryset):
        count = sum(event_redeliver(event_id=e.id) for e in queryset)
        self.message_user(request, f"{count} deliveries queued.", messages.SUCCESS)
