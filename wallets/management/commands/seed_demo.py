"""Demo data for the local run: an admin login, users with balances and PINs, a group,
and a passphrase packet with a hint in it."""

import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from redpackets.models import ChatGroup, Packet, PacketKind
from redpackets.services import group_create, packet_send
from wallets.models import PaymentPin
from wallets.services import pin_set, user_register, wallet_topup

DEMO_PASSWORD = "redpacket-demo"
DEMO_PIN = "123456"
DEMO_USERS = {"alice": 100_000, "bob": 50_000, "carol": 20_000, "dave": 10_000}
ADMIN = ("admin", "admin-demo-pass")
# A second operator, so that an adjustment the admin requests can be approved (four eyes).
APPROVER = ("approver", "approver-demo-pass")
APPROVER_PERMISSIONS = ["view_wallet", "view_account", "view_ledgertransaction", "view_adjustmentrequest",
                        "approve_adjustmentrequest"]
DEMO_PASSPHRASE = "dumplings"
DEMO_HINT = "What do we eat at midnight on New Year's Eve? (one word)"


class Command(BaseCommand):
    help = "Create demo logins (idempotent) and print them."

    def add_arguments(self, parser):
        # `make run` migrates and seeds in one process: one Django start-up fewer before it answers.
        parser.add_argument("--migrate", action="store_true", help="Apply migrations first.")

    def handle(self, *args, **options):
        if options["migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        User = get_user_model()
        with transaction.atomic():
            if not User.objects.filter(username=ADMIN[0]).exists():
                User.objects.create_superuser(username=ADMIN[0], password=ADMIN[1], email="admin@example.com")
            if not User.objects.filter(username=APPROVER[0]).exists():
                approver = User.objects.create_user(username=APPROVER[0], password=APPROVER[1], is_staff=True)
                approver.user_permissions.add(*Permission.objects.filter(
                    content_type__app_label="wallets", codename__in=APPROVER_PERMISSIONS))
        for username, balance in DEMO_USERS.items():
            user = User.objects.filter(username=username).first()
            if user is None:
                user = user_register(username=username, password=DEMO_PASSWORD)
                wallet_topup(user=user, amount=balance)
            if not PaymentPin.objects.filter(user=user).exists():
                pin_set(user=user, pin=DEMO_PIN)
        alice = User.objects.get(username="alice")
        if not ChatGroup.objects.filter(owner=alice, name="Family").exists():
            group_create(owner=alice, name="Family", member_usernames=[u for u in DEMO_USERS if u != "alice"])
        group = ChatGroup.objects.get(owner=alice, name="Family")
        # One claimable passphrase packet at a time (packets expire; a later run sends a new one).
        if not Packet.objects.filter(
            group=group, sender=alice, hint=DEMO_HINT, settled_at__isnull=True, expires_at__gt=timezone.now()
        ).exists():
            packet_send(sender=alice, group_id=group.id, kind=PacketKind.RANDOM, share_count=3, total_amount=8888,
                        greeting="Happy New Year! Answer the riddle.", passphrase=DEMO_PASSPHRASE, hint=DEMO_HINT)

        site = f"http://{os.environ.get('WEB_BIND', '127.0.0.1:8000')}"
        self.stdout.write(self.style.SUCCESS("Demo data ready:"))
        self.stdout.write(f"  chat client:  {site}/  (the demo users below are one tap away there)")
        self.stdout.write(f"  admin login:  {ADMIN[0]} / {ADMIN[1]}  ({site}/admin/)")
        self.stdout.write(f"  approver:     {APPROVER[0]} / {APPROVER[1]}  (approves the admin's adjustment requests)")
        for username in DEMO_USERS:
            self.stdout.write(f"  user:         {username} / {DEMO_PASSWORD}  PIN {DEMO_PIN}")
        self.stdout.write(f"  group:        Family ({group.id}), members {', '.join(DEMO_USERS)}")
        self.stdout.write(f"  packet:       alice's 88.88 in Family asks \"{DEMO_HINT}\" (answer: {DEMO_PASSPHRASE})")
        self.stdout.write(f"  API docs:     {site}/api/docs/  (reference: docs/api.md)")
