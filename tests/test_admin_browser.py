"""The operators' admin in a real browser: headless Chromium driven by Playwright.

Two operators walk through what operators do, on a 1366 px wide screen: a superuser
logs in, reads the dashboard, finds a wallet by username and reads its ledger entries,
requests a balance adjustment with a reason (refused first for too much), opens a
packet and reads its claims, and runs "expire now" on an active packet after its
confirmation page; then a second operator, who may approve adjustments, logs in and
approves the request, and it is posted. Each step checks what the page shows and
what the database holds, that the page fits the screen's width, and saves a
screenshot. The screenshots
go to var/test-artifacts/admin/ by default, or to $ARTIFACTS_DIR/admin/ when
ARTIFACTS_DIR is set. The directory is printed in the run's summary.

The browser is Debian's Chromium (/usr/bin/chromium, or $CHROMIUM), so nothing is
downloaded. Without it, or without the playwright package, the test is skipped,
except in CI (CI=true), where it fails.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.db import connections
from django.test import override_settings

from redpackets.models import PacketKind, Share
from redpackets.services import packet_claim, packet_send
from tests.factories import PASSWORD, UserFactory, group_with_members
from wallets.models import (
    Account,
    AccountKind,
    AdjustmentRequest,
    AdjustmentStatus,
    LedgerEntry,
    LedgerTransaction,
    SystemAccount,
    TransactionKind,
)
from wallets.selectors import ledger_reconcile


def short(packet) -> str:
    """How the packet list shows a packet's id."""
    return str(packet.id)[:8]


pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No calls home: on a closed network they are refused, and Chromium's own requests fail.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000
SCREEN = {"width": 1366, "height": 768}  # the most common laptop screen
REASON = "Goodwill credit, ticket #1234"


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI needs {reason}", pytrace=False)
    pytest.skip(f"needs {reason}")


@pytest.fixture
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package (pip install -r requirements.txt)")
    return sync_playwright


@pytest.fixture
def chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        _unavailable(f"Chromium at {path} (apt-get install chromium, or set CHROMIUM)")
    return path


class _ArtifactsSummary:
    """A plugin registered by the test: it prints where the screenshots are, at the end of the run."""

    def __init__(self, directory: Path):
        self.directory = directory

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_sep("-", "admin browser test screenshots")
        terminalreporter.write_line(str(self.directory))


@pytest.fixture
def artifacts(request) -> Path:
    root = Path(os.environ.get("ARTIFACTS_DIR") or settings.VAR_DIR / "test-artifacts")
    directory = (root / "admin").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for old in [*directory.glob("[0-9][0-9]-*.png"), directory / "failure.png"]:  # this test's, from an earlier run
        old.unlink(missing_ok=True)
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("admin-browser-artifacts"):
        plugins.register(_ArtifactsSummary(directory), "admin-browser-artifacts")
    return directory


def balance_of(user) -> int:
    return Account.objects.get(user=user, kind=AccountKind.WALLET).balance


def changelist_rows(page) -> list[list[str]]:
    """The text of the change list's cells, row by row, after the checkbox."""
    return page.eval_on_selector_all(
        "#result_list tbody tr",
        "rows => rows.map(row => [...row.querySelectorAll('th, td:not(.action-checkbox)')].map(c => c.innerText.trim()))",
    )


def column(page, selector: str, name: str) -> list[str]:
    """One column of a tabular inline by its field's CSS class (td.field-<name>)."""
    return [text.strip() for text in page.locator(f"{selector} tbody td.field-{name}").all_inner_texts()]


ENTRY_FIELDS = ["transaction_link", "kind", "amount", "balance_after", "memo"]


def newest_entry(page) -> list[str]:
    """The top row of the wallet's ledger entries, without its time."""
    return [column(page, "#entries-group", name)[0] for name in ENTRY_FIELDS]


