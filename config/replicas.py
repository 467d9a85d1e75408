"""Read replicas: read-only endpoints read from DATABASE_REPLICA_URL, everything else from the primary.

- A view opts in with `ReadsFromReplica` (packet view, group packet lists, history):
  its GET requests run their queries after
  authentication on the replica. Authentication itself, every write and every
  request of other views (sends, claims, topups, the wallet balance) use the primary.
  The events feed stays on the primary for now: it assigns feed positions
  (`events_relay()`) before it reads; once the relay worker alone does that, the
  feed view can take the mixin.
- Read-your-writes: a user who made any non-GET request reads from the primary for
  the next REPLICA_READ_YOUR_WRITES_SECONDS (default 5 s), remembered in the shared
  cache, so their own claim or send is in what they read next, whichever web
  process serves them. The window must exceed the replica's worst lag (streaming
  replication on one LAN: milliseconds; alert on `replay_lag` in pg_stat_replication
  well below the window). Other users' writes reach a replica reader within that
  lag, as in any chat app. With the cache unreachable, reads stay on the primary.
"""

from contextvars import ContextVar

from django.conf import settings
from django.core.cache import cache
from rest_framework.permissions import SAFE_METHODS

REPLICA = "replica"
_reading_replica: ContextVar[bool] = ContextVar("reading_replica", default=False)


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


def _wrote_key(user_id: int) -> str:
    return f"replicas:wrote:{user_id}"


def note_write(user_id: int) -> None:
    cache.set(_wrote_key(user_id), 1, timeout=settings.REPLICA_READ_YOUR_WRITES_SECONDS)


def wrote_recently(user_id: int) -> bool:
    try:
        return cache.get(_wrote_key(user_id)) is not None
    except Exception:
        return True  # not knowing means the primary


class PrimaryReplicaRouter:
    """Reads go to the replica only inside a `ReadsFromReplica` view's request."""

    def db_for_read(self, model, **hints):
        return REPLICA if _reading_replica.get() else None

    def db_for_write(self, model, **hints):
        return None

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db != REPLICA


class ReadsFromReplica:
    """DRF view mixin: GET/HEAD read from the replica once the caller is authenticated,
    unless they wrote within the read-your-writes window."""

    def dispatch(self, request, *args, **kwargs):
        token = _reading_replica.set(False)
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            _reading_replica.reset(token)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if (replica_configured() and request.method in SAFE_METHODS
                and not wrote_recently(request.user.pk)):
            _reading_replica.set(True)


class RecordWritesMiddleware:
    """Marks the start of a user's read-your-writes window on every non-GET request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if request.method not in SAFE_METHODS and user is not None and user.is_authenticated:
            try:
                note_write(user.pk)
            except Exception:
                pass  # the cache is down: readers then stay on the primary anyway
        return response
