"""`cheapmodel check`, `hash-key`, `new-key`."""
import hashlib
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from conftest import GATEWAY_BIN, ROOT, free_port


def run(*args, **kw):
    return subprocess.run([GATEWAY_BIN, *args], capture_output=True, text=True, timeout=30, **kw)


def test_check_accepts_the_shipped_configs():
    r = run("check", "--config", str(ROOT / "conf/demo.yaml"))
    assert (r.returncode, r.stdout.strip()) == (0, "ok")
    env = {"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y", "GEMINI_API_KEY": "z", "PATH": "/usr/bin:/bin"}
    # The example resolves real provider host names; only check it when DNS works here.
    r = run("check", "--config", str(ROOT / "conf/cheapmodel.example.yaml"), env=env)
    assert r.returncode == 0 or "cannot resolve" in r.stdout, r.stdout


def test_the_systemd_env_example_sets_every_variable_the_example_config_needs():
    """systemd/README.md's install copies both files; the unit's ExecStartPre runs `check`, which
    refuses a config naming a variable that is not set, so a missing line is a service that never
    starts."""
    config = (ROOT / "conf/cheapmodel.example.yaml").read_text()
    needed = set(re.findall(r"(?:api_key_env|task_secret_env):\s*([A-Z0-9_]+)", config))
    env = (ROOT / "systemd/cheapmodel.env.example").read_text()
    present = set(re.findall(r"^([A-Z0-9_]+)=", env, re.MULTILINE))
    assert needed and needed <= present, sorted(needed - present)


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
    # `-` reads it from standard input (out of shell history and `ps`), one trailing newline ignored.
    r = run("hash-key", "-", input="cm_abc\n")
    assert r.returncode == 0 and r.stdout.strip() == hashlib.sha256(b"cm_abc").hexdigest(), r.stderr
    r = run("hash-key", "-", input="")
    assert r.returncode == 2 and "empty" in r.stderr


def test_new_key_refuses_a_name_the_config_would_refuse():
    for name in ("team: a", "", "#ops", "ünï", "a\nb"):
        r = run("new-key", "--name", name)
        assert r.returncode == 2 and r.stdout == "", (name, r.stdout)
        assert "--name must be non-empty ASCII letters" in r.stderr, r.stderr


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


def demo_config_on(tmp_path: Path, listen: int, metrics: int) -> Path:
    text = (ROOT / "conf/demo.yaml").read_text()
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{listen}").replace("127.0.0.1:9100", f"127.0.0.1:{metrics}")
    f = tmp_path / "demo.yaml"
    f.write_text(text)
    return f


def test_a_listen_address_in_use_ends_the_start_with_a_clear_error(tmp_path: Path):
    """Pingora alone retries an address in use for 30 s, then panics in its service thread and
    leaves the process running with nothing listening. The gateway waits a few seconds for it, then
    exits 1 naming the address; a start whose address is freed within the wait serves."""
    listen, metrics = free_port(), free_port()
    config = demo_config_on(tmp_path, listen, metrics)
    for held in (listen, metrics):
        with socket.socket() as s:
            s.bind(("127.0.0.1", held))
            s.listen()
            started = time.time()
            r = run("--config", str(config))
            assert r.returncode == 1, r.stderr[-2000:]
            assert f"cannot listen: 127.0.0.1:{held} is in use by another process" in r.stderr, r.stderr[-2000:]
            assert time.time() - started < 20
    # Freed one second into the wait: the gateway starts and answers.
    s = socket.socket()
    s.bind(("127.0.0.1", listen))
    s.listen()
    p = subprocess.Popen([GATEWAY_BIN, "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        s.close()
        deadline = time.time() + 15
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{listen}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and p.poll() is None, "the gateway did not start once the port was free"
            time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def test_daemon_mode_writes_the_access_log(tmp_path: Path):
    """`-d` (the systemd unit's mode) forks after start-up. The access log's writer thread used to
    start before the fork, so the daemon queued every line and wrote none."""
    listen, metrics = free_port(), free_port()
    config = demo_config_on(tmp_path, listen, metrics)
    pid_file = tmp_path / "gw.pid"
    config.write_text(config.read_text().replace("/tmp/cheapmodel-demo.pid", str(pid_file))
                      .replace("/tmp/cheapmodel-demo-upgrade.sock", str(tmp_path / "upgrade.sock")))
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with open(out, "wb") as o, open(err, "wb") as e:
        r = subprocess.run([GATEWAY_BIN, "--config", str(config), "-d"], stdout=o, stderr=e, timeout=30)
    assert r.returncode == 0, err.read_text()[-2000:]
    pid = None
    try:
        deadline = time.time() + 15
        while pid is None:
            if pid_file.exists() and pid_file.read_text().strip():
                pid = int(pid_file.read_text())
            assert time.time() < deadline, "no pid file: " + err.read_text()[-2000:]
            time.sleep(0.1)
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{listen}/healthz", timeout=1, headers={"x-request-id": "daemon-probe"})
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "the daemon did not serve: " + err.read_text()[-2000:]
            time.sleep(0.2)
        while "daemon-probe" not in out.read_text():
            assert time.time() < deadline, "no access-log line from the daemon"
            time.sleep(0.1)
    finally:
        if pid is not None:
            subprocess.run(["kill", "-TERM", str(pid)], timeout=10)
            deadline = time.time() + 20
            while Path(f"/proc/{pid}").exists() and time.time() < deadline:
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists():
                subprocess.run(["kill", "-KILL", str(pid)], timeout=10)


def test_check_warns_of_a_config_that_locks_every_caller_out(tmp_path):
    """Valid, but one bad template could take a whole team's traffic down unseen: said, not refused."""
    import yaml
    config = yaml.safe_load((ROOT / "conf/demo.yaml").read_text())
    config["keys"][0]["models"] = []
    path = tmp_path / "locked.yaml"
    path.write_text(yaml.safe_dump(config))
    r = run("check", "--config", str(path))
    assert r.returncode == 0 and "keys[0].models is empty" in r.stderr, r.stderr
    config["keys"] = []
    path.write_text(yaml.safe_dump(config))
    r = run("check", "--config", str(path))
    assert r.returncode == 0 and "every request will be refused 401" in r.stderr, r.stderr
