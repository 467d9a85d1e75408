from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html

from config.admin import ReadOnlyAdminMixin, ReadOnlyTabularInline
from config.errors import InsufficientFunds, ServiceError
from wallets.models import Account, AccountKind, LedgerEntry, LedgerTransaction, PaymentPin, Wallet
from wallets.selectors import ledger_reconcile
from wallets.services import wallet_adjust

# The admin's "View site" link pointed at "/", which this service answers with the
# API's 404 envelope: operators have no site to view, so the link is left out.
admin.site.site_url = None


class EntryInline(ReadOnlyTabularInline):
    model = LedgerEntry
    fields = ["transaction_link", "kind", "amount", "balance_after", "memo", "created_at"]
    readonly_fields = fields
    ordering = ["-id"]

    @admin.display(description="transaction")
    def transaction_link(self, entry):
        url = reverse("admin:wallets_ledgertransaction_change", args=[entry.transaction_id])
        return format_html('<a href="{}">{}</a>', url, entry.transaction_id)

    @admin.display(description="kind")
    def kind(self, entry):
        return entry.transaction.get_kind_display()

    @admin.display(description="memo")
    def memo(self, entry):
        """The adjustment's reason, the topup's or refund's note: why the money moved."""
        return entry.transaction.memo or self.get_empty_value_display()

    @admin.display(description="posted at")
    def created_at(self, entry):
        # Formatted like the admin's own date fields (a callable's datetime would show raw).
        return formats.localize(timezone.template_localtime(entry.transaction.created_at))

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("transaction")


class AdjustmentForm(forms.Form):
    amount = forms.IntegerField(help_text="Minor units; negative takes money out of the wallet.")
    reason = forms.CharField(max_length=255, widget=forms.Textarea(attrs={"rows": 3}))


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "balance", "currency", "created_at"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    fields = ["user", "balance", "currency", "created_at"]
    readonly_fields = fields
    inlines = [EntryInline]
    actions = ["adjust_balance"]
    change_form_template = "admin/wallets/wallet_change_form.html"
    change_list_template = "admin/wallets/wallet_change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).filter(kind=AccountKind.WALLET)

    def has_view_permission(self, request, obj=None):
        return request.user.is_staff

    @admin.action(description="Adjust balance (superusers)")
    def adjust_balance(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one wallet to adjust.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:wallets_wallet_adjust", args=[queryset.get().pk]))

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.is_superuser:
            actions.pop("adjust_balance", None)
        return actions

    def get_urls(self):
        return [
            path("<int:pk>/adjust/", self.admin_site.admin_view(self.adjust_view), name="wallets_wallet_adjust"),
            path("reconcile/", self.admin_site.admin_view(self.reconcile_view), name="wallets_wallet_reconcile"),
            *super().get_urls(),
        ]

    def adjust_view(self, request, pk):
        if not request.user.is_superuser:
            raise PermissionDenied("Only superusers adjust balances.")
        wallet = get_object_or_404(self.get_queryset(request), pk=pk)
        form = AdjustmentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                wallet_adjust(wallet=wallet, operator=request.user, **form.cleaned_data)
            except InsufficientFunds:
                # The service speaks to the wallet's owner ("Your balance is ..."); say it to the operator.
                wallet.refresh_from_db(fields=["balance"])
                amount = form.cleaned_data["amount"]
                form.add_error(None, f"{wallet} holds {wallet.balance} {wallet.currency}: "
                                     f"an adjustment of {amount:+d} would take it below zero.")
            except ServiceError as exc:
                for field, field_messages in (exc.fields or {None: [exc.message]}).items():
                    form.add_error(field if field in form.fields else None, field_messages)
            else:
                self.message_user(request, f"Posted an adjustment of {form.cleaned_data['amount']:+d} to {wallet}.")
                return HttpResponseRedirect(reverse("admin:wallets_wallet_change", args=[wallet.pk]))
        context = {**self.admin_site.each_context(request), "title": f"Adjust {wallet}", "wallet": wallet,
                   "form": form, "opts": self.model._meta}
        return TemplateResponse(request, "admin/wallets/adjust.html", context)

    def reconcile_view(self, request):
        report = ledger_reconcile()
        context = {**self.admin_site.each_context(request), "title": "Ledger reconciliation", "report": report,
                   "opts": self.model._meta}
        return TemplateResponse(request, "admin/wallets/reconcile.html", context)


@admin.register(Account)
class SystemAccountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """System accounts: their balance is the sum of their entries."""

    list_display = ["code", "currency", "kind", "entry_balance"]
    fields = ["code", "currency", "kind"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(kind=AccountKind.WALLET).annotate(entry_sum=Sum("entries__amount"))

    @admin.display(description="balance (sum of entries)")
    def entry_balance(self, account):
        return account.entry_sum or 0


class TransactionEntryInline(ReadOnlyTabularInline):
    model = LedgerEntry
    fields = ["account", "amount", "balance_after"]
    readonly_fields = fields


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "kind", "created_at", "packet", "created_by", "memo"]
    list_filter = ["kind"]
    search_fields = ["id", "packet_id", "entries__account__user__username", "memo"]
    date_hierarchy = "created_at"
    fields = ["id", "kind", "created_at", "packet", "created_by", "memo"]
    readonly_fields = fields
    inlines = [TransactionEntryInline]
    list_select_related = ["created_by"]


    @admin.display(description="packet")
    def packet(self, ledger_transaction):
        if ledger_transaction.packet_id is None:
            return "-"
        url = reverse("admin:redpackets_packet_change", args=[ledger_transaction.packet_id])
        return format_html('<a href="{}">{}</a>', url, ledger_transaction.packet_id)


@admin.register(PaymentPin)
class PaymentPinAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "failed_attempts", "locked_until", "updated_at"]
    search_fields = ["user__username"]
    fields = ["user", "failed_attempts", "first_failed_at", "locked_until", "updated_at"]
    readonly_fields = fields
