"""Balance adjustments by four eyes: one operator requests, another approves and it is posted once.

Through the admin with Django's test client, through the services, under real
concurrent approvers on PostgreSQL, and against the database's own guards.
"""

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from config.errors import InsufficientFunds, PermissionDenied, ValidationFailed
from tests.concurrency import run_concurrently
from tests.factories import PASSWORD, UserFactory
from wallets.models import Account, AdjustmentRequest, AdjustmentStatus, LedgerTransaction, SystemAccount, TransactionKind
from wallets.selectors import ledger_reconcile
from wallets.services import adjustment_approve, adjustment_reject, adjustment_request, wallet_topup

User = get_user_model()
REASON = "Goodwill credit, ticket #1234"
VIEW = ["view_wallet", "view_account", "view_ledgertransaction", "view_adjustmentrequest"]


def operator(username: str, *codenames: str):
    staff = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="wallets",
                                                          codename__in=[*VIEW, *codenames]))
    return User.objects.get(pk=staff.pk)  # a fresh instance: permissions are cached per instance


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def requester():
    return operator("rita", "add_adjustmentrequest")


@pytest.fixture
def approver():
    return operator("arno", "approve_adjustmentrequest")


@pytest.fixture
def alice_wallet():
    return Account.objects.get(user=UserFactory(username="alice", balance=6_500))


def adjustments() -> list[LedgerTransaction]:
    return list(LedgerTransaction.objects.filter(kind=TransactionKind.ADJUSTMENT))


def balance(wallet) -> int:
    wallet.refresh_from_db(fields=["balance"])
    return wallet.balance


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


pytestmark = pytest.mark.django_db


# --- the flow through the admin ------------------------------------------------------------------


def test_a_request_then_a_second_operators_approval_posts_it_once(requester, approver, alice_wallet):
    request_url = reverse("admin:wallets_wallet_request_adjustment", args=[alice_wallet.pk])
    rita, arno = client_of(requester), client_of(approver)

    # Rita fills in the form in major units: she is shown what she asks for, and nothing is stored yet
    form = rita.get(request_url)
    review = rita.post(request_url, {"amount": "2.50", "reason": REASON})

    assert form.status_code == 200 and b'name="amount"' in form.content
    assert review.status_code == 200
    assert review.templates[0].name == "admin/wallets/request_adjustment_confirmation.html"
    assert review.context["amount"] == "+2.50 CNY"
    assert review.context["balance_after"] == "67.50 CNY"
    assert not AdjustmentRequest.objects.exists()

    # She confirms: a pending request, still no money moved
    created = rita.post(request_url, {"amount": "2.50", "reason": REASON, "confirm": "yes"}, follow=True)

    adjustment = AdjustmentRequest.objects.get()
    assert (adjustment.amount, adjustment.reason, adjustment.requested_by) == (250, REASON, requester)
    assert adjustment.status == AdjustmentStatus.PENDING
    assert created.redirect_chain == [(reverse("admin:wallets_adjustmentrequest_change", args=[adjustment.pk]), 302)]
    assert messages_of(created) == [f"Adjustment request #{adjustment.pk} of +2.50 CNY to Wallet of alice "
                                    "waits for a second operator's approval."]
    assert b"Approve and post" not in created.content  # not for her own request
    assert b"Your own request: another operator approves or rejects it." in created.content
    assert not adjustments() and balance(alice_wallet) == 6_500

    # Arno sees it with the approve button; approving first asks him to confirm
    approve_url = reverse("admin:wallets_adjustmentrequest_approve", args=[adjustment.pk])
    page = arno.get(reverse("admin:wallets_adjustmentrequest_change", args=[adjustment.pk]))
    confirmation = arno.get(approve_url)

    assert b"Approve and post" in page.content
    assert confirmation.status_code == 200
    assert confirmation.templates[0].name == "admin/wallets/adjustment_approve.html"
    assert b"+2.50 CNY" in confirmation.content and b"67.50 CNY" in confirmation.content
    assert not adjustments() and balance(alice_wallet) == 6_500

    # He confirms: one balanced posting, in his name, with her reason
    approved = arno.post(approve_url, follow=True)

    adjustment.refresh_from_db()
    (posted,) = adjustments()
    assert adjustment.status == AdjustmentStatus.APPROVED
    assert (adjustment.decided_by, adjustment.transaction) == (approver, posted)
    assert (posted.memo, posted.created_by) == (REASON, approver)
    assert dict(posted.entries.values_list("account__code", "amount")) == {"": 250, SystemAccount.ADJUSTMENTS: -250}
    assert balance(alice_wallet) == 6_750
    assert messages_of(approved) == [f"Approved Adjustment request #{adjustment.pk}: posted +2.50 CNY to Wallet of alice."]
    assert ledger_reconcile().ok

    # A double click (or a second tab) posts nothing more
    again = arno.post(approve_url, follow=True)

    assert messages_of(again) == [f"Not posted: Adjustment request #{adjustment.pk} was decided already: "
                                  "approved and posted."]
    assert len(adjustments()) == 1 and balance(alice_wallet) == 6_750


