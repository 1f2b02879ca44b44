"""A throwaway Postgres cluster for the tests: initdb in a temp dir, pg_ctl on a free 127.0.0.1 port,
trust auth, stopped (fast) by `stop`. Postgres refuses to run as root, so as root the cluster runs
as the `postgres` user the Debian package creates."""
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    assert path, f"{name} not found: install the postgresql package (tests/run.sh does)"
    return path


class Postgres:
    def __init__(self):
        # Its own directory under /tmp: pytest's tmp_path sits in a root-only directory the
        # postgres user cannot enter.
        directory = Path(tempfile.mkdtemp(prefix="cm-pg-"))
        self.dir = directory
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self.start()

    def _run(self, *cmd, timeout=60):
        r = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"{cmd[0]} failed: {r.stdout}\n{r.stderr}"
        return r.stdout

    def start(self):
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "pg.log"), "-w", "-t", "30",
                  "start")
        self.running = True

    def stop(self):
        if self.running:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
            self.running = False

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def sql(self, query: str) -> str:
        return self._run(_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-At", "-c", query,
                         timeout=30).strip()

    def count(self) -> int:
        try:
            return int(self.sql("SELECT COUNT(*) FROM ledger") or 0)
        except AssertionError:
            return 0
