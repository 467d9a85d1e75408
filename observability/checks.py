"""Deploy checks: production never serves /metrics to anyone who asks."""

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def metrics_token_set(app_configs, **kwargs):
    if settings.METRICS_TOKEN_REQUIRED and not settings.METRICS_TOKEN:
        return [
            Error(
                "METRICS_TOKEN is not set: /metrics refuses every scrape until it is.",
                hint="Set METRICS_TOKEN to a long random string and give Prometheus the same as a bearer token.",
                id="observability.E001",
            )
        ]
    return []
