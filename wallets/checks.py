"""System checks of the wallet settings (`manage.py check --deploy`)."""

from django.conf import settings
from django.core import checks

PIN_KEY_MIN_LENGTH = 32


@checks.register(checks.Tags.security, deploy=True)
def pin_key_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    keys = {settings.PIN_KEY_ID: settings.PIN_KEY, **settings.PIN_RETIRED_KEYS}
    problems = []
    if settings.PIN_KEY == settings.LOCAL_ONLY_PIN_KEY or len(settings.PIN_KEY) < PIN_KEY_MIN_LENGTH:
        problems.append(checks.Error(
            f"PIN_KEY must be a random secret of at least {PIN_KEY_MIN_LENGTH} characters, not the local default.",
            id="wallets.E001",
        ))
    if settings.SECRET_KEY in keys.values():
        problems.append(checks.Error("PIN_KEY must not be DJANGO_SECRET_KEY.", id="wallets.E002"))
    if settings.PIN_KEY_ID == settings.PIN_KEY_DERIVED_ID:
        # Required, as METRICS_TOKEN is: the deploy refuses it, the processes still start (on a key
        # derived from DJANGO_SECRET_KEY) for a client that runs the service with the contract's variables.
        problems.append(checks.Error(
            "PIN_KEY is not set: payment PINs are keyed by a key derived from DJANGO_SECRET_KEY.",
            hint="Set PIN_KEY to a secret of its own; every PIN moves to it on its next use.",
            id="wallets.E004",
        ))
    if any(not key_id or len(key_id) > 16 for key_id in keys):
        problems.append(checks.Error("PIN key ids are 1 to 16 characters.", id="wallets.E003"))
    return problems
