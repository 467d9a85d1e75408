"""Give a staff user a TOTP device for the admin's two-factor login (production settings)."""

import io

import segno
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django_otp.plugins.otp_totp.models import TOTPDevice


class Command(BaseCommand):
    help = ("Add a TOTP device to a staff user and print its QR code and otpauth:// URL for an authenticator app. "
            "Further devices can then be added in the admin (Otp_Totp → TOTP devices).")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="authenticator", help="a name for the device, such as the phone's")

    def handle(self, *args, username: str, name: str, **options):
        user = get_user_model().objects.filter(username=username, is_staff=True).first()
        if user is None:
            raise CommandError(f"No staff user {username!r}.")
        device = TOTPDevice.objects.create(user=user, name=name, confirmed=True)
        qr = io.StringIO()
        segno.make(device.config_url).terminal(out=qr, compact=True)
        self.stdout.write(qr.getvalue())
        self.stdout.write(f"Scan it, or enter this in the authenticator app:\n  {device.config_url}")
        self.stdout.write(self.style.SUCCESS(f"TOTP device {name!r} added for {username}; "
                                             "the admin asks for its 6-digit code after the password."))
