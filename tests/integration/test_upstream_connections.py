"""Upstream connections: pooled (keep-alive) over plain HTTP, and TLS with SNI and certificate
verification via rustls (nginx terminates TLS in front of the mock)."""
import shutil
import subprocess
import time

import httpx
import pytest

from conftest import chat_body, free_port, openai_headers


def test_upstream_connections_are_reused(gateway, mock):
    mock.clear()
    with httpx.Client(timeout=10) as c:
        for _ in range(10):
            assert c.post(gateway.url + "/v1/chat/completions", json=chat_body(), headers=openai_headers()).status_code == 200
    conns = {r["conn"] for r in mock.requests()}
    assert len(conns) <= 2, conns


@pytest.fixture
def tls_front(mock, tmp_path):
    """nginx on 127.0.0.1 with a certificate for `localhost`, proxying to the mock."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which("openssl") or not shutil.which(nginx):
        pytest.fail("openssl and nginx are needed for the TLS test (apt-get install nginx)")
    # A private CA and a leaf certificate for `localhost` signed by it (rustls refuses a CA
    # certificate used as the server's own).
    ca, ca_key, cert, key = (tmp_path / n for n in ("ca.pem", "ca.key", "cert.pem", "key.pem"))
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, timeout=60)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=cheapmodel test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(tmp_path / "leaf.csr"), "-subj", "/CN=localhost")
    (tmp_path / "ext.cnf").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", str(tmp_path / "leaf.csr"), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(tmp_path / "ext.cnf"))
    port = free_port()
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
daemon off; master_process off; worker_processes 1; pid {tmp_path}/nginx.pid;
error_log {tmp_path}/logs/error.log;
events {{ worker_connections 64; }}
http {{
  log_format conn '$connection $ssl_server_name $request_uri';
  access_log {tmp_path}/logs/access.log conn;
  client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path}; fastcgi_temp_path {tmp_path};
  uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key};
    location / {{ proxy_pass {mock.url}; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }}
  }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            httpx.get(f"https://127.0.0.1:{port}/", verify=False, timeout=1)
            break
        except httpx.HTTPError:
            assert time.time() < deadline, "nginx did not start"
            time.sleep(0.05)
    yield port, ca, tmp_path / "logs/access.log"
    proc.kill()
    proc.wait(timeout=10)


def add_tls_model(port):
    def edit(config):
        config["upstreams"]["tls"] = {"url": f"https://localhost:{port}", "dialect": "openai", "api_key_env": "TEST_UPSTREAM_OPENAI_KEY"}
        config["models"]["gpt-tls"] = {"upstream": "tls"}
    return edit


def test_tls_upstream_with_sni_verification_and_pooling(fresh_gateway, tls_front):
    port, cert, access_log = tls_front
    g = fresh_gateway(edit=add_tls_model(port), env={"SSL_CERT_FILE": str(cert)})
    with httpx.Client(timeout=10) as c:
        for _ in range(5):
            r = c.post(g.url + "/v1/chat/completions", json=chat_body("gpt-tls"), headers=openai_headers())
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "Hello from the mock upstream!"
    time.sleep(0.2)
    lines = [l.split() for l in access_log.read_text().splitlines() if "/v1/chat/completions" in l]
    assert len(lines) == 5
    assert {l[1] for l in lines} == {"localhost"}, "SNI must be the upstream host name"
    assert len({l[0] for l in lines}) == 1, "the TLS connection must be pooled"


def test_tls_upstream_with_unknown_ca_is_502(fresh_gateway, tls_front):
    port, _cert, _ = tls_front
    g = fresh_gateway(edit=add_tls_model(port))
    r = httpx.post(g.url + "/v1/chat/completions", json=chat_body("gpt-tls"), headers=openai_headers(), timeout=10)
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "server_error"
