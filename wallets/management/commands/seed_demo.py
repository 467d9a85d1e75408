"""Demo data for the local run: an admin login, users with balances and PINs, a group."""

import os

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from redpackets.models import ChatGroup
from redpackets.services import group_create
from wallets.models import PaymentPin
from wallets.services import pin_set, user_register, wallet_topup

DEMO_PASSWORD = "redpacket-demo"
DEMO_PIN = "123456"
DEMO_USERS = {"alice": 100_000, "bob": 50_000, "carol": 20_000, "dave": 10_000}
ADMIN = ("admin", "admin-demo-pass")


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

        site = f"http://{os.environ.get('WEB_BIND', '127.0.0.1:8000')}"
        self.stdout.write(self.style.SUCCESS("Demo data ready:"))
        self.stdout.write(f"  chat client:  {site}/  (the demo users below are one tap away there)")
        self.stdout.write(f"  admin login:  {ADMIN[0]} / {ADMIN[1]}  ({site}/admin/)")
        for username in DEMO_USERS:
            self.stdout.write(f"  user:         {username} / {DEMO_PASSWORD}  PIN {DEMO_PIN}")
        self.stdout.write(f"  group:        Family ({group.id}), members {', '.join(DEMO_USERS)}")
        self.stdout.write(f"  API docs:     {site}/api/docs/  (reference: docs/api.md)")
