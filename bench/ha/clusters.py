"""The two kinds of three-node cluster the HA benchmarks drive.

PghaCluster: `pgha up` on a temp dir with free loopback ports (its own etcd,
three agents, the proxy); the front end is the proxy's rw port.
PatroniCluster: one etcd, three `patroni` processes (Debian's 3.0.2 or a
PyPI 4.x from a virtualenv) with synchronous_mode on, and HAProxy routing to
the member whose REST API answers 200 on /primary.

Hazards: everything runs as root except PostgreSQL and Patroni (user
postgres, via setpriv). Every process is stopped by the PID this module
recorded (or read from a postmaster.pid it created), never by name.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg

PG_BIN = "/usr/lib/postgresql/15/bin"
ETCD = "/usr/bin/etcd"
HAPROXY = "/usr/sbin/haproxy"
PATRONI_DEFAULT = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}
# Patroni 4.x clamps ttl >= 20, loop_wait >= 1, retry_timeout >= 3 and
# requires loop_wait + 2 * retry_timeout <= ttl (config.py
# _validate_and_adjust_timeouts); the same values are used for 3.0.2.
PATRONI_FAST = {"ttl": 20, "loop_wait": 1, "retry_timeout": 3}
# Below the documented minimum: 3.0.2 accepts it (no check in its code);
# 4.x would raise it to PATRONI_FAST. loop_wait + 2 * retry_timeout = ttl.
PATRONI_TTL5 = {"ttl": 5, "loop_wait": 1, "retry_timeout": 2}
TABLE_SQL = "CREATE TABLE IF NOT EXISTS bench_ha (run text NOT NULL, id bigint NOT NULL, PRIMARY KEY (run, id))"


def free_port(pair=False):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if not pair:
            return port
        try:
            t = socket.socket()
            t.bind(("127.0.0.1", port + 1))
            t.close()
            return port
        except OSError:
            continue


def pid_alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def signal_pid(pid, sig):
    if pid:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def parent_pid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 1:].split()[1])


def postgres_pids(postmaster):
    """The postmaster and every process whose parent it is."""
    if not postmaster:
        return []
    kids = [int(d) for d in os.listdir("/proc") if d.isdigit() and parent_pid(int(d)) == postmaster]
    return [postmaster, *kids]


def is_postgres(pid):
    """Still a PostgreSQL process (never signal a recycled PID)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().startswith(("postgres", "postmaster"))
    except OSError:
        return False


def postmaster_pid(data_dir):
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            pid = int(f.readline().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def wait_for(what, timeout, fn, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = fn()
        except Exception as e:  # noqa: BLE001 - keep polling
            r, last = None, e
        if r:
            return r
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout}s (last error: {last})")


def chown_tree(path, user="postgres"):
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for n in files:
            os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)


class Cluster:
    """What the scenarios need from either kind of cluster."""

    kind = "?"
    label = "?"
    members = ("node1", "node2", "node3")

    def __init__(self, workdir):
        self.dir = tempfile.mkdtemp(prefix=f"ha-{self.label}-", dir=workdir)
        os.chmod(self.dir, 0o755)
        self.password = "bench-" + os.urandom(6).hex()
        self.ports = {}

    # --- SQL helpers -----------------------------------------------------
    def dsn(self, port, timeout=2):
        return (f"host=127.0.0.1 port={port} user=postgres password={self.password} "
                f"dbname=postgres connect_timeout={timeout}")

    def front_dsn(self):
        return self.dsn(self.front_port)

    def query(self, port, sql, params=None, timeout=2):
        with psycopg.connect(self.dsn(port, timeout), autocommit=True) as c:
            return c.execute(sql, params).fetchall()

    def primary(self):
        """The member whose PostgreSQL is a writable primary, or None."""
        for m in self.members:
            try:
                r = self.query(self.ports[m], "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')", timeout=1)
            except Exception:  # noqa: BLE001
                continue
            if not r[0][0] and r[0][1] == "off":
                return m
        return None

    def healthy(self):
        """One primary, both others streaming from it, one synchronous, and a
        write through the front end succeeds. Returns the primary or None."""
        p = self.primary()
        if not p:
            return None
        rows = self.query(self.ports[p], "SELECT application_name, state, sync_state FROM pg_stat_replication")
        streaming = [r for r in rows if r[1] == "streaming"]
        if len(streaming) < len(self.members) - 1 or not any(r[2] in ("sync", "quorum") for r in streaming):
            return None
        with psycopg.connect(self.front_dsn(), autocommit=True, connect_timeout=2) as c:
            c.execute(TABLE_SQL)
        return p

    def wait_healthy(self, timeout=180):
        return wait_for(f"{self.label} healthy", timeout, self.healthy, interval=0.2)

    def ids_present(self, run):
        p = wait_for(f"{self.label} primary", 60, self.primary)
        rows = self.query(self.ports[p], "SELECT id FROM bench_ha WHERE run = %s", (run,), timeout=5)
        return {r[0] for r in rows}, p

    def data_dir(self, m):
        return os.path.join(self.dir, m, "data")

    def postmaster(self, m):
        return postmaster_pid(self.data_dir(m))

    def logs(self):
        return []