def test_nobody_approves_their_own_request_not_even_a_superuser(alice_wallet):
    root = User.objects.create_superuser("root", password=PASSWORD)
    adjustment = adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=root)
    root_client = client_of(root)

    page = root_client.get(reverse("admin:wallets_adjustmentrequest_change", args=[adjustment.pk]))
    attempt = root_client.post(reverse("admin:wallets_adjustmentrequest_approve", args=[adjustment.pk]), follow=True)

    assert b"Approve and post" not in page.content
    assert messages_of(attempt) == ["Not posted: Nobody decides their own adjustment request: another operator must."]
    with pytest.raises(PermissionDenied):
        adjustment_reject(adjustment_id=adjustment.pk, approver=root, note="changed my mind")
    adjustment.refresh_from_db()
    assert adjustment.status == AdjustmentStatus.PENDING
    assert not adjustments() and balance(alice_wallet) == 6_500


def test_an_operator_without_the_approve_permission_cannot_approve(requester, alice_wallet):
    other_requester = operator("olga", "add_adjustmentrequest")
    adjustment = adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=requester)

    response = client_of(other_requester).post(
        reverse("admin:wallets_adjustmentrequest_approve", args=[adjustment.pk]), follow=True
    )

    assert messages_of(response) == ["Not posted: You may not approve or reject balance adjustments."]
    assert AdjustmentRequest.objects.get().status == AdjustmentStatus.PENDING
    assert not adjustments()


def test_a_rejection_says_why_posts_nothing_and_is_final(requester, approver, alice_wallet):
    adjustment = adjustment_request(wallet=alice_wallet, amount=-1_000, reason=REASON, operator=requester)
    reject_url = reverse("admin:wallets_adjustmentrequest_reject", args=[adjustment.pk])
    arno = client_of(approver)

    without_note = arno.post(reject_url, {"note": "  "})
    rejected = arno.post(reject_url, {"note": "No ticket for this"}, follow=True)
    approve_after = arno.post(reverse("admin:wallets_adjustmentrequest_approve", args=[adjustment.pk]), follow=True)

    assert without_note.status_code == 200 and without_note.context["form"].errors["note"]
    assert messages_of(rejected) == [f"Rejected Adjustment request #{adjustment.pk}; nothing was posted."]
    assert messages_of(approve_after) == [f"Not posted: Adjustment request #{adjustment.pk} was decided already: rejected."]
    adjustment.refresh_from_db()
    assert (adjustment.status, adjustment.decided_by, adjustment.decision_note) == (
        AdjustmentStatus.REJECTED, approver, "No ticket for this")
    assert not adjustments() and balance(alice_wallet) == 6_500


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("2.505", "CNY has 2 decimal places; 2.505 has 3."),
        ("1e3", "Enter an amount such as 12.50 or -3 (digits, one optional point, no separators)."),
        ("1,000", "Enter an amount such as 12.50 or -3 (digits, one optional point, no separators)."),
        ("0.00", "An adjustment moves a non-zero amount."),
        ("10000000001", "At most 10000000000.00 CNY in one adjustment."),
    ],
)
def test_amounts_are_read_exactly_in_major_units_or_refused(requester, alice_wallet, amount, error):
    url = reverse("admin:wallets_wallet_request_adjustment", args=[alice_wallet.pk])

    response = client_of(requester).post(url, {"amount": amount, "reason": REASON, "confirm": "yes"})

    assert response.status_code == 200
    assert response.context["form"].errors["amount"] == [error]
    assert not AdjustmentRequest.objects.exists()


