"""The chat client's own unit tests (money parsing and formatting, rp-split-v1) under node's
built-in test runner, so that `make test` and CI count them. Without node the test is skipped,
except in CI (CI=true), where it fails."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def test_the_clients_node_unit_tests_pass():
    node = os.environ.get("NODE") or shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("CI needs node (Node 20 or later) for the client's unit tests", pytrace=False)
        pytest.skip("needs node (Node 20 or later)")
    tests = sorted(str(path) for path in HERE.glob("*.test.mjs"))
    assert tests, f"no *.test.mjs in {HERE}"
    run = subprocess.run([node, "--test", *tests], capture_output=True, text=True, timeout=120)
    summary = [line for line in run.stdout.splitlines() if line.startswith(("# tests", "# pass", "# fail"))]
    assert run.returncode == 0, f"node --test failed:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert "# fail 0" in summary, summary
