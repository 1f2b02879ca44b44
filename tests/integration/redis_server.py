"""A throwaway Redis for the tests: `redis-server` (Debian's package) on a free 127.0.0.1 port, no
persistence, in a temp dir; `stop` kills it (as a crash would), `start` brings it back empty on the
same port. With `tls=True` it serves TLS only (`rediss://`), with a certificate from a CA made for
the test (`ca_file`; point the gateway's `SSL_CERT_FILE` at it)."""
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import free_port


class Redis:
    def __init__(self, tls=False):
        self.bin = shutil.which("redis-server")
        assert self.bin, "redis-server not found: install the redis-server package (tests/run.sh does)"
        self.dir = Path(tempfile.mkdtemp(prefix="cm-redis-"))
        self.port = free_port()
        self.tls = tls
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self.ca_file = self.dir / "ca.pem"
        if tls:
            self._make_certificates()
        self.proc = None
        self.start()

    def _make_certificates(self):
        def openssl(*args):
            subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True, timeout=60)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                "-days", "2", "-subj", "/CN=cheapmodel-test-ca")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                "-subj", "/CN=127.0.0.1")
        (self.dir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.pem", "-days", "2", "-extfile", "san.ext")

    def start(self):
        self.log = open(self.dir / "redis.log", "ab")
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", "server.pem",
                      "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"]
        else:
            listen = ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            [self.bin, "--bind", "127.0.0.1", *listen, "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while True:
            try:
                if self.command("PING") == b"+PONG":
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, (self.dir / "redis.log").read_text()
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def _connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        if not self.tls:
            return s
        return ssl.create_default_context(cafile=str(self.ca_file)).wrap_socket(s, server_hostname="127.0.0.1")

    def command(self, *args) -> bytes:
        """One command over RESP; the first reply line (enough for PING, DBSIZE, FLUSHALL)."""
        with self._connect() as s:
            parts = [f"*{len(args)}\r\n".encode()]
            for a in args:
                a = str(a).encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
            s.sendall(b"".join(parts))
            return s.recv(65536).split(b"\r\n")[0]

    def get(self, key):
        """GET key: the value as a string, or None."""
        with self._connect() as s:
            k = key.encode()
            s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
            reply = b""
            while not reply.endswith(b"\r\n") or (reply.startswith(b"$") and reply.count(b"\r\n") < 2
                                                     and not reply.startswith(b"$-1")):
                chunk = s.recv(65536)
                assert chunk, "redis closed the connection"
                reply += chunk
            return None if reply.startswith(b"$-1") else reply.split(b"\r\n")[1].decode()

    def pause(self):
        """SIGSTOP: connections stay open and requests go unanswered (a hung or partitioned Redis)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        self.log.close()

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
