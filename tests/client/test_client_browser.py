"""The chat client in a real browser: Debian's Chromium at phone size, two people at once.

alice sends a random packet with a passphrase to "Family" (a wrong PIN first); bob and carol
open it (bob with a wrong passphrase first) in the other browser context while alice watches
the claims arrive without reloading; the packet finishes with a best luck and the badge says
the split is verified. An expired packet shows its refund, and dave, short of money, is
offered a sandbox topup and then sends. A newcomer who is not a demo user creates an account
(the API's field errors first), is added to Family, is led by the send sheet to choose a PIN,
tops up and sends. Every step checks the page against the database and
saves a screenshot to var/test-artifacts/client/ (or $ARTIFACTS_DIR/client/).

The browser is /usr/bin/chromium (or $CHROMIUM): nothing is downloaded. Without it or the
playwright package the test is skipped, except in CI (CI=true), where it fails.
"""

import os
import re
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test import override_settings
from django.urls import resolve

from redpackets.models import Packet, PacketKind
from redpackets.services import group_add_member, packet_claim, packet_send
from redpackets.tasks import refund_expired_packets
from tests.test_admin_browser import CHROMIUM_ARGS, chromium, sync_playwright  # noqa: F401 (fixtures)
from wallets.management.commands.seed_demo import DEMO_PASSWORD, DEMO_PIN
from wallets.models import Account, AccountKind, PaymentPin
from wallets.selectors import ledger_reconcile

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
TIMEOUT_MS = 15_000
GREETING = "Lucky money for everyone"
PASSPHRASE = "Dragon"
HINT = "This year's animal"
NEWCOMER, NEWCOMER_PASSWORD = "erin", "a-lucky-newcomer-2026"


@pytest.fixture
def artifacts() -> Path:
    root = Path(os.environ.get("ARTIFACTS_DIR") or settings.VAR_DIR / "test-artifacts")
    directory = (root / "client").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    return directory


def balance_of(username: str) -> int:
    return Account.objects.get(user__username=username, kind=AccountKind.WALLET).balance


def yuan(minor: int) -> str:
    return f"¥{minor // 100:,}.{minor % 100:02d}"