def test_a_request_that_would_take_the_wallet_below_zero_is_refused_at_once(requester, alice_wallet):
    url = reverse("admin:wallets_wallet_request_adjustment", args=[alice_wallet.pk])

    response = client_of(requester).post(url, {"amount": "-70", "reason": REASON, "confirm": "yes"})

    assert response.context["form"].non_field_errors() == [
        "Wallet of alice holds 65.00 CNY: an adjustment of -70.00 CNY would take it below zero."]
    assert not AdjustmentRequest.objects.exists()


def test_an_approval_that_no_longer_fits_the_balance_posts_nothing_and_stays_pending(requester, approver, alice_wallet):
    adjustment = adjustment_request(wallet=alice_wallet, amount=-6_000, reason=REASON, operator=requester)
    adjustment_approve(adjustment_id=adjustment_request(wallet=alice_wallet, amount=-1_000, reason="first",
                                                        operator=requester).pk, approver=approver)

    with pytest.raises(InsufficientFunds):
        adjustment_approve(adjustment_id=adjustment.pk, approver=approver)

    adjustment.refresh_from_db()
    assert adjustment.status == AdjustmentStatus.PENDING
    assert balance(alice_wallet) == 5_500 and len(adjustments()) == 1


def test_requests_approvals_and_rejections_are_read_only_in_the_admin(requester, approver, alice_wallet):
    root = client_of(User.objects.create_superuser("root", password=PASSWORD))
    adjustment = adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=requester)
    adjustment_approve(adjustment_id=adjustment.pk, approver=approver)

    listed = root.get(reverse("admin:wallets_adjustmentrequest_changelist"))
    for_wallet = root.get(reverse("admin:wallets_adjustmentrequest_changelist"), {"wallet__id__exact": alice_wallet.pk})
    add = root.get(reverse("admin:wallets_adjustmentrequest_add"))
    edit = root.post(reverse("admin:wallets_adjustmentrequest_change", args=[adjustment.pk]), {"amount": "999999"})
    delete = root.post(reverse("admin:wallets_adjustmentrequest_delete", args=[adjustment.pk]), {"post": "yes"})

    assert listed.status_code == 200 and b"+1.00 CNY" in listed.content
    assert list(for_wallet.context["cl"].result_list) == [adjustment]
    assert (add.status_code, edit.status_code, delete.status_code) == (403, 403, 403)
    adjustment.refresh_from_db()
    assert adjustment.amount == 100 and adjustment.status == AdjustmentStatus.APPROVED


def test_the_services_refuse_blank_reasons_and_zero_amounts(requester, alice_wallet):
    with pytest.raises(ValidationFailed):
        adjustment_request(wallet=alice_wallet, amount=100, reason="   ", operator=requester)
    with pytest.raises(ValidationFailed):
        adjustment_request(wallet=alice_wallet, amount=0, reason=REASON, operator=requester)
    assert not AdjustmentRequest.objects.exists()


# --- concurrency: one posting, whatever happens at once ----------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_approvals_post_the_adjustment_exactly_once(requester, alice_wallet):
    approvers = [operator(f"approver{i}", "approve_adjustmentrequest") for i in range(4)]
    adjustment = adjustment_request(wallet=alice_wallet, amount=250, reason=REASON, operator=requester)

    # Four approvers, each clicking twice, at the same instant
    results, errors = run_concurrently(
        lambda user: adjustment_approve(adjustment_id=adjustment.pk, approver=user), [(a,) for a in approvers * 2]
    )

    assert sum(r is not None for r in results) == 1
    assert all(isinstance(e, ValidationFailed) for e in errors if e is not None)
    assert sum(e is not None for e in errors) == 7
    (posted,) = adjustments()
    adjustment.refresh_from_db()
    assert adjustment.transaction == posted and adjustment.status == AdjustmentStatus.APPROVED
    assert balance(alice_wallet) == 6_750
    assert ledger_reconcile().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_approval_and_a_rejection_at_once_decide_it_once(requester, approver, alice_wallet):
    rejecter = operator("rex", "approve_adjustmentrequest")
    adjustment = adjustment_request(wallet=alice_wallet, amount=250, reason=REASON, operator=requester)
    decisions = [
        lambda: adjustment_approve(adjustment_id=adjustment.pk, approver=approver),
        lambda: adjustment_reject(adjustment_id=adjustment.pk, approver=rejecter, note="no"),
    ]

    results, errors = run_concurrently(lambda decide: decide(), [(d,) for d in decisions])

    assert sum(r is not None for r in results) == 1 and sum(e is not None for e in errors) == 1
    adjustment.refresh_from_db()
    assert len(adjustments()) == (1 if adjustment.status == AdjustmentStatus.APPROVED else 0)
    assert balance(alice_wallet) == (6_750 if adjustment.status == AdjustmentStatus.APPROVED else 6_500)


