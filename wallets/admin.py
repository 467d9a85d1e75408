from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Prefetch, Sum
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from config.admin import ReadOnlyAdminMixin, ReadOnlyTabularInline
from config.errors import InsufficientFunds, ServiceError
from wallets.models import Account, AccountKind, LedgerEntry, LedgerTransaction, PaymentPin, Wallet
from wallets.money import format_money
from wallets.selectors import ledger_reconcile
from wallets.services import wallet_adjust

# The admin's "View site" link pointed at "/", which this service answers with the
# API's 404 envelope: operators have no site to view, so the link is left out.
admin.site.site_url = None


WALLET_ENTRIES_PER_PAGE = 25


def short_id(value) -> str:
    """The first block of a UUID: the full one takes a third of a 1366 px list."""
    return str(value)[:8]


class AdjustmentForm(forms.Form):
    amount = forms.IntegerField(help_text="Minor units; negative takes money out of the wallet.")
    reason = forms.CharField(max_length=255, widget=forms.Textarea(attrs={"rows": 3}))


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "balance_display", "created_at"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    fields = ["user", "balance_display", "currency", "created_at"]
    readonly_fields = fields
    actions = ["adjust_balance"]
    change_form_template = "admin/wallets/wallet_change_form.html"
    change_list_template = "admin/wallets/wallet_change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).filter(kind=AccountKind.WALLET)

    def has_view_permission(self, request, obj=None):
        return request.user.is_staff

    @admin.display(description="balance", ordering="balance")
    def balance_display(self, wallet):
        return format_money(wallet.balance, wallet.currency)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The wallet's ledger entries, newest first, a page at a time (?entries_page=N)."""
        entries = LedgerEntry.objects.filter(account_id=object_id).select_related("transaction").order_by("-id")
        page = Paginator(entries, WALLET_ENTRIES_PER_PAGE).get_page(request.GET.get("entries_page"))
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "entries_page": page})

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

    list_display = ["code", "kind", "entry_balance", "entry_balance_minor"]
    fields = ["code", "currency", "kind"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(kind=AccountKind.WALLET).annotate(entry_sum=Sum("entries__amount"))

    @admin.display(description="balance (sum of entries)")
    def entry_balance(self, account):
        return format_money(account.entry_sum or 0, account.currency)

    @admin.display(description="minor units")
    def entry_balance_minor(self, account):
        return account.entry_sum or 0


class TransactionEntryInline(ReadOnlyTabularInline):
    """An entry's detail: money as money, and the minor units an operator reconciles with."""

    model = LedgerEntry
    fields = ["account", "amount_display", "amount", "balance_after_display", "balance_after"]
    readonly_fields = fields
    ordering = ["id"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("account__user")

    @admin.display(description="amount")
    def amount_display(self, entry):
        return format_money(entry.amount, entry.account.currency, signed=True)

    @admin.display(description="balance after")
    def balance_after_display(self, entry):
        if entry.balance_after is None:
            return self.get_empty_value_display()
        return format_money(entry.balance_after, entry.account.currency)


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["short_id", "kind", "amount", "wallets", "packet", "created_by", "memo", "created_at"]
    list_filter = ["kind"]
    search_fields = ["id", "packet_id", "entries__account__user__username", "memo"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]  # backed by the created_at index; the admin adds -pk as the tie-break
    fields = ["id", "kind", "amount", "created_at", "packet", "created_by", "memo"]
    readonly_fields = fields
    inlines = [TransactionEntryInline]
    list_select_related = ["created_by"]

    def get_queryset(self, request):
        # One query for the whole page's entries and their wallets, not one per row.
        entries = LedgerEntry.objects.select_related("account__user").order_by("id")
        return super().get_queryset(request).prefetch_related(Prefetch("entries", queryset=entries))

    @admin.display(description="transaction", ordering="id")
    def short_id(self, ledger_transaction):
        return short_id(ledger_transaction.id)

    @admin.display(description="amount")
    def amount(self, ledger_transaction):
        """What moved: the sum of the credited legs (a balanced transaction debits as much)."""
        entries = ledger_transaction.entries.all()
        if not entries:
            return self.get_empty_value_display()
        return format_money(sum(e.amount for e in entries if e.amount > 0), entries[0].account.currency)

    @admin.display(description="wallets")
    def wallets(self, ledger_transaction):
        legs = [e for e in ledger_transaction.entries.all() if e.account.kind == AccountKind.WALLET]
        if not legs:
            return self.get_empty_value_display()
        return format_html_join(
            ", ", '<a href="{}">{}</a> {}',
            ((reverse("admin:wallets_wallet_change", args=[e.account_id]), e.account.user.username,
              format_money(e.amount, e.account.currency, signed=True)) for e in legs),
        )

    @admin.display(description="packet")
    def packet(self, ledger_transaction):
        if ledger_transaction.packet_id is None:
            return "-"
        url = reverse("admin:redpackets_packet_change", args=[ledger_transaction.packet_id])
        return format_html('<a href="{}" title="{}">{}</a>', url, ledger_transaction.packet_id,
                           short_id(ledger_transaction.packet_id))


@admin.register(PaymentPin)
class PaymentPinAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "failed_attempts", "locked_until", "updated_at"]
    search_fields = ["user__username"]
    fields = ["user", "failed_attempts", "first_failed_at", "locked_until", "updated_at"]
    readonly_fields = fields
