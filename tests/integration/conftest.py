"""Integration harness: the real `cheapmodel` binary in front of the real `mock-upstream` binary,
both on 127.0.0.1 with free ports, both stopped after the tests. Every network call has a timeout.

Binaries come from target/release (built once by tests/run.sh); override with CHEAPMODEL_BIN /
MOCK_UPSTREAM_BIN.
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_BIN = os.environ.get("CHEAPMODEL_BIN", str(ROOT / "target/release/cheapmodel"))
MOCK_BIN = os.environ.get("MOCK_UPSTREAM_BIN", str(ROOT / "target/release/mock-upstream"))

KEY_A = "cm_test_team_a_0123456789abcdef"          # every model
KEY_B = "cm_test_team_b_0123456789abcdef"          # allow-list: gpt-5.5 only
UPSTREAM_OPENAI_KEY = "sk-upstream-openai-SECRET-1111"
UPSTREAM_ANTHROPIC_KEY = "sk-ant-upstream-SECRET-2222"

PRICE_GPT = {"input_per_mtok": 1.25, "output_per_mtok": 10.0, "cache_read_per_mtok": 0.125, "cache_write_per_mtok": 0}
PRICE_CLAUDE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 0.3, "cache_write_per_mtok": 3.75}


def sha256_hex(s: str) -> str:
    import hashlib
    return hashlib.sha256(s.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    return free_port()


# An upstream task-status poll: `/tasks/ID` (flat and wrapped styles) or `/videos/ID` (OpenAI's),
# under any base path, and not `/videos/ID/content` (a download a caller asked for).
TASK_POLL_PATH = re.compile(r"/(tasks|videos)/[^/?]+$")


class Mock:
    def __init__(self):
        self.proc = subprocess.Popen([MOCK_BIN, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening "), f"mock did not start: {line!r}"
        self.addr = line.split()[1]
        self.url = f"http://{self.addr}"

    def requests(self, task_polls=False):
        """What the mock received, oldest first. A gateway's task settler polls pending media tasks
        (`GET .../tasks/ID`, `GET .../videos/ID`) in the background, whenever they fall due, so
        those polls are left out unless asked for: the session mock is shared by every test, and a
        poll for an earlier test's task may land between a test's request and its check."""
        reqs = httpx.get(f"{self.url}/__mock/requests", timeout=10).json()["requests"]
        if task_polls:
            return reqs
        return [r for r in reqs if not (r["method"] == "GET" and TASK_POLL_PATH.search(r["path"]))]

    def last(self):
        reqs = self.requests()
        assert reqs, "the mock received no request"
        return reqs[-1]

    def clear(self):
        httpx.delete(f"{self.url}/__mock/requests", timeout=10)

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def base_config(mock: Mock, listen_port: int, metrics_port: int, **server_overrides) -> dict:
    server = {
        "listen": [f"127.0.0.1:{listen_port}"],
        "metrics": f"127.0.0.1:{metrics_port}",
        "threads": 2,
        "max_request_body": 32 * 1024 * 1024,
        "client_read_timeout_ms": 2000,
        "watch_interval_seconds": 1,
        "grace_period_seconds": 0,
        "graceful_shutdown_timeout_seconds": 1,
    }
    server.update(server_overrides)
    dead = closed_port()
    return {
        "server": server,
        "upstreams": {
            "openai": {"url": mock.url, "dialect": "openai", "api_key_env": "TEST_UPSTREAM_OPENAI_KEY"},
            "anthropic": {"url": mock.url, "dialect": "anthropic", "api_key_env": "TEST_UPSTREAM_ANTHROPIC_KEY"},
            "gemini": {"url": mock.url + "/v1", "dialect": "openai"},
            "dead": {"url": f"http://127.0.0.1:{dead}", "dialect": "openai", "connect_timeout_ms": 500},
            "slow": {"url": mock.url, "dialect": "openai", "read_timeout_ms": 700},
            "slow-anthropic": {"url": mock.url, "dialect": "anthropic", "read_timeout_ms": 700},
            # 1 s and more runs on Tokio's timer, less on Pingora's fast timer (src/cli.rs).
            "slow-1s": {"url": mock.url, "dialect": "openai", "read_timeout_ms": 1000},
            "evolink": {"url": mock.url + "/flat/v1", "dialect": "task", "api_key_env": "TEST_UPSTREAM_OPENAI_KEY"},
            "apimart": {"url": mock.url + "/wrapped/v1", "dialect": "task-wrapped"},
        },
        "models": {
            "gpt-5.5": {"upstream": "openai", "kind": "chat", "price": PRICE_GPT},
            "gpt-5.5-pinned": {"upstream": "openai", "upstream_model": "gpt-5.5-2026-01-01", "price": PRICE_GPT},
            "claude-sonnet-4-5-20250929": {"upstream": "anthropic", "kind": "chat", "price": PRICE_CLAUDE,
                                           "max_output_tokens": 64000, "structured_outputs": True},
            "claude-strict": {"upstream": "anthropic", "upstream_model": "claude-sonnet-4-5-20250929",
                              "price": PRICE_CLAUDE, "params": "strict"},
            "gemini-3.1-pro-preview": {"upstream": "gemini", "kind": "chat"},
            "gpt-image-2": {"upstream": "evolink", "kind": "image", "price": {"per_image": 0.04}},
            "kling-v2": {"upstream": "evolink", "kind": "video", "price": {"per_second": 0.05, "per_request": 0.01},
                         "default_duration_seconds": 5},
            "suno-v4": {"upstream": "evolink", "kind": "music", "price": {"per_request": 0.02}},
            "never-image": {"upstream": "evolink", "kind": "image", "task_deadline_seconds": 2},
            "seedream-4": {"upstream": "apimart", "kind": "image", "price": {"per_image": 0.03}},
            "veo3-fast": {"upstream": "apimart", "kind": "video", "price": {"per_second": 0.1}},
            "gpt-image-1": {"upstream": "openai", "kind": "image", "price": {"per_image": 0.02}},
            "tts-1": {"upstream": "openai", "kind": "audio", "price": {"per_request": 0.001}},
            "sora-2": {"upstream": "openai", "kind": "video", "price": {"per_second": 0.1}},
            "dead-model": {"upstream": "dead"},
            "slow-model": {"upstream": "slow"},
            "slow-claude": {"upstream": "slow-anthropic"},
            "slow-model-1s": {"upstream": "slow-1s"},
        },
        "keys": [
            {"name": "team-a", "sha256": sha256_hex(KEY_A)},
            {"name": "team-b", "sha256": sha256_hex(KEY_B), "models": ["gpt-5.5"]},
        ],
    }


class Gateway:
    def __init__(self, config: dict, tmpdir: Path, extra_env=None):
        self.config = config
        self.dir = tmpdir
        self.config_path = tmpdir / "cheapmodel.yaml"
        self.write_config(config)
        port = int(config["server"]["listen"][0].rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.metrics_url = f"http://{config['server']['metrics']}/metrics"
        env = dict(os.environ, TEST_UPSTREAM_OPENAI_KEY=UPSTREAM_OPENAI_KEY,
                   TEST_UPSTREAM_ANTHROPIC_KEY=UPSTREAM_ANTHROPIC_KEY, RUST_LOG="info")
        env.update(extra_env or {})
        self.log_path = tmpdir / "gateway.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([GATEWAY_BIN, "--config", str(self.config_path)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 20
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, f"gateway exited: {self.log_path.read_text()}"
            assert time.time() < deadline, "gateway did not become healthy"
            time.sleep(0.05)

    def write_config(self, config: dict):
        import yaml  # PyYAML
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config))
        os.replace(tmp, self.config_path)

    def reload_with(self, config: dict, timeout=10.0):
        """Writes `config` and sends SIGHUP; returns once the gateway counts one more good reload."""
        before = self.metric("cheapmodel_config_reloads_total", result="ok")
        self.write_config(config)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + timeout
        while self.metric("cheapmodel_config_reloads_total", result="ok") <= before:
            assert time.time() < deadline, "no reload"
            time.sleep(0.05)

    def metrics_text(self) -> str:
        return httpx.get(self.metrics_url, timeout=10).text

    def metric(self, name: str, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        from prometheus_client.parser import text_string_to_metric_families
        total = 0.0
        for fam in text_string_to_metric_families(self.metrics_text()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def eventually_metric(self, name: str, expected, timeout=5.0, **labels) -> float:
        """`metric`, polled until it equals `expected` (a number or pytest.approx) or `timeout` passes.
        Token, cost and task metrics move when the ledger writer lands a row (every
        `ledger.flush_interval_ms`), not when the response ends."""
        deadline = time.time() + timeout
        while True:
            value = self.metric(name, **labels)
            if value == expected or time.time() > deadline:
                return value
            time.sleep(0.05)

    def access_log(self):
        out = []
        for line in self.log_path.read_bytes().splitlines():
            if line.startswith(b"{"):
                out.append(json.loads(line))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="session")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="session")
def gateway(mock):
    d = Path(tempfile.mkdtemp(prefix="cm-it-"))
    g = Gateway(base_config(mock, free_port(), free_port()), d)
    yield g
    g.stop()


@pytest.fixture
def own_mock():
    """A mock of the test's own, for tests that count what the upstream received."""
    m = Mock()
    yield m
    m.stop()


@pytest.fixture
def fresh_gateway(mock, tmp_path):
    """A gateway of one's own (for tests that reload or count metrics from zero)."""
    gws = []

    def start(edit=None, env=None, **server_overrides):
        config = base_config(mock, free_port(), free_port(), **server_overrides)
        if edit:
            edit(config)
        g = Gateway(config, tmp_path, extra_env=env)
        gws.append(g)
        return g

    yield start
    for g in gws:
        g.stop()


def openai_headers(key=KEY_A, **extra):
    h = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    h.update(extra)
    return h


def anthropic_headers(key=KEY_A, **extra):
    h = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    h.update(extra)
    return h


def chat_body(model="gpt-5.5", **extra):
    b = {"model": model, "messages": [{"role": "user", "content": "Hello"}]}
    b.update(extra)
    return b


def claude_body(model="claude-sonnet-4-5-20250929", **extra):
    b = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}
    b.update(extra)
    return b


def raw_http(port: int, data: bytes, timeout=10.0, half_close=False) -> bytes:
    """Sends raw bytes, returns everything the server sends until it closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            chunks.append(c)
        return b"".join(chunks)
