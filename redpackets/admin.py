from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, Exists, F, OuterRef, Q, Sum
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from config.admin import ReadOnlyAdminMixin, ReadOnlyTabularInline
from config.dashboard import Figure
from redpackets.models import ChatGroup, GroupMembership, Packet, PacketStatus, Share
from redpackets.selectors import packet_commitment, packet_status, packets_with_progress
from redpackets.services import packet_refund_expired
from wallets.money import format_money


class MembershipInline(admin.TabularInline):
    model = GroupMembership
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["joined_at"]


@admin.register(ChatGroup)
class ChatGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "member_count", "created_at"]
    search_fields = ["name", "owner__username", "members__username"]
    readonly_fields = ["id", "created_at"]
    autocomplete_fields = ["owner"]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").annotate(member_total=Count("memberships"))

    @admin.display(description="members", ordering="member_total")
    def member_count(self, group):
        return group.member_total


class ShareInline(ReadOnlyTabularInline):
    model = Share
    fields = ["seq", "amount_display", "claimed_by", "claimed_at", "refunded", "claim_transaction"]
    readonly_fields = fields
    ordering = ["seq"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("packet", "claimed_by", "claim_transaction")

    @admin.display(description="amount")
    def amount_display(self, share):
        return format_money(share.amount, share.packet.currency)


class StatusFilter(admin.SimpleListFilter):
    """Status is derived from the shares, so the filter says it in queries."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return PacketStatus.choices

    def queryset(self, request, queryset):
        # The queryset comes from packets_with_progress(), annotated with claimed_count.
        value, now = self.value(), timezone.now()
        if value is None:
            return queryset
        finished = Q(claimed_count=F("share_count"))
        settled = Q(settled_at__isnull=False)
        past_expiry = Q(expires_at__lte=now)
        if value == PacketStatus.FINISHED:
            return queryset.filter(finished)
        if value == PacketStatus.EXPIRED:
            return queryset.exclude(finished).filter(settled)
        if value == PacketStatus.EXPIRING:
            return queryset.exclude(finished).exclude(settled).filter(past_expiry)
        return queryset.exclude(finished).exclude(settled).exclude(past_expiry)


@admin.register(Packet)
class PacketAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["short_id", "kind", "sender", "group", "total", "share_count", "status", "created_at", "expires_at"]
    list_filter = [StatusFilter, "kind"]
    search_fields = ["id", "sender__username", "group__name"]
    list_select_related = ["sender", "group"]
    ordering = ["-created_at"]  # backed by the packet_recent index
    fields = [
        "id", "group", "sender", "recipient", "kind", "greeting", "total", "share_count",
        "status", "created_at", "expires_at", "settled_at", "refunded", "largest_share", "commitment",
        "has_passphrase", "hint",
    ]
    readonly_fields = fields
    inlines = [ShareInline]
    actions = ["expire_now"]

    def get_queryset(self, request):
        return packets_with_progress()

    @admin.display(description="packet", ordering="id")
    def short_id(self, packet):
        # The full UUID takes half the list's width; search by id still takes it whole.
        return str(packet.id)[:8]

    @admin.display(description="status")
    def status(self, packet):
        return packet_status(packet)[0]

    @admin.display(description="total", ordering="total_amount")
    def total(self, packet):
        return format_money(packet.total_amount, packet.currency)

    @admin.display(description="refunded", ordering="refunded_amount")
    def refunded(self, packet):
        return format_money(packet.refunded_amount, packet.currency)

    @admin.display(description="share cap")
    def largest_share(self, packet):
        if packet.share_cap is None:
            return self.get_empty_value_display()
        return format_money(packet.share_cap, packet.currency)

    # The seed stays out of the admin as out of the API until the packet settles (the
    # proof shows it then); the passphrase exists only as its HMAC, never shown.
    @admin.display(description="commitment (rp-split-v1)")
    def commitment(self, packet):
        return packet_commitment(packet) or "—"

    @admin.display(description="passphrase", boolean=True)
    def has_passphrase(self, packet):
        return packet.passphrase_hmac is not None

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.is_superuser:
            actions.pop("expire_now", None)
        return actions

    @admin.action(description="Expire now and refund the unclaimed shares (superusers)")
    def expire_now(self, request, queryset):
        """Asks first, on a page that lists what each packet would refund; posts on "Yes, expire"."""
        if request.POST.get("post") != "yes":
            packets = [(packet, packet.total_amount - packet.claimed_amount) for packet in queryset]
            context = {
                **self.admin_site.each_context(request),
                "title": "Expire these packets now?",
                "opts": self.model._meta,
                "packets": [(p, format_money(free, p.currency), p.settled_at is not None) for p, free in packets],
                "queryset": queryset,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/redpackets/expire_now_confirmation.html", context)
        refunded, skipped = 0, 0
        for packet_id in queryset.values_list("id", flat=True):
            amount = packet_refund_expired(packet_id=packet_id, force=True)
            if amount is None:
                skipped += 1
            else:
                refunded += 1
        self.message_user(request, f"Expired {refunded} packet(s); {skipped} were settled already.", messages.SUCCESS)


def dashboard_figures() -> list[Figure]:
    """Escrow, active and expiring packets, and how far the expiry sweep is behind."""
    now = timezone.now()
    packets = reverse("admin:redpackets_packet_changelist")
    unsettled = Packet.objects.filter(settled_at__isnull=True)  # the packet_unsettled_by_expiry index
    free_shares = Share.objects.filter(claimed_by__isnull=True, refunded=False)  # the share_free_by_packet index
    escrow = free_shares.values("packet__currency").annotate(held=Sum("amount")).order_by("packet__currency")
    active = unsettled.filter(expires_at__gt=now).filter(Exists(free_shares.filter(packet=OuterRef("pk")))).count()
    expiring = unsettled.filter(expires_at__lte=now)
    oldest = expiring.order_by("expires_at").values_list("id", "expires_at").first()
    expiring_url = f"{packets}?{urlencode({'settled_at__isnull': 'True', 'expires_at__lte': now.isoformat()})}"
    figures = [
        Figure("Packets", "Money in escrow",
               ", ".join(format_money(row["held"], row["packet__currency"]) for row in escrow) or "nothing",
               reverse("admin:wallets_account_changelist"),
               "the free shares of unsettled packets (reconciliation checks the escrow ledger against them)"),
        Figure("Packets", "Active packets", str(active), f"{packets}?status={PacketStatus.ACTIVE}"),
        Figure("Packets", "Expiring packets", str(expiring.count()), expiring_url,
               "past their expiry, refund not posted yet"),
    ]
    if oldest is None:
        figures.append(Figure("Packets", "Sweep lag", "none", packets, "no expired packet waits for its refund"))
    else:
        packet_id, expires_at = oldest
        lag = (now - expires_at).total_seconds()
        figures.append(Figure(
            "Packets", "Sweep lag", f"{lag:.0f} s", reverse("admin:redpackets_packet_change", args=[packet_id]),
            f"the oldest unsettled expired packet, {str(packet_id)[:8]}; refunds are due within "
            f"{settings.REDPACKET_SWEEP_SECONDS} s", alert=lag > settings.REDPACKET_SWEEP_SECONDS,
        ))
    return figures
