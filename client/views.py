"""The reference chat client: one page whose scripts talk to the service only through the public API."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.shortcuts import render
from django.views.decorators.http import require_GET

from wallets.management.commands.seed_demo import DEMO_PASSWORD, DEMO_PIN, DEMO_USERS

# The page loads its own scripts and styles and calls its own API, nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def demo_logins() -> list[dict]:
    """The demo users `seed_demo` created, for one-tap logins; none unless DEMO_LOGINS is on."""
    if not settings.DEMO_LOGINS:
        return []
    present = set(get_user_model().objects.filter(username__in=DEMO_USERS).values_list("username", flat=True))
    return [{"username": name, "password": DEMO_PASSWORD, "pin": DEMO_PIN} for name in DEMO_USERS if name in present]


@require_GET
def client_page(request):
    config = {"api": "/api/v1/", "demoLogins": demo_logins(), "sandboxTopups": settings.SANDBOX_TOPUPS}
    response = render(request, "client/index.html", {"client_config": config})
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Cache-Control"] = "no-store"
    return response
