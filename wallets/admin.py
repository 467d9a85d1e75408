from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Prefetch, Sum
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from config.admin import ReadOnlyAdminMixin, ReadOnlyTabularInline
from config.dashboard import Figure
from config.errors import ServiceError
from wallets.models import (
    Account,
    AccountKind,
    AdjustmentRequest,
    AdjustmentStatus,
    LedgerEntry,
    LedgerTransaction,
    PaymentPin,
    PinUnlock,
    ReconciliationMode,
    ReconciliationRun,
    Wallet,
)
from wallets.money import format_money, parse_major_amount
from wallets.selectors import reconciliation_report, reconciliation_runs_recent
from wallets.services import adjustment_approve, adjustment_reject, adjustment_request, pin_unlock
from wallets.tasks import reconcile_ledger

# Most minor units one adjustment may move: a typo guard, far below the database's bigint.
MAX_ADJUSTMENT = 10**12



WALLET_ENTRIES_PER_PAGE = 25


def short_id(value) -> str:
    """The first block of a UUID: the full one takes a third of a 1366 px list."""
    return str(value)[:8]


class AdjustmentRequestForm(forms.Form):
    amount = forms.CharField(
        max_length=24, help_text="In major units (12.50); negative takes money out of the wallet.",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    reason = forms.CharField(max_length=255, widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="Why: the ticket, the incident. Kept with the request and the posting.")

    def __init__(self, *args, currency: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = currency

    def clean_amount(self) -> int:
        try:
            amount = parse_major_amount(self.cleaned_data["amount"], self.currency)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        if amount == 0:
            raise forms.ValidationError("An adjustment moves a non-zero amount.")
        if abs(amount) > MAX_ADJUSTMENT:
            raise forms.ValidationError(f"At most {format_money(MAX_ADJUSTMENT, self.currency)} in one adjustment.")
        return amount


class DecisionNoteForm(forms.Form):
    note = forms.CharField(max_length=255, widget=forms.Textarea(attrs={"rows": 3}), label="Why it is rejected")


class PinUnlockForm(forms.Form):
    reason = forms.CharField(max_length=255, widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="How the user proved who they are, and the ticket.")


def add_service_errors(form: forms.Form, exc: ServiceError) -> None:
    for field, field_messages in (exc.fields or {None: [exc.message]}).items():
        form.add_error(field if field in form.fields else None, field_messages)


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "balance_display", "created_at"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    fields = ["user", "balance_display", "currency", "created_at"]
    readonly_fields = fields
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
        wallet = self.get_object(request, unquote(object_id))  # None for a bad id: the admin then says so
        if wallet is not None:
            entries = LedgerEntry.objects.filter(account=wallet).select_related("transaction").order_by("-id")
            page = Paginator(entries, WALLET_ENTRIES_PER_PAGE).get_page(request.GET.get("entries_page"))
            extra_context = {**(extra_context or {}), "entries_page": page}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path("<int:pk>/request-adjustment/", self.admin_site.admin_view(self.request_adjustment_view),
                 name="wallets_wallet_request_adjustment"),
            path("reconcile/", self.admin_site.admin_view(self.reconcile_view), name="wallets_wallet_reconcile"),
            *super().get_urls(),
        ]

    def request_adjustment_view(self, request, pk):
        """Ask for an adjustment: the form, then a page that repeats it for confirmation."""
        if not request.user.has_perm("wallets.add_adjustmentrequest"):
            raise PermissionDenied("You may not request balance adjustments.")
        wallet = get_object_or_404(self.get_queryset(request), pk=pk)
        form = AdjustmentRequestForm(request.POST or None, currency=wallet.currency)
        template = "admin/wallets/request_adjustment.html"
        if request.method == "POST" and form.is_valid():
            amount = form.cleaned_data["amount"]
            if request.POST.get("confirm") == "yes":
                try:
                    adjustment = adjustment_request(wallet=wallet, operator=request.user, **form.cleaned_data)
                except ServiceError as exc:
                    add_service_errors(form, exc)
                else:
                    self.message_user(request, f"{adjustment} of {format_money(amount, wallet.currency, signed=True)} "
                                               f"to {wallet} waits for a second operator's approval.")
                    return HttpResponseRedirect(reverse("admin:wallets_adjustmentrequest_change", args=[adjustment.pk]))
            else:
                template = "admin/wallets/request_adjustment_confirmation.html"
        context = {**self.admin_site.each_context(request), "title": f"Request an adjustment of {wallet}",
                   "wallet": wallet, "object": wallet, "form": form, "opts": self.model._meta}
        if form.is_bound and form.is_valid():
            amount = form.cleaned_data["amount"]
            context.update(amount=format_money(amount, wallet.currency, signed=True),
                           balance_after=format_money(wallet.balance + amount, wallet.currency))
        return TemplateResponse(request, template, context)

    def reconcile_view(self, request):
        """The last runs, read-only, and "Run now", which only enqueues one: a full run
        over millions of entries takes minutes, never a web request."""
        if request.method == "POST":
            mode = request.POST.get("mode", ReconciliationMode.INCREMENTAL)
            if mode not in ReconciliationMode.values:
                raise PermissionDenied("No such reconciliation mode.")
            reconcile_ledger.delay_on_commit(mode=mode, requested_by_id=request.user.pk)
            self.message_user(request, f"A {mode} reconciliation is queued; it is listed here once a worker runs it.")
            return HttpResponseRedirect(reverse("admin:wallets_wallet_reconcile"))
        runs = reconciliation_runs_recent()
        latest = next((run for run in runs if run.finished_at and not run.error), None)
        context = {**self.admin_site.each_context(request), "title": "Ledger reconciliation", "runs": runs,
                   "latest": latest, "report": reconciliation_report(run=latest) if latest else None,
                   "modes": ReconciliationMode.choices, "opts": self.model._meta}
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
    list_display = ["user", "locked", "failed_attempts", "locked_until", "updated_at"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    fields = ["user", "locked", "failed_attempts", "first_failed_at", "locked_until", "updated_at"]
    readonly_fields = fields
    change_form_template = "admin/wallets/paymentpin_change_form.html"

    @admin.display(description="locked", boolean=True)
    def locked(self, record):
        return record.locked_until is not None and record.locked_until > timezone.now()

    def get_urls(self):
        return [
            path("<int:pk>/unlock/", self.admin_site.admin_view(self.unlock_view), name="wallets_paymentpin_unlock"),
            *super().get_urls(),
        ]

    def unlock_view(self, request, pk):
        if not request.user.has_perm("wallets.add_pinunlock"):
            raise PermissionDenied("You may not unlock PINs.")
        record = get_object_or_404(PaymentPin.objects.select_related("user"), pk=pk)
        form = PinUnlockForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                pin_unlock(user=record.user, operator=request.user, reason=form.cleaned_data["reason"])
            except ServiceError as exc:
                add_service_errors(form, exc)
            else:
                self.message_user(request, f"Unlocked the PIN of {record.user}; the unlock is recorded with your reason.")
                return HttpResponseRedirect(reverse("admin:wallets_paymentpin_change", args=[record.pk]))
        context = {**self.admin_site.each_context(request), "title": f"Unlock the PIN of {record.user}",
                   "record": record, "object": record, "locked": self.locked(record), "form": form, "opts": self.model._meta}
        return TemplateResponse(request, "admin/wallets/pin_unlock.html", context)


@admin.register(PinUnlock)
class PinUnlockAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit of PIN unlocks: read-only, kept for good."""

    list_display = ["id", "user", "unlocked_by", "reason", "lifted_lock_until", "created_at"]
    search_fields = ["user__username", "unlocked_by__username", "reason"]
    list_select_related = ["user", "unlocked_by"]
    fields = ["user", "unlocked_by", "reason", "lifted_lock_until", "created_at"]
    readonly_fields = fields

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("wallets.view_pinunlock") or request.user.has_perm("wallets.add_pinunlock")


@admin.register(AdjustmentRequest)
class AdjustmentRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Requests, approvals and rejections, read-only; approve and reject are their own pages."""

    list_display = ["number", "wallet_link", "amount_display", "status", "requested_by", "requested_at",
                    "decided_by", "decided_at"]
    list_filter = ["status"]
    search_fields = ["wallet__user__username", "requested_by__username", "decided_by__username", "reason"]
    list_select_related = ["wallet__user", "requested_by", "decided_by"]
    ordering = ["-id"]
    fields = ["number", "wallet_link", "amount_display", "amount_minor", "reason", "status", "requested_by", "requested_at",
              "decided_by", "decided_at", "decision_note", "transaction_link"]
    readonly_fields = fields
    change_form_template = "admin/wallets/adjustmentrequest_change_form.html"

    @admin.display(description="request", ordering="id")
    def number(self, adjustment):
        return f"#{adjustment.pk}"

    @admin.display(description="wallet")
    def wallet_link(self, adjustment):
        url = reverse("admin:wallets_wallet_change", args=[adjustment.wallet_id])
        return format_html('<a href="{}">{}</a>', url, adjustment.wallet.user.username)

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, adjustment):
        return format_money(adjustment.amount, adjustment.wallet.currency, signed=True)

    @admin.display(description="amount (minor units)")
    def amount_minor(self, adjustment):
        return adjustment.amount

    @admin.display(description="posting")
    def transaction_link(self, adjustment):
        if adjustment.transaction_id is None:
            return self.get_empty_value_display()
        url = reverse("admin:wallets_ledgertransaction_change", args=[adjustment.transaction_id])
        return format_html('<a href="{}">{}</a>', url, adjustment.transaction_id)

    def may_decide(self, request, adjustment) -> bool:
        """Whether to offer approve/reject; the service decides for good."""
        return (adjustment.status == AdjustmentStatus.PENDING and adjustment.requested_by_id != request.user.pk
                and request.user.has_perm("wallets.approve_adjustmentrequest"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        adjustment = self.get_object(request, unquote(object_id))
        if adjustment is not None:
            extra_context = {**(extra_context or {}), "may_decide": self.may_decide(request, adjustment),
                             "own_request": adjustment.requested_by_id == request.user.pk}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path("<int:pk>/approve/", self.admin_site.admin_view(self.approve_view),
                 name="wallets_adjustmentrequest_approve"),
            path("<int:pk>/reject/", self.admin_site.admin_view(self.reject_view),
                 name="wallets_adjustmentrequest_reject"),
            *super().get_urls(),
        ]

    def _decision_page(self, request, adjustment, form, template):
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "adjustment": adjustment, "object": adjustment,
                   "title": f"{adjustment}: {self.amount_display(adjustment)} to {adjustment.wallet}",
                   "amount": self.amount_display(adjustment), "form": form,
                   "balance": format_money(adjustment.wallet.balance, adjustment.wallet.currency),
                   "balance_after": format_money(adjustment.wallet.balance + adjustment.amount,
                                                 adjustment.wallet.currency)}
        return TemplateResponse(request, template, context)

    def approve_view(self, request, pk):
        """GET: what approving posts, for confirmation; POST: approve and post it."""
        adjustment = get_object_or_404(AdjustmentRequest.objects.select_related("wallet__user", "requested_by"), pk=pk)
        done = HttpResponseRedirect(reverse("admin:wallets_adjustmentrequest_change", args=[pk]))
        if request.method != "POST":
            if not self.may_decide(request, adjustment):
                self.message_user(request, f"You cannot approve {adjustment}.", messages.ERROR)
                return done
            return self._decision_page(request, adjustment, None, "admin/wallets/adjustment_approve.html")
        try:
            adjustment = adjustment_approve(adjustment_id=pk, approver=request.user)
        except ServiceError as exc:
            self.message_user(request, f"Not posted: {exc.message}", messages.ERROR)
        else:
            self.message_user(request, f"Approved {adjustment}: posted {self.amount_display(adjustment)} "
                                       f"to {adjustment.wallet}.")
        return done

    def reject_view(self, request, pk):
        adjustment = get_object_or_404(AdjustmentRequest.objects.select_related("wallet__user", "requested_by"), pk=pk)
        done = HttpResponseRedirect(reverse("admin:wallets_adjustmentrequest_change", args=[pk]))
        form = DecisionNoteForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                adjustment_reject(adjustment_id=pk, approver=request.user, note=form.cleaned_data["note"])
            except ServiceError as exc:
                self.message_user(request, f"Not rejected: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"Rejected {adjustment}; nothing was posted.")
            return done
        if not self.may_decide(request, adjustment):
            self.message_user(request, f"You cannot reject {adjustment}.", messages.ERROR)
            return done
        return self._decision_page(request, adjustment, form, "admin/wallets/adjustment_reject.html")


def dashboard_figures() -> list[Figure]:
    """Operators' queues (adjustments waiting for a second operator, locked PINs) and the reconciliation."""
    now = timezone.now()
    pending = AdjustmentRequest.objects.filter(status=AdjustmentStatus.PENDING).count()
    locked = PaymentPin.objects.filter(locked_until__gt=now).count()
    return [
        Figure("Operators", "Adjustments waiting for approval", str(pending),
               f"{reverse('admin:wallets_adjustmentrequest_changelist')}?status__exact={AdjustmentStatus.PENDING}",
               alert=pending > 0),
        Figure("Operators", "Locked PINs", str(locked), reverse("admin:wallets_paymentpin_changelist"),
               "after too many wrong tries; support can unlock one with a reason"),
        reconciliation_figure(now),
    ]


def reconciliation_figure(now) -> Figure:
    """The newest finished run: its outcome, when, how long; flagged when it or the last full run found problems."""
    finished = ReconciliationRun.objects.filter(finished_at__isnull=False).order_by("-id")
    last = finished.first()
    url = reverse("admin:wallets_wallet_reconcile")
    if last is None:
        return Figure("Ledger", "Last reconciliation", "never run", url,
                      "every wallet against its entries, every transaction against zero, escrow against the free shares",
                      alert=True)
    last_full = last if last.mode == ReconciliationMode.FULL else finished.filter(mode=ReconciliationMode.FULL).first()
    outcome = "OK" if last.ok else ("failed" if last.error else f"{len(last.problems)} problem(s)")
    detail = (f"{last.get_mode_display().split(':')[0].lower()} run #{last.pk}, "
              f"{(now - last.finished_at).total_seconds() / 60:.0f} min ago, took "
              f"{last.duration.total_seconds():.1f} s, {last.entries_checked} entries checked")
    if last_full is not None and last_full is not last:
        detail += f"; last full run #{last_full.pk}: {'OK' if last_full.ok else 'problems'}"
    return Figure("Ledger", "Last reconciliation", outcome, url, detail,
                  alert=not last.ok or (last_full is not None and not last_full.ok))