class PghaCluster(Cluster):
    kind = "pgha"

    def __init__(self, workdir, pgha_bin, label="pgha"):
        self.label = label
        super().__init__(workdir)
        self.bin = pgha_bin
        self.etcd_port = free_port(pair=True)
        self.front_port = free_port()
        self.ro_port = free_port()
        self.primary_port = free_port()
        self.api = {}
        for m in self.members:
            self.ports[m] = free_port()
            self.api[m] = free_port()

    def config_text(self):
        t = (f'[dcs]\nendpoints = ["http://127.0.0.1:{self.etcd_port}"]\n'
             f"[proxy]\nrw_port = {self.front_port}\nro_port = {self.ro_port}\nprimary_port = {self.primary_port}\n")
        for m in self.members:
            t += f'[[members]]\nname = "{m}"\nport = {self.ports[m]}\napi_port = {self.api[m]}\n'
        return t

    def pgha(self, *args, timeout=180, check=True):
        r = subprocess.run([self.bin, *args, "--dir", self.dir], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"pgha {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}{r.stdout[-500:]}")
        return r

    def bootstrap(self):
        """`pgha up` of a new cluster; returns seconds until it exited."""
        cfg = os.path.join(self.dir, "input.toml")
        with open(cfg, "w") as f:
            f.write(self.config_text())
        t0 = time.monotonic()
        r = subprocess.run([self.bin, "up", "--dir", self.dir, "--config", cfg],
                           capture_output=True, text=True, timeout=300)
        took = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"pgha up failed: {r.stderr[-3000:]}")
        with open(os.path.join(self.dir, "secrets", "admin.password")) as f:
            self.password = f.read().strip()
        return took

    def agent_pid(self, m):
        try:
            with open(os.path.join(self.dir, "run", f"agent-{m}.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def manager_pid(self, m):
        return self.agent_pid(m)

    def restart_member(self, m):
        self.pgha("up", timeout=300)

    def kill_etcd(self):
        """SIGKILL this cluster's etcd (data kept); `start_etcd` brings it back."""
        with open(os.path.join(self.dir, "run", "etcd.pid")) as f:
            pid = int(f.read().strip())
        signal_pid(pid, signal.SIGKILL)
        wait_for("etcd gone", 10, lambda: not pid_alive(pid))

    def start_etcd(self):
        self.pgha("up", timeout=120)

    def set_settings(self, settings):
        """`pgha edit-config --set` each of `settings` (e.g. failsafe_mode)
        and give every agent a loop to read it."""
        args = []
        for k, v in settings.items():
            args += ["--set", f"{k}={json.dumps(v)}"]
        self.pgha("edit-config", *args, timeout=60)
        time.sleep(1.5)

    def switchover(self, primary, candidate):
        return ["pgha", "switchover", "--dir", self.dir], subprocess.run(
            [self.bin, "switchover", "--dir", self.dir], capture_output=True, text=True, timeout=120)

    def logs(self):
        out = [(m, os.path.join(self.dir, m, "agent.log")) for m in self.members]
        return out + [("proxy", os.path.join(self.dir, "proxy.log"))]

    def stop(self):
        try:
            self.pgha("down", timeout=120, check=False)
        except subprocess.TimeoutExpired:
            pass
        for name in ["etcd", "proxy"] + [f"agent-{m}" for m in self.members]:
            try:
                with open(os.path.join(self.dir, "run", f"{name}.pid")) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    mine = b"pgha" in f.read() or name == "etcd"
            except OSError:
                mine = False
            if mine and pid_alive(pid):
                signal_pid(pid, signal.SIGKILL)
        for m in self.members:
            signal_pid(self.postmaster(m), signal.SIGKILL)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PatroniCluster(Cluster):
    kind = "patroni"

    def __init__(self, workdir, label, patroni, patronictl, version):
        self.label = label
        super().__init__(workdir)
        self.patroni_bin, self.patronictl_bin, self.version = patroni, patronictl, version
        self.repl_password = "repl-" + os.urandom(6).hex()
        self.etcd_port = free_port(pair=True)
        self.front_port = free_port()
        self.api = {}
        for m in self.members:
            self.ports[m] = free_port()
            self.api[m] = free_port()
        self.procs = {}      # name -> Popen (patroni members, etcd, haproxy)
        self.settings = dict(PATRONI_DEFAULT)

    def member_config(self, m):
        node = os.path.join(self.dir, m)
        return {
            "scope": "bench", "namespace": "/service/", "name": m,
            "restapi": {"listen": f"127.0.0.1:{self.api[m]}", "connect_address": f"127.0.0.1:{self.api[m]}"},
            "etcd3": {"hosts": f"127.0.0.1:{self.etcd_port}"},
            "bootstrap": {
                "dcs": {**PATRONI_DEFAULT, "maximum_lag_on_failover": 1048576, "synchronous_mode": True,
                        "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                       "parameters": {"wal_level": "replica", "hot_standby": "on",
                                                      "max_wal_senders": 10, "max_replication_slots": 10,
                                                      "wal_log_hints": "on"}}},
                "initdb": [{"encoding": "UTF8"}, {"auth-host": "scram-sha-256"}, {"auth-local": "trust"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.ports[m]}", "connect_address": f"127.0.0.1:{self.ports[m]}",
                "data_dir": os.path.join(node, "data"), "bin_dir": PG_BIN,
                "pgpass": os.path.join(node, "pgpass"),
                "authentication": {"superuser": {"username": "postgres", "password": self.password},
                                   "replication": {"username": "replicator", "password": self.repl_password}},
                "parameters": {"unix_socket_directories": node},
                "pg_hba": ["local all all trust",
                           "host replication replicator 127.0.0.1/32 scram-sha-256",
                           "host all all 127.0.0.1/32 scram-sha-256"],
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def conf_path(self, m):
        return os.path.join(self.dir, m, "patroni.yml")

    def write_configs(self):
        for m in self.members:
            os.makedirs(os.path.join(self.dir, m), exist_ok=True)
            with open(self.conf_path(m), "w") as f:
                json.dump(self.member_config(m), f, indent=1)  # JSON is YAML
        with open(os.path.join(self.dir, "haproxy.cfg"), "w") as f:
            f.write(self.haproxy_config())
        chown_tree(self.dir)

    def haproxy_config(self):
        servers = "".join(
            f"    server {m} 127.0.0.1:{self.ports[m]} maxconn 200 check port {self.api[m]}\n" for m in self.members)
        # Health checks faster than Patroni's documented template (inter 3s
        # fall 3 rise 2): HAProxy is not what limits Patroni here.
        return ("global\n    maxconn 1000\n\ndefaults\n    mode tcp\n    timeout connect 1s\n"
                "    timeout client 30m\n    timeout server 30m\n    timeout check 1s\n\n"
                f"listen rw\n    bind 127.0.0.1:{self.front_port}\n    option httpchk OPTIONS /primary\n"
                "    http-check expect status 200\n"
                "    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n" + servers)

    def spawn(self, name, argv, log, as_postgres=False):
        if as_postgres:
            argv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                    "env", "HOME=" + self.dir] + argv
        f = open(log, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        f.close()
        self.procs[name] = p
        return p

    def start_etcd(self):
        d = os.path.join(self.dir, "etcd")
        c, pe = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.etcd_port + 1}"
        self.spawn("etcd", [ETCD, "--name=bench", f"--data-dir={d}", f"--listen-client-urls={c}",
                            f"--advertise-client-urls={c}", f"--listen-peer-urls={pe}",
                            f"--initial-advertise-peer-urls={pe}", f"--initial-cluster=bench={pe}",
                            "--log-level=warn"], os.path.join(self.dir, "etcd.log"))

        def up():
            socket.create_connection(("127.0.0.1", self.etcd_port), timeout=0.5).close()
            return True
        wait_for("etcd listening", 20, up, interval=0.05)

    def kill_etcd(self):
        p = self.procs["etcd"]
        p.kill()
        p.wait()

    def start_member(self, m):
        self.spawn(m, [self.patroni_bin, self.conf_path(m)], os.path.join(self.dir, m, "patroni.log"),
                   as_postgres=True)

    def bootstrap(self):
        """etcd, HAProxy and three Patroni members; returns seconds until
        all are running and streaming synchronously and a write through
        HAProxy succeeds (what `pgha up` waits for, plus the write)."""
        self.write_configs()
        t0 = time.monotonic()
        self.start_etcd()
        self.spawn("haproxy", [HAPROXY, "-db", "-f", os.path.join(self.dir, "haproxy.cfg")],
                   os.path.join(self.dir, "haproxy.log"))
        # As Patroni's docs suggest for a new cluster, all members start at once;
        # the first to take the initialize key runs initdb.
        for m in self.members:
            self.start_member(m)
        self.wait_healthy(timeout=300)
        return time.monotonic() - t0

    def manager_pid(self, m):
        p = self.procs.get(m)
        return p.pid if p and p.poll() is None else None

    def restart_member(self, m):
        p = self.procs.get(m)
        if p and p.poll() is None:
            return
        if p:
            p.wait()
        self.start_member(m)

    def ctl(self, *args, timeout=120):
        return subprocess.run([self.patronictl_bin, "-c", self.conf_path("node1"), *args],
                              capture_output=True, text=True, timeout=timeout)

    def set_settings(self, settings):
        """Change ttl/loop_wait/retry_timeout cluster-wide and wait until
        every member ran a loop with them."""
        if settings == self.settings:
            return
        old_wait = self.settings["loop_wait"]
        args = ["edit-config", "--force"]
        for k, v in settings.items():
            args += ["-s", f"{k}={v}"]
        r = self.ctl(*args)
        if r.returncode != 0:
            raise RuntimeError(f"patronictl edit-config: {r.stderr} {r.stdout}")
        self.settings = dict(settings)
        time.sleep(old_wait + 2)

    def switchover(self, primary, candidate):
        args = ["switchover", "--leader", primary, "--force"]
        if candidate:
            args += ["--candidate", candidate]
        return ["patronictl", *args], self.ctl(*args)

    def sync_standby(self, primary):
        rows = self.query(self.ports[primary], "SELECT application_name FROM pg_stat_replication WHERE sync_state IN ('sync','quorum')")
        return rows[0][0] if rows else None

    def logs(self):
        return [(m, os.path.join(self.dir, m, "patroni.log")) for m in self.members]

    def stop(self):
        members = [m for m in self.members if self.manager_pid(m)]
        for m in members:
            signal_pid(self.procs[m].pid, signal.SIGCONT)
            signal_pid(self.procs[m].pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for m in members:
            try:
                self.procs[m].wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_pid(self.procs[m].pid, signal.SIGKILL)
                self.procs[m].wait()
        for m in self.members:
            signal_pid(self.postmaster(m), signal.SIGKILL)
        for name in ("haproxy", "etcd"):
            p = self.procs.get(name)
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
