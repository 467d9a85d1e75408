"""The admin dashboard: a few figures an operator checks first, each linking to the list behind it.

Each app contributes its figures with a function listed in
settings.ADMIN_DASHBOARD_FIGURES, called on every view of the page; each query
is backed by an index (partial ones on the unsettled packets and free shares).
"""

from dataclasses import dataclass

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class Figure:
    section: str
    label: str
    value: str
    url: str | None = None
    detail: str = ""
    # Needs an operator's attention (shown highlighted).
    alert: bool = False


def dashboard_sections() -> dict[str, list[Figure]]:
    sections: dict[str, list[Figure]] = {}
    for provider in settings.ADMIN_DASHBOARD_FIGURES:
        for figure in import_string(provider)():
            sections.setdefault(figure.section, []).append(figure)
    return sections


def events_backlog_figures() -> list[Figure]:
    """Outbox and webhook backlog: the events app (issue 8) is not merged here yet.

    It takes this place when it lands: its figures replace this placeholder in
    settings.ADMIN_DASHBOARD_FIGURES.
    """
    waiting = "the events app (outbox, webhooks) is not installed in this build"
    return [Figure("Events", "Outbox backlog", "—", detail=waiting),
            Figure("Events", "Webhook backlog", "—", detail=waiting)]
