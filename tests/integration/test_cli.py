"""`cheapmodel check`, `hash-key`, `new-key`."""
import hashlib
import re
import subprocess
from pathlib import Path

from conftest import GATEWAY_BIN, ROOT


def run(*args, **kw):
    return subprocess.run([GATEWAY_BIN, *args], capture_output=True, text=True, timeout=30, **kw)


def test_check_accepts_the_shipped_configs():
    r = run("check", "--config", str(ROOT / "conf/demo.yaml"))
    assert (r.returncode, r.stdout.strip()) == (0, "ok")
    env = {"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y", "GEMINI_API_KEY": "z", "PATH": "/usr/bin:/bin"}
    # The example resolves real provider host names; only check it when DNS works here.
    r = run("check", "--config", str(ROOT / "conf/cheapmodel.example.yaml"), env=env)
    assert r.returncode == 0 or "cannot resolve" in r.stdout, r.stdout


def test_check_names_the_failing_field(tmp_path: Path):
    text = (ROOT / "conf/demo.yaml").read_text().replace("upstream: anthropic", "upstream: nowhere", 1)
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = run("check", "--config", str(f))
    assert r.returncode != 0
    assert r.stdout.startswith("models.claude-sonnet-4-5-20250929.upstream:"), r.stdout
    f.write_text((ROOT / "conf/demo.yaml").read_text().replace("threads: 2", "threads: 2\n  thread: 3"))
    r = run("check", "--config", str(f))
    assert r.returncode != 0 and "server" in r.stdout and "thread" in r.stdout


def test_check_says_which_file_it_cannot_read(tmp_path: Path):
    r = run("check", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode != 0
    assert r.stdout.startswith(f"{tmp_path / 'missing.yaml'}: cannot read the file:"), r.stdout


def test_hash_key():
    r = run("hash-key", "cm_abc")
    assert r.stdout.strip() == hashlib.sha256(b"cm_abc").hexdigest()
    # An empty key would hash to a valid-looking entry that no caller can ever send.
    r = run("hash-key", "")
    assert r.returncode == 2 and r.stdout == "" and "empty" in r.stderr


def test_new_key_is_random_and_its_entry_matches():
    keys = set()
    for _ in range(3):
        r = run("new-key", "--name", "team-z")
        assert r.returncode == 0
        key = r.stdout.splitlines()[0]
        assert re.fullmatch(r"cm_[0-9a-f]{48}", key), key   # 192 random bits
        assert f'sha256: "{hashlib.sha256(key.encode()).hexdigest()}"' in r.stdout
        assert "name: team-z" in r.stdout
        keys.add(key)
    assert len(keys) == 3