def test_two_operators_adjust_a_wallet_by_four_eyes_and_expire_a_packet_in_the_admin(
    sync_playwright, chromium, live_server, artifacts, monkeypatch
):
    # Playwright's sync API runs its asyncio loop in a greenlet of this thread, so
    # Django sees a running event loop here and refuses ORM calls with
    # SynchronousOnlyOperation. This test reads the database between browser steps
    # to check each one, and nothing runs at the same time as those reads: the loop
    # only turns while this thread waits inside a Playwright call. So the guard is
    # turned off for this test only. The live server answers the browser from its
    # own thread, which has no event loop and keeps the guard.
    # (Doing the ORM work outside Playwright's block instead would mean starting the
    # browser again for every check.)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    # Given alice with 100.00, a group, a fixed packet of 3 x 10.00 that bob and carol
    # claimed, and a random packet of 5.00 that nobody has claimed; a superuser, and an
    # approver who is staff with the permissions to view wallets and approve adjustments
    User = get_user_model()
    root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    approver = User.objects.create_user("arno", password=PASSWORD, is_staff=True)
    approver.user_permissions.add(*Permission.objects.filter(content_type__app_label="wallets", codename__in=[
        "view_wallet", "view_ledgertransaction", "view_adjustmentrequest", "approve_adjustmentrequest"]))
    alice = UserFactory(username="alice", balance=10_000)
    UserFactory(username="alicia", balance=700)  # a near miss for the search
    bob, carol, dave = (UserFactory(username=name, pin=None) for name in ("bob", "carol", "dave"))
    group = group_with_members(alice, [bob, carol, dave], name="Family")
    with override_settings(REDPACKET_TTL_SECONDS=3600):
        claimed = packet_send(sender=alice, group_id=group.id, kind=PacketKind.FIXED, share_count=3, share_amount=1_000,
                              greeting="Happy new year")
        untouched = packet_send(sender=alice, group_id=group.id, kind=PacketKind.RANDOM, share_count=2, total_amount=500)
    bob_claim = packet_claim(packet_id=claimed.id, user=bob)
    carol_claim = packet_claim(packet_id=claimed.id, user=carol)
    wallet = Account.objects.get(user=alice, kind=AccountKind.WALLET)
    assert wallet.balance == 10_000 - 3_000 - 500

    base = live_server.url
    problems: list[str] = []  # failed requests, HTTP errors and script errors, from every page
    steps = iter(range(1, 100))

    def shot(name: str) -> None:
        page.screenshot(path=artifacts / f"{next(steps):02d}-{name}.png", full_page=True)

    def fits_the_screen() -> None:
        """Nothing wider than the screen, and no table scrolling sideways inside its box."""
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= SCREEN["width"], f"{page.url} is {width} px wide"
        overflowing = page.evaluate(
            "[...document.querySelectorAll('#content table')].filter(t => t.parentElement.scrollWidth >"
            " t.parentElement.clientWidth + 1).map(t => t.id || t.parentElement.className)")
        assert not overflowing, f"{page.url}: {overflowing} scroll sideways"

    def open_list(model: str) -> None:
        """From the index, as an operator would (the admin has no app sidebar)."""
        page.goto(f"{base}/admin/")
        page.click(f"#content-main tr.model-{model} th a")

    def watch(response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            problems.append(f"HTTP {response.status} {response.url}")

    def console(message) -> None:
        # A failed load is echoed here without its address; watch() has it with the address.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console: {message.text}")

    def arrive(path: str) -> None:
        """Wait for the page at `path`; the admin may add a query (?_changelist_filters=...) to it."""
        page.wait_for_url(re.compile(re.escape(f"{base}{path}") + r"(\?.*)?$"))

    def wallet_entries() -> list[LedgerEntry]:
        return list(LedgerEntry.objects.filter(account=wallet).select_related("transaction").order_by("-id"))

    def log_in(username: str) -> None:
        page.goto(f"{base}/admin/")
        page.wait_for_url(re.compile(r"/admin/login/"))
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        arrive("/admin/")

    def dashboard() -> dict[str, str]:
        rows = page.eval_on_selector_all(
            "#dashboard tr.figure", "rows => rows.map(r => [r.dataset.figure, r.querySelector('td.value').innerText])")
        return dict(rows)

    def search_wallets(username: str) -> None:
        page.fill("#searchbar", username)
        page.press("#searchbar", "Enter")
        page.wait_for_url(re.compile(rf"\?q={username}$"))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = None
        try:
            page = browser.new_page(viewport=SCREEN)
            page.set_default_timeout(TIMEOUT_MS)
            page.on("response", watch)
            page.on("requestfailed", lambda request: problems.append(f"failed {request.url}: {request.failure}"))
            page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
            page.on("console", console)

            # --- 1. The superuser logs in and reads the dashboard
            page.goto(f"{base}/admin/")
            page.wait_for_url(re.compile(r"/admin/login/"))
            page.fill("#id_username", "root")
            page.fill("#id_password", PASSWORD)
            shot("login")
            page.click("input[type=submit]")
            arrive("/admin/")

            assert page.locator("#user-tools").inner_text().upper().startswith("WELCOME, ROOT")
            assert "View site" not in page.locator("#user-tools").inner_text()  # it led to the API's 404
            # The admin's stylesheets were served (by live_server's static files handler) and applied.
            header = page.eval_on_selector("#header", "el => getComputedStyle(el).backgroundColor")
            assert header not in ("rgba(0, 0, 0, 0)", "transparent"), header
            sheets = page.evaluate("[...document.styleSheets].map(s => s.href).filter(Boolean)")
            assert any(href.endswith("/static/admin/css/base.css") for href in sheets), sheets
            root.refresh_from_db()
            assert root.last_login is not None
            assert Session.objects.count() == 1
            fits_the_screen()
            shot("index")

            page.click("#dashboard-link caption a")
            arrive("/admin/dashboard/")
            figures = dashboard()
            # Escrow: the claimed packet's free share (10.00) and the untouched one's 5.00
            assert figures["money-in-escrow"] == "15.00 CNY"
            assert (figures["active-packets"], figures["expiring-packets"], figures["sweep-lag"]) == ("2", "0", "none")
            assert figures["adjustments-waiting-for-approval"] == "0"
            assert figures["outbox-backlog"].isdigit() and figures["webhook-backlog"] == "0"
            assert "last-reconciliation" in figures
            fits_the_screen()
            shot("dashboard")

            # --- 2. They search wallets for alice and open hers
            open_list("wallet")
            arrive("/admin/wallets/wallet/")
            search_wallets("alice")

            (row,) = changelist_rows(page)
            assert row[:2] == ["alice", "65.00 CNY"]
            assert page.locator(".paginator").inner_text().strip() == "1 wallet"
            assert not page.locator("#result_list a:text-is('alicia')").count()
            fits_the_screen()
            shot("wallet-search")

            page.click("#result_list a:text-is('alice')")
            arrive(f"/admin/wallets/wallet/{wallet.pk}/change/")

            # It shows her balance and every entry of her wallet, newest first, as in the ledger.
            entries = wallet_entries()
            assert [e.amount for e in entries] == [-500, -3_000, 10_000]
            assert page.locator(".field-balance_display .readonly").inner_text().strip() == "65.00 CNY"
            assert column(page, "#entries-group", "transaction_link") == [str(e.transaction_id)[:8] for e in entries]
            assert column(page, "#entries-group", "kind") == ["Packet sent", "Packet sent", "Topup"]
            assert column(page, "#entries-group", "amount") == ["-5.00 CNY", "-30.00 CNY", "+100.00 CNY"]
            assert column(page, "#entries-group", "balance_after") == ["65.00 CNY", "70.00 CNY", "100.00 CNY"]
            assert column(page, "#entries-group", "memo") == ["-", "-", "Sandbox topup"]
            assert all(re.match(r"\w{3}\.? \d+, \d{4}, ", t) for t in column(page, "#entries-group", "created_at"))
            assert page.locator("#entries-paginator").inner_text().strip() == "Page 1 of 1 (3 entries)"
            fits_the_screen()
            shot("wallet-entries")

            # --- 3. They request an adjustment: first too much out, then a credit in major units
            page.click(".object-tools a:text-is('Request adjustment')")
            arrive(f"/admin/wallets/wallet/{wallet.pk}/request-adjustment/")
            assert "Wallet of alice: balance 65.00 CNY." in page.locator("#content").inner_text()
            page.fill("#id_amount", "-70")
            page.fill("#id_reason", "Reverse a duplicate topup")
            page.click("input[type=submit][value='Review the request']")
            page.click("input[type=submit][value='Yes, request it']")
            page.wait_for_selector("#content ul.errorlist")

            refusal = page.locator("#content ul.errorlist").inner_text()
            assert refusal == "Wallet of alice holds 65.00 CNY: an adjustment of -70.00 CNY would take it below zero."
            assert not AdjustmentRequest.objects.exists()
            shot("adjust-refused")

            page.goto(f"{base}/admin/wallets/wallet/{wallet.pk}/request-adjustment/")
            page.fill("#id_amount", "2.5")
            page.fill("#id_reason", REASON)
            shot("adjust-form")
            page.click("input[type=submit][value='Review the request']")
            page.wait_for_selector("#adjustment-summary")
            summary = page.locator("#adjustment-summary").inner_text()
            assert "+2.50 CNY" in summary and "67.50 CNY" in summary and REASON in summary
            assert not AdjustmentRequest.objects.exists()  # nothing is stored before the confirmation
            fits_the_screen()
            shot("adjust-review")
            page.click("input[type=submit][value='Yes, request it']")
            request = AdjustmentRequest.objects.get()
            arrive(f"/admin/wallets/adjustmentrequest/{request.pk}/change/")

            # A pending request; no money moved, and the requester cannot approve it
            assert (request.amount, request.reason, request.requested_by_id) == (250, REASON, root.pk)
            assert request.status == AdjustmentStatus.PENDING
            assert page.locator("ul.messagelist li").inner_text() == (
                f"Adjustment request #{request.pk} of +2.50 CNY to Wallet of alice waits for a second operator's approval.")
            assert not page.locator(".object-tools a:text-is('Approve and post')").count()
            assert page.locator("#decision-help").inner_text() == "Your own request: another operator approves or rejects it."
            assert balance_of(alice) == 6_500
            assert not LedgerTransaction.objects.filter(kind=TransactionKind.ADJUSTMENT).exists()
            fits_the_screen()
            shot("adjust-requested")

            # --- 4. They find alice's packets and open the one bob and carol claimed
            open_list("packet")
            arrive("/admin/redpackets/packet/")
            search_wallets("alice")
            # Newest first
            assert page.locator("#result_list th.field-short_id a").all_inner_texts() == [short(untouched), short(claimed)]
            assert page.locator(f"#result_list tr:has(a:text-is('{short(claimed)}')) td.field-total").inner_text() == (
                "30.00 CNY")
            assert page.locator(f"#result_list tr:has(a:text-is('{short(claimed)}')) td.field-status").inner_text() == "active"
            fits_the_screen()
            shot("packets")
            page.click(f"#result_list a:text-is('{short(claimed)}')")
            arrive(f"/admin/redpackets/packet/{claimed.id}/change/")

            shares = list(Share.objects.filter(packet=claimed).select_related("claimed_by").order_by("seq"))
            assert [s.claimed_by.username if s.claimed_by else None for s in shares] == ["bob", "carol", None]
            assert [s.amount for s in shares[:2]] == [bob_claim.amount, carol_claim.amount]
            assert column(page, "#shares-group", "seq") == ["0", "1", "2"]
            assert column(page, "#shares-group", "amount_display") == ["10.00 CNY", "10.00 CNY", "10.00 CNY"]
            assert column(page, "#shares-group", "claimed_by") == ["bob", "carol", "-"]
            assert page.locator(".field-status .readonly").inner_text().strip() == "active"
            assert page.locator(".field-settled_at .readonly").inner_text().strip() == "-"
            fits_the_screen()
            shot("packet-claims")

            # --- 5. They expire it now, from the packet list, after its confirmation page
            page.click(".breadcrumbs a:text-is('Packets')")
            arrive("/admin/redpackets/packet/")
            page.check(f"input.action-select[value='{claimed.id}']")
            page.select_option("select[name=action]", "expire_now")
            shot("expire-now-selected")
            page.click("button[name=index]")
            page.wait_for_selector("#expire-now-packets")

            assert page.locator("#expire-now-packets td.refund").all_inner_texts() == ["10.00 CNY"]
            claimed.refresh_from_db()
            assert claimed.settled_at is None  # asked, nothing done yet
            fits_the_screen()
            shot("expire-now-confirmation")
            with page.expect_navigation():  # the action redirects back to the list
                page.click("input[type=submit][value='Yes, expire and refund']")

            # The database: the free share went back to alice in one refund; the other packet is untouched.
            claimed.refresh_from_db()
            untouched.refresh_from_db()
            assert claimed.settled_at is not None
            assert claimed.refunded_amount == 1_000
            assert [s.refunded for s in Share.objects.filter(packet=claimed).order_by("seq")] == [False, False, True]
            refund = LedgerTransaction.objects.get(kind=TransactionKind.PACKET_REFUND)
            assert refund.packet_id == claimed.id
            assert balance_of(alice) == 7_500
            assert untouched.settled_at is None
            assert not Share.objects.filter(packet=untouched, refunded=True).exists()
            # The page: the message, and each packet's status.
            assert page.locator("ul.messagelist li").inner_text() == "Expired 1 packet(s); 0 were settled already."
            status_of = {
                packet.id: page.locator(f"#result_list tr:has(a:text-is('{short(packet)}')) td.field-status").inner_text()
                for packet in (claimed, untouched)
            }
            assert status_of == {claimed.id: "expired", untouched.id: "active"}
            shot("expired")

            page.click(f"#result_list a:text-is('{short(claimed)}')")
            arrive(f"/admin/redpackets/packet/{claimed.id}/change/")
            assert page.locator(".field-status .readonly").inner_text().strip() == "expired"
            assert page.locator(".field-settled_at .readonly").inner_text().strip() != "-"
            assert page.locator(".field-refunded .readonly").inner_text().strip() == "10.00 CNY"
            refunded_icons = page.locator("#shares-group td.field-refunded img").evaluate_all(
                "imgs => imgs.map(img => img.getAttribute('alt'))"
            )
            assert refunded_icons == ["False", "False", "True"]
            shot("expired-packet")

            # --- 6. The ledger lists the refund first, with its amount and wallet
            open_list("ledgertransaction")
            arrive("/admin/wallets/ledgertransaction/")
            top = changelist_rows(page)[0]
            assert top[:4] == [short(refund), "Packet refunded", "10.00 CNY", "alice +10.00 CNY"]
            fits_the_screen()
            shot("ledger")

            # --- 7. The approver logs in; the dashboard shows the request waiting
            page.click("#logout-form button")
            page.wait_for_url(re.compile(r"/admin/logout/"))
            log_in("arno")
            page.goto(f"{base}/admin/dashboard/")
            figures = dashboard()
            assert figures["adjustments-waiting-for-approval"] == "1"
            assert figures["active-packets"] == "1"
            assert figures["money-in-escrow"] == "5.00 CNY"
            page.click("#dashboard tr[data-figure=adjustments-waiting-for-approval] th a")
            arrive("/admin/wallets/adjustmentrequest/")
            (row,) = changelist_rows(page)
            assert row[:4] == [f"#{request.pk}", "alice", "+2.50 CNY", "Waiting for approval"]
            fits_the_screen()
            shot("adjustments-waiting")

            page.click(f"#result_list a:text-is('#{request.pk}')")
            arrive(f"/admin/wallets/adjustmentrequest/{request.pk}/change/")
            page.click(".object-tools a:text-is('Approve and post')")
            arrive(f"/admin/wallets/adjustmentrequest/{request.pk}/approve/")
            summary = page.locator("#adjustment-summary").inner_text()
            assert "+2.50 CNY" in summary and "77.50 CNY" in summary and "root" in summary
            assert not LedgerTransaction.objects.filter(kind=TransactionKind.ADJUSTMENT).exists()
            fits_the_screen()
            shot("approve-confirmation")
            page.click("input[type=submit][value='Yes, approve and post']")
            arrive(f"/admin/wallets/adjustmentrequest/{request.pk}/change/")

            # The database has one balanced adjustment, in the approver's name, with the reason...
            adjustment = LedgerTransaction.objects.get(kind=TransactionKind.ADJUSTMENT)
            assert (adjustment.memo, adjustment.created_by_id) == (REASON, approver.pk)
            legs = dict(adjustment.entries.values_list("account__code", "amount"))
            assert legs == {"": 250, SystemAccount.ADJUSTMENTS: -250}
            request.refresh_from_db()
            assert (request.status, request.decided_by_id, request.transaction_id) == (
                AdjustmentStatus.APPROVED, approver.pk, adjustment.id)
            assert balance_of(alice) == 7_750
            # ...and the page says so, read-only
            assert page.locator("ul.messagelist li").inner_text() == (
                f"Approved Adjustment request #{request.pk}: posted +2.50 CNY to Wallet of alice.")
            assert page.locator(".field-status .readonly").inner_text().strip() == "Approved and posted"
            assert not page.locator(".object-tools a:text-is('Approve and post')").count()
            shot("approved")

            # --- 8. Alice's wallet shows the refund and the adjustment
            page.click(".field-wallet_link a")
            arrive(f"/admin/wallets/wallet/{wallet.pk}/change/")
            entries = wallet_entries()
            assert (entries[0].transaction_id, entries[0].amount, entries[0].balance_after) == (adjustment.id, 250, 7_750)
            assert page.locator(".field-balance_display .readonly").inner_text().strip() == "77.50 CNY"
            assert newest_entry(page) == [str(adjustment.id)[:8], "Adjustment", "+2.50 CNY", "77.50 CNY", REASON]
            kinds = ["Adjustment", "Packet refunded", "Packet sent", "Packet sent", "Topup"]
            assert column(page, "#entries-group", "kind") == kinds
            fits_the_screen()
            shot("wallet-after")

            assert ledger_reconcile().ok
            assert not problems, problems
        except BaseException as failure:
            if problems:
                failure.add_note(f"Seen in the browser: {problems}")
            if page is not None and not page.is_closed():
                try:
                    page.screenshot(path=artifacts / "failure.png", full_page=True)
                    failure.add_note(f"Screenshot of the page: {artifacts / 'failure.png'}")
                except Exception as exc:  # the test's own failure matters more
                    failure.add_note(f"No failure screenshot: {exc}")
            raise
        finally:
            browser.close()
            # With a loop running, Django keeps this thread's connections apart from
            # the ones it had before (asgiref's Local stores them in a context
            # variable then), so the checks above opened a second connection. Close
            # it here, or it stays open and the test database cannot be dropped.
            connections.close_all()