def test_two_people_send_and_open_red_packets_in_the_chat_client(sync_playwright, chromium, live_server, artifacts, monkeypatch):  # noqa: F811
    # Playwright's sync API runs an event loop in this thread; the checks between browser
    # steps read the database while nothing else runs here (see tests/test_admin_browser.py).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    call_command("seed_demo", stdout=open(os.devnull, "w"))  # the local run's demo data, its riddle packet included
    seeded = set(Packet.objects.values_list("id", flat=True))
    alice_start = balance_of("alice")
    base = live_server.url
    feed = resolve("/api/v1/events").url_name is not None  # unknown API paths have no name
    # The answers the steps below provoke; anything else >= 400 is a defect.
    expected = {(403, "/api/v1/packets"), (409, "/api/v1/packets"), (403, "/claim"), (400, "/api/v1/auth/register")}
    if not feed:
        expected.add((404, "/api/v1/events"))  # the client polls until the feed exists
    problems: list[str] = []
    steps = iter(range(1, 100))

    def watch(response) -> None:
        if response.status >= 400:
            path = response.url.removeprefix(base).split("?")[0]
            if not any(response.status == status and path.endswith(suffix) for status, suffix in expected):
                problems.append(f"HTTP {response.status} {response.url}")

    def console(message) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console: {message.text}")

    def shot(page, name: str) -> None:
        page.screenshot(path=artifacts / f"{next(steps):02d}-{name}.png", animations="disabled")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        pages = []
        try:
            def phone(locale="en-US"):
                context = browser.new_context(**PHONE, locale=locale)
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.on("response", watch)
                page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
                page.on("console", console)
                pages.append(page)
                return page

            alice, other = phone(), phone()

            # --- 1. alice taps her demo login and opens Family
            alice.goto(f"{base}/")
            demo = alice.locator("button.demo-user")
            assert [text.split()[-1] for text in demo.all_inner_texts()] == ["alice", "bob", "carol", "dave"]
            shot(alice, "sign-in-with-demo-logins")
            alice.click("button.demo-user:has-text('alice')")
            alice.wait_for_selector("a.group-link:has-text('Family')")
            alice.wait_for_selector(f"[data-testid=wallet-chip]:has-text('{yuan(balance_of('alice'))}')")
            assert alice.evaluate("sessionStorage.getItem('rp.token')")  # the tab's, not the browser's
            assert not alice.evaluate("localStorage.getItem('rp.token')")
            shot(alice, "groups")
            alice.click("a.group-link:has-text('Family')")
            alice.wait_for_selector(".timeline .bubble")  # seed_demo's riddle packet
            shot(alice, "chat")

            # --- 2. alice fills the send sheet: random, 8.88 yuan in 2 shares, a passphrase
            alice.click("footer .send")
            alice.fill("#send-amount", "8.88")
            alice.fill("#send-share_count", "2")
            alice.fill("#send-greeting", GREETING)
            alice.fill("#send-passphrase", PASSPHRASE)
            alice.fill("#send-hint", HINT)
            assert alice.locator(".preview").inner_text() == "Total ¥8.88"
            shot(alice, "send-sheet")
            alice.click(".send-form button[type=submit]")

            # ...a wrong PIN first: the API's words under the pad, nothing sent
            for digit in "000000":
                alice.click(f".pad-key[aria-label='Digit {digit}']")
            alice.wait_for_selector("#pin-error:not(:empty)")
            assert "pin" in alice.locator("#pin-error").inner_text().lower()
            assert set(Packet.objects.values_list("id", flat=True)) == seeded
            shot(alice, "wrong-pin")
            alice.keyboard.type(DEMO_PIN)  # the PIN field has the focus: the keyboard works too
            alice.wait_for_selector(f".message.mine .bubble:has-text('{GREETING}')")
            packet = Packet.objects.exclude(id__in=seeded).get()
            assert (packet.kind, packet.total_amount, packet.share_count, packet.greeting) == (PacketKind.RANDOM, 888, 2, GREETING)
            assert balance_of("alice") == alice_start - 888
            packet_bubble = alice.locator(f"#packet-{packet.id} .bubble")
            assert GREETING in packet_bubble.inner_text()
            alice.wait_for_selector(f"[data-testid=wallet-chip]:has-text('{yuan(alice_start - 888)}')")
            shot(alice, "sent")

            # --- 3. bob signs in with the form and sees it as new, with its passphrase
            other.goto(f"{base}/")
            other.fill("#login-username", "bob")
            other.fill("#login-password", DEMO_PASSWORD)
            other.click("form.login button[type=submit]")
            other.click("a.group-link:has-text('Family')")
            bubble = other.locator(f"#packet-{packet.id} .bubble")
            bubble.wait_for()
            assert "Open it" in bubble.inner_text()
            assert "Passphrase" in bubble.inner_text()  # v1.1: has_passphrase
            shot(other, "bob-sees-new-packet")

            # alice opens her own packet's sheet and watches the claims come in
            packet_bubble.click()
            alice.wait_for_selector("#packet-sheet [data-testid=summary]")
            assert alice.locator("[data-testid=summary]").inner_text() == "0 of 2 opened · ¥8.88 left"

            # --- 4. bob opens the envelope: the hint, a wrong passphrase, then the right one
            bubble.click()
            other.wait_for_selector("#packet-sheet .envelope")
            assert other.locator(".envelope-hint").inner_text() == f"Hint: {HINT}"  # v1.1: hint
            shot(other, "bob-envelope-with-hint")
            other.fill("#claim-passphrase", "tiger")
            other.click(".open-button")
            other.wait_for_selector("#passphrase-error:not(:empty)")  # v1.1: 403 wrong_passphrase
            assert not packet.shares.filter(claimed_by__isnull=False).exists()
            shot(other, "bob-wrong-passphrase")
            other.fill("#claim-passphrase", f"  {PASSPHRASE.lower()} ")  # compared after case folding and trimming
            other.click(".open-button")
            other.wait_for_selector("[data-testid=my-amount]")
            bob_share = packet.shares.get(claimed_by__username="bob").amount
            assert other.locator("[data-testid=my-amount]").inner_text() == yuan(bob_share)
            shot(other, "bob-opened")

            # alice's open sheet shows bob's claim, live
            alice.wait_for_selector("#packet-sheet .claim:has-text('bob')")
            assert alice.locator("[data-testid=summary]").inner_text() == f"1 of 2 opened · {yuan(888 - bob_share)} left"
            shot(alice, "alice-sees-bob-live")

            # --- 5. bob signs out; carol signs in and takes the last share
            other.locator("#packet-sheet .sheet-close").click()
            other.click("a.topbar-back")
            other.click("button.chip:has-text('Sign out')")
            other.wait_for_selector("button.demo-user")
            assert not other.evaluate("sessionStorage.getItem('rp.token')")
            other.click("button.demo-user:has-text('carol')")
            other.click("a.group-link:has-text('Family')")
            other.locator(f"#packet-{packet.id} .bubble").click()
            other.fill("#claim-passphrase", PASSPHRASE)
            other.press("#claim-passphrase", "Enter")
            other.wait_for_selector("[data-testid=my-amount]")
            carol_share = packet.shares.get(claimed_by__username="carol").amount
            assert bob_share + carol_share == 888
            assert other.locator("[data-testid=my-amount]").inner_text() == yuan(carol_share)

            # --- 6. the packet finished: both screens say so, with best luck and the proof checked
            for page in (alice, other):
                page.wait_for_selector("[data-testid=summary]:text-matches('All 2 claimed in')")
                lucky = "bob" if bob_share > carol_share else "carol"  # a tie goes to the earlier claim
                assert page.locator(".claim.best .claim-user").inner_text() == lucky
                page.wait_for_selector("[data-testid=verify] .badge.ok")  # v1.1: commitment and proof
                assert page.locator("[data-testid=verify] .badge").inner_text().endswith("Verified")
            shot(other, "carol-opened-finished-verified")
            shot(alice, "alice-finished-verified")
            alice.locator("#packet-sheet .sheet-close").click()
            assert "All claimed" in alice.locator(f"#packet-{packet.id} .bubble").inner_text()

            # --- 7. an expired packet shows its refund
            with override_settings(REDPACKET_TTL_SECONDS=1):
                late = packet_send(sender=user("alice"), group_id=packet.group_id, kind=PacketKind.FIXED,
                                   share_count=3, share_amount=100, greeting="Too slow?")
            packet_claim(packet_id=late.id, user=user("dave"))
            late_bubble = alice.locator(f"#packet-{late.id} .bubble")
            late_bubble.wait_for()  # it arrives live
            time.sleep(1.2)  # past its expiry: refund pending
            alice.wait_for_selector(f"#packet-{late.id}[data-state=expiring]")
            shot(alice, "expiring")
            assert refund_expired_packets() == 1
            late_bubble.click()
            alice.wait_for_selector("[data-testid=summary]:text-is('Expired · 1 of 3 opened · ¥2.00 refunded to alice')")
            shot(alice, "expired-refund")
            alice.locator("#packet-sheet .sheet-close").click()
            alice.click("[data-testid=wallet-chip]")
            alice.wait_for_selector(".entry")
            entries = alice.locator(".entry .entry-amount").all_inner_texts()
            assert entries[:3] == ["+¥2.00", "-¥3.00", "-¥8.88"]
            assert alice.locator("[data-testid=balance]").inner_text() == yuan(balance_of("alice"))
            shot(alice, "wallet-history")

            # --- 8. dave, short of money, is offered a sandbox topup, then sends
            other.keyboard.press("Escape")  # closes carol's packet sheet
            other.click("a.topbar-back")
            other.click("button.chip:has-text('Sign out')")
            other.click("button.demo-user:has-text('dave')")
            other.click("a.group-link:has-text('Family')")
            other.click("footer .send")
            other.check("#kind-fixed", force=True)
            other.fill("#send-amount", "50")
            other.fill("#send-share_count", "3")
            assert other.locator(".preview").inner_text() == "Total ¥150.00"
            other.click(".send-form button[type=submit]")
            other.keyboard.type(DEMO_PIN)
            topup = other.locator("[data-testid=topup]")
            topup.wait_for()
            dave_balance = balance_of("dave")
            assert dave_balance < 15_000
            message = other.locator(".form-error").inner_text()
            assert str(dave_balance) in message and "15000" in message, message  # the API's words
            other.wait_for_selector(f"[data-testid=topup]:has-text('{yuan(15_000 - dave_balance)}')")
            shot(other, "insufficient-funds")
            topup.click()
            other.wait_for_selector(".form-error .ok")
            assert balance_of("dave") == 15_000
            shot(other, "topped-up")
            other.click(".send-form button[type=submit]")
            other.keyboard.type(DEMO_PIN)
            other.wait_for_selector(".message.mine .bubble")
            assert balance_of("dave") == 0
            shot(other, "dave-sent")

            # --- 9. the same client in Simplified Chinese
            chinese = phone("zh-CN")
            chinese.goto(f"{base}/")
            chinese.click("button.demo-user:has-text('carol')")
            chinese.click("a.group-link:has-text('Family')")
            chinese.locator(f"#packet-{packet.id} .bubble").click()
            chinese.wait_for_selector("#claims-title:text-is('领取详情')")
            assert chinese.evaluate("document.documentElement.lang") == "zh-Hans"
            shot(chinese, "chinese")

            # --- 10. a newcomer, not a demo user: creates an account, chooses a PIN, tops up, sends
            newcomer = phone()
            newcomer.goto(f"{base}/")
            newcomer.click("a:has-text('Create account')")
            newcomer.fill("#register-username", NEWCOMER)
            newcomer.fill("#register-password", "short")
            newcomer.press("#register-password", "Enter")  # the keyboard submits
            newcomer.wait_for_selector("#register-password-error:not(:empty)")
            assert "too short" in newcomer.locator("#register-password-error").inner_text()  # the API's words
            assert newcomer.locator("#register-password").get_attribute("aria-invalid") == "true"
            shot(newcomer, "register-password-too-short")
            newcomer.fill("#register-username", "Alice")  # taken, ignoring case
            newcomer.fill("#register-password", NEWCOMER_PASSWORD)
            newcomer.click("form.login button[type=submit]")
            newcomer.wait_for_selector("#register-username-error:text-is('A user with that username already exists.')")
            assert newcomer.locator("#register-password-error").inner_text() == ""
            shot(newcomer, "register-username-taken")
            newcomer.fill("#register-username", NEWCOMER)
            newcomer.click("form.login button[type=submit]")
            newcomer.wait_for_selector("[data-testid=pin-setup]")  # signed in, asked for a PIN
            assert newcomer.locator("h1").inner_text() == f"Welcome, {NEWCOMER}"
            assert balance_of(NEWCOMER) == 0
            shot(newcomer, "newcomer-asked-for-a-pin")
            newcomer.click("[data-testid=pin-later]")  # later: the send sheet asks then
            newcomer.wait_for_selector(f".no-groups:has-text('your username is {NEWCOMER}')")
            shot(newcomer, "newcomer-in-no-group")

            group_add_member(group_id=packet.group_id, actor=user("alice"), username=NEWCOMER)
            newcomer.click("a.group-link:has-text('Family')")  # it appears live
            newcomer.click("footer .send")
            newcomer.fill("#send-amount", "6.66")
            newcomer.fill("#send-share_count", "2")
            newcomer.click(".send-form button[type=submit]")
            newcomer.wait_for_selector("#send-sheet [data-testid=pin-setup]")  # no PIN yet: choose one
            shot(newcomer, "send-leads-to-pin-setup")
            newcomer.keyboard.type("246810")
            newcomer.wait_for_selector("[data-testid=pin-setup]:has-text('Type the PIN again')")
            newcomer.keyboard.type("246801")
            newcomer.wait_for_selector("#new-pin-error:text-is('The two PINs differ. Choose one again.')")
            assert not PaymentPin.objects.filter(user__username=NEWCOMER).exists()
            shot(newcomer, "pin-mismatch")
            for pin in ("246810", "246810"):
                newcomer.wait_for_selector("#new-pin:focus")
                newcomer.keyboard.type(pin)
            topup = newcomer.locator("[data-testid=topup]")  # the PIN is set; the send finds no money
            topup.wait_for()
            assert PaymentPin.objects.filter(user__username=NEWCOMER).exists()
            assert "Payment PIN set." in newcomer.locator(".form-error .ok").inner_text()
            assert "Your balance is 0" in newcomer.locator(".form-error").inner_text()
            newcomer.wait_for_selector(f"[data-testid=topup]:has-text('{yuan(666)}')")
            shot(newcomer, "newcomer-insufficient-funds")
            topup.click()
            newcomer.wait_for_selector(f".form-error .ok:text-is('Added {yuan(666)}. Balance {yuan(666)}.')")
            assert balance_of(NEWCOMER) == 666
            newcomer.click(".send-form button[type=submit]")
            newcomer.wait_for_selector("#pin:focus")  # the PIN pad now: the wallet has its PIN
            newcomer.keyboard.type("246810")
            newcomer.wait_for_selector(".message.mine .bubble")
            sent = Packet.objects.get(sender__username=NEWCOMER)
            assert (sent.kind, sent.total_amount, sent.share_count) == (PacketKind.RANDOM, 666, 2)
            assert balance_of(NEWCOMER) == 0
            newcomer.wait_for_selector(f"#packet-{sent.id}")
            shot(newcomer, "newcomer-sent")

            assert ledger_reconcile().ok
            assert not problems, problems
        except BaseException as failure:
            if problems:
                failure.add_note(f"Seen in the browser: {problems}")
            for index, page in enumerate(pages):
                if not page.is_closed():
                    try:
                        page.screenshot(path=artifacts / f"failure-{index}.png")
                    except Exception as exc:  # the test's own failure matters more
                        failure.add_note(f"No failure screenshot: {exc}")
            failure.add_note(f"Screenshots: {artifacts}")
            raise
        finally:
            browser.close()
            connections.close_all()  # see tests/test_admin_browser.py


def user(username: str):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)
