"""The suite's own responses, replayed through openapi-core against the served schema (see tests/openapi_replay.py)."""

import pytest
from rest_framework.test import APIClient

from tests.openapi_replay import replay

# The whole suite records far more; fewer would mean the recorder misses the suite's clients.
MINIMUM_FOR_THE_WHOLE_SUITE = 300


def test_every_recorded_response_matches_the_schema(request):
    recorder = request.config.pluginmanager.get_plugin("openapi-replay")
    exchanges = list(recorder.exchanges)
    if not exchanges:
        pytest.skip("no response recorded: this test replays what the other tests of the run got")
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200

    counts, mismatches = replay(exchanges, response.json())

    tests = len({e.test for e in exchanges})
    operations = len({(e.method, e.path) for e in exchanges})
    recorder.summary[:] = [
        f"{len(exchanges)} responses from {tests} tests ({operations} distinct method and path pairs):",
        *(f"  {count:6d}  {outcome}" for outcome, count in sorted(counts.items())),
        f"mismatches: {len(mismatches)}",
        *(f"  {m}" for m in mismatches[:100]),
    ]
    if len(request.session.items) > 200:  # the whole suite, or most of it
        assert len(exchanges) >= MINIMUM_FOR_THE_WHOLE_SUITE, recorder.summary
    assert not mismatches, "\n".join(mismatches[:50])
