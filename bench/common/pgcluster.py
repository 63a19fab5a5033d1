"""A pgha dev cluster for benchmarks: `pgha up` in a temp dir with free
loopback ports, helpers to run SQL through psql, and a teardown that stops
exactly what it started (`pgha down`, then any postmaster still alive by the
PID in its postmaster.pid; never by name).

Hazards: the temp dir must be traversable by the `postgres` OS user
(PostgreSQL refuses to run as root), so it is made 0755.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PG_BIN = "/usr/lib/postgresql/15/bin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_pair():
    """A free port whose successor is free too (etcd client + peer)."""
    while True:
        p = free_port()
        if p < 65535 and port_is_free(p + 1):
            return p


class DevCluster:
    """`pgha up` of `members` members; `parameters` go to [postgres.parameters]."""

    def __init__(self, pgha_bin, members=3, parameters=None, keep=False, extra=""):
        """`extra`: TOML tables added to the config (e.g. "[tls]\nenabled = true")."""
        self.bin = pgha_bin
        self.extra = extra
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix="pgha-bench-")
        os.chmod(self.dir, 0o755)
        self.members = members
        self.parameters = parameters or {}
        self.status = None
        self.admin_password = None
        self.superuser = "postgres"

    def config_text(self):
        lines = []
        if self.parameters:
            lines.append("[postgres.parameters]")
            for k, v in self.parameters.items():
                lines.append(f"{k} = {json.dumps(v)}")
        if self.extra:
            lines.append(self.extra)
        etcd = free_port_pair()
        lines.append(f'[dcs]\nendpoints = ["http://127.0.0.1:{etcd}"]')
        lines.append(
            f"[proxy]\nrw_port = {free_port()}\nro_port = {free_port()}\n"
            f"primary_port = {free_port()}"
        )
        for i in range(1, self.members + 1):
            lines.append(
                f'[[members]]\nname = "node{i}"\nport = {free_port()}\n'
                f"api_port = {free_port()}"
            )
        return "\n".join(lines) + "\n"

    def up(self, timeout=180):
        cfg = os.path.join(self.dir, "input.toml")
        with open(cfg, "w") as f:
            f.write(self.config_text())
        started = time.time()
        out = subprocess.run(
            [self.bin, "up", "--dir", self.dir, "--config", cfg, "--timeout", str(timeout)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"pgha up failed:\n{out.stdout}\n{out.stderr}")
        self.up_seconds = time.time() - started
        with open(os.path.join(self.dir, "secrets", "admin.password")) as f:
            self.admin_password = f.read().strip()
        self.refresh_status()
        return self

    def refresh_status(self):
        out = subprocess.run(
            [self.bin, "status", "--json", "--dir", self.dir],
            capture_output=True,
            text=True,
            check=True,
        )
        self.status = json.loads(out.stdout)
        return self.status

    def member_ports(self):
        return {m["name"]: m["port"] for m in self.status["members"]}

    def primary_port(self):
        for m in self.status["members"]:
            if m["role"] == "primary":
                return m["port"]
        raise RuntimeError("no primary in pgha status")

    def proxy(self):
        """(host, rw, ro, primary) of the dev cluster's proxy."""
        p = self.status.get("proxy") or {}
        return p.get("host", "127.0.0.1"), p["rw"], p["ro"], p["primary"]

    def proxy_pid(self):
        with open(os.path.join(self.dir, "run", "proxy.pid")) as f:
            return int(f.read().split()[0])

    def psql(self, port, sql, db="postgres", user=None, password=None):
        env = dict(os.environ, PGPASSWORD=password or self.admin_password)
        out = subprocess.run(
            [f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(port), "-U",
             user or self.superuser, "-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1",
             "-c", sql],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed ({sql!r}): {out.stderr}")
        return out.stdout.strip()

    def wait_sql(self, port, sql, want, timeout=60, **kw):
        deadline = time.time() + timeout
        while True:
            try:
                got = self.psql(port, sql, **kw)
                if got == want:
                    return
            except RuntimeError as e:
                got = str(e)
            if time.time() > deadline:
                raise RuntimeError(f"timed out waiting for {sql!r} = {want!r} (last: {got!r})")
            time.sleep(0.2)

    def down(self):
        subprocess.run([self.bin, "down", "--dir", self.dir], capture_output=True)
        for name in os.listdir(self.dir):
            pidfile = os.path.join(self.dir, name, "data", "postmaster.pid")
            try:
                with open(pidfile) as f:
                    pid = int(f.readline())
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