# --- the database's own guards ---------------------------------------------------------------------


def test_the_database_refuses_a_decision_by_the_requester(requester, alice_wallet):
    adjustment = adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=requester)

    with pytest.raises(IntegrityError, match="adjustment_request_decided_by_another_operator"), transaction.atomic():
        AdjustmentRequest.objects.filter(pk=adjustment.pk).update(
            status=AdjustmentStatus.REJECTED, decided_by=requester, decided_at=timezone.now(), decision_note="mine")


def test_the_database_refuses_an_approval_without_a_posting(requester, approver, alice_wallet):
    adjustment = adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=requester)

    # The trigger (PostgreSQL) or the CHECK (any database) refuses it.
    refused = "approved with a posting of <NULL>|adjustment_request_decision_fields_match_status"
    with pytest.raises(IntegrityError, match=refused), transaction.atomic():
        AdjustmentRequest.objects.filter(pk=adjustment.pk).update(
            status=AdjustmentStatus.APPROVED, decided_by=approver, decided_at=timezone.now())


def test_one_posting_cannot_approve_two_requests(requester, approver, alice_wallet):
    first = adjustment_approve(
        adjustment_id=adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=requester).pk,
        approver=approver)
    second = adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=requester)

    with pytest.raises(IntegrityError), transaction.atomic():
        AdjustmentRequest.objects.filter(pk=second.pk).update(
            status=AdjustmentStatus.APPROVED, decided_by=approver, decided_at=timezone.now(),
            transaction=first.transaction)


@pytest.mark.postgres
def test_the_database_keeps_decided_requests_as_they_were(requester, approver, alice_wallet):
    adjustment = adjustment_approve(
        adjustment_id=adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=requester).pk,
        approver=approver)

    for change in (
        lambda rows: rows.update(amount=1_000_000),
        lambda rows: rows.update(status=AdjustmentStatus.PENDING, decided_by=None, decided_at=None, transaction=None),
        lambda rows: rows.delete(),
    ):
        with pytest.raises(IntegrityError, match="is kept as decided"), transaction.atomic():
            change(AdjustmentRequest.objects.filter(pk=adjustment.pk))
    adjustment.refresh_from_db()
    assert (adjustment.amount, adjustment.status) == (100, AdjustmentStatus.APPROVED)


@pytest.mark.postgres
def test_the_database_refuses_a_pending_request_changing_its_amount(requester, alice_wallet):
    adjustment = adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=requester)

    with pytest.raises(IntegrityError, match="only its decision may change"), transaction.atomic():
        AdjustmentRequest.objects.filter(pk=adjustment.pk).update(amount=100_000)


@pytest.mark.postgres
def test_the_database_refuses_an_approval_naming_another_posting(requester, approver, alice_wallet):
    adjustment = adjustment_request(wallet=alice_wallet, amount=100, reason=REASON, operator=requester)
    topup = wallet_topup(user=alice_wallet.user, amount=100)

    with pytest.raises(IntegrityError, match="approved with a posting of <NULL> on its wallet, not 100"), transaction.atomic():
        AdjustmentRequest.objects.filter(pk=adjustment.pk).update(
            status=AdjustmentStatus.APPROVED, decided_by=approver, decided_at=timezone.now(), transaction=topup)


def test_seed_demo_gives_the_admin_a_second_operator_to_approve_its_requests():
    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())  # idempotent
    admin_user, approver = User.objects.get(username="admin"), User.objects.get(username="approver")
    wallet = Account.objects.get(user__username="alice")

    adjustment = adjustment_request(wallet=wallet, amount=100, reason="demo", operator=admin_user)
    adjustment_approve(adjustment_id=adjustment.pk, approver=approver)

    adjustment.refresh_from_db()
    assert adjustment.status == AdjustmentStatus.APPROVED and not approver.is_superuser
    assert client_of(approver).get(reverse("admin:wallets_adjustmentrequest_changelist")).status_code == 200
