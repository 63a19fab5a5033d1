"""PgBouncer and pgpool-II instances for comparisons, each in its own
directory with its own free ports, run as the `postgres` OS user (PgBouncer
refuses root) and stopped by the PID we started.

PgBouncer: transaction pooling in front of one server; its auth_file holds
the role's SCRAM verifier copied from pg_authid, so PgBouncer checks clients
and logs in to the server with the same ClientKey technique pgha uses.

pgpool-II: streaming-replication mode with load balancing over all members;
pool_passwd must hold the plain password (pgpool needs it to run SCRAM with
each backend).

Forwarder: `pgha-testkit forward`, a null TCP forwarder in front of one
server (copies bytes, nothing else): the floor of any proxy on the machine.
It runs as root (it opens no files) and needs no password.

Hazards: pgpool forks `num_init_children` processes up front; each holds one
connection per backend once used, so the servers' max_connections must cover
num_init_children * max_pool.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from pgcluster import free_port


def _postgres_ids():
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def _owned_dir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    uid, gid = _postgres_ids()
    os.chown(d, uid, gid)
    os.chmod(d, 0o755)
    return d


def _write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    uid, gid = _postgres_ids()
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _wait_port(port, proc, log, timeout=30):
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}; log {log}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"not listening on {port}; log {log}:\n{_tail(log)}")
            time.sleep(0.1)


def _tail(path, n=30):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class _Daemon:
    name = "daemon"

    def start_process(self, argv, log):
        uid, gid = _postgres_ids()
        out = open(log, "ab")
        self.proc = subprocess.Popen(
            argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            user=uid, group=gid, extra_groups=[], start_new_session=True,
        )
        self.pid = self.proc.pid

    def pids(self):
        """The main process and its children (all of them serve clients)."""
        from procstat import children_of
        return [self.pid] + children_of(self.pid)

    def stop(self):
        if self.proc.poll() is None:
            # SIGTERM: PgBouncer 1.18 and pgpool both shut down at once.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer(_Daemon):
    name = "pgbouncer"

    def __init__(self, server_port, db, user, verifier, pool_size=40, max_clients=11000,
                 query_wait_timeout=None):
        self.dir = _owned_dir("pgha-bench-pgbouncer-")
        self.port = free_port()
        _write(os.path.join(self.dir, "userlist.txt"), f'"{user}" "{verifier}"\n')
        ini = f"""[databases]
{db} = host=127.0.0.1 port={server_port} dbname={db}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.dir}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = {max_clients}
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
server_reset_query =
{f"query_wait_timeout = {query_wait_timeout}" if query_wait_timeout else ""}
log_connections = 0
log_disconnections = 0
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
"""
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        _write(self.ini, ini)

    def start(self):
        log = os.path.join(self.dir, "stdout.log")
        self.start_process(["pgbouncer", self.ini], log)
        _wait_port(self.port, self.proc, os.path.join(self.dir, "pgbouncer.log"))
        return self


class Pgpool(_Daemon):
    name = "pgpool"

    def __init__(self, backends, user, password, su, su_password, children=40):
        self.dir = _owned_dir("pgha-bench-pgpool-")
        self.port = free_port()
        pcp_port = free_port()
        lines = [
            "backend_clustering_mode = 'streaming_replication'",
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"socket_dir = '{self.dir}'",
            "pcp_listen_addresses = '127.0.0.1'",
            f"pcp_port = {pcp_port}",
            f"pcp_socket_dir = '{self.dir}'",
            f"wd_ipc_socket_dir = '{self.dir}'",
            f"pid_file_name = '{self.dir}/pgpool.pid'",
            f"logdir = '{self.dir}'",
            f"memqcache_oiddir = '{self.dir}/oiddir'",
            "log_destination = 'stderr'",
            f"num_init_children = {children}",
            "max_pool = 1",
            "reserved_connections = 0",
            "connection_cache = on",
            "load_balance_mode = on",
            "statement_level_load_balance = off",
            "enable_pool_hba = on",
            "pool_passwd = 'pool_passwd'",
            "allow_clear_text_frontend_auth = off",
            "sr_check_period = 10",
            f"sr_check_user = '{su}'",
            f"sr_check_password = '{su_password}'",
            "delay_threshold = 0",
            "health_check_period = 0",
            "failover_on_backend_error = off",
            "use_watchdog = off",
            "memory_cache_enabled = off",
            "log_min_messages = warning",
        ]
        for i, port in enumerate(backends):
            lines += [
                f"backend_hostname{i} = '127.0.0.1'",
                f"backend_port{i} = {port}",
                f"backend_weight{i} = 1",
                f"backend_flag{i} = 'DISALLOW_TO_FAILOVER'",
                f"backend_application_name{i} = 'node{i + 1}'",
            ]
        self.conf = os.path.join(self.dir, "pgpool.conf")
        _write(self.conf, "\n".join(lines) + "\n")
        _write(os.path.join(self.dir, "pool_passwd"), f"{user}:{password}\n{su}:{su_password}\n")
        _write(
            os.path.join(self.dir, "pool_hba.conf"),
            "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        _write(os.path.join(self.dir, "pcp.conf"), "")

    def start(self):
        log = os.path.join(self.dir, "pgpool.log")
        self.start_process(
            ["pgpool", "-n", "-f", self.conf, "-a", os.path.join(self.dir, "pool_hba.conf"),
             "-F", os.path.join(self.dir, "pcp.conf")],
            log,
        )
        _wait_port(self.port, self.proc, log)
        return self


class Forwarder(_Daemon):
    """`pgha-testkit forward --mode threads|epoll` in front of `server_port`.
    Epoll mode gets one session runtime per CPU, as many as pgha's default
    `session_threads`."""
    name = "forward"

    def __init__(self, testkit_bin, server_port, mode, runtimes=None):
        self.dir = tempfile.mkdtemp(prefix=f"pgha-bench-forward-{mode}-")
        self.port = free_port()
        self.argv = [testkit_bin, "forward", "--mode", mode,
                     "--listen", f"127.0.0.1:{self.port}",
                     "--upstream", f"127.0.0.1:{server_port}",
                     "--runtimes", str(runtimes or os.cpu_count() or 1)]

    def start(self):
        log = os.path.join(self.dir, "forward.log")
        out = open(log, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        _wait_port(self.port, self.proc, log)
        return self

    def pids(self):
        """One process: its threads (also the exited per-connection ones of
        threads mode) are all counted in /proc/<pid>/stat."""
        return [self.pid]


class PghaPooled(_Daemon):
    """A second `pgha proxy` beside the dev cluster's, in transaction pooling
    (`pool_mode = "transaction"`, `pool_size` backends per node), following
    the same cluster in etcd: the dev cluster's generated proxy.toml with
    its own listeners and the pool settings.

    `listener`: "rw" (read/write splitting: reads go to standbys behind a
    read barrier) or "primary" (everything on the primary, as PgBouncer in
    front of the primary: the like-for-like comparison). `extra`: more
    proxy.toml lines (top level)."""
    name = "pgha-tx"

    def __init__(self, pgha_bin, cluster_dir, pool_size=40, listener="rw", extra=""):
        import re
        self.dir = tempfile.mkdtemp(prefix="pgha-bench-pgha-tx-")
        self.port = free_port()
        with open(os.path.join(cluster_dir, "proxy.toml")) as f:
            base = f.read()
        lines = [l for l in base.splitlines()
                 if not re.match(r"\s*listen_(rw|ro|primary)\s*=", l)]
        head, _, rest = "\n".join(lines).partition("\n[topology]")
        self.config = os.path.join(self.dir, "proxy.toml")
        with open(self.config, "w") as f:
            listen = {"rw": "", "ro": "", "primary": ""}
            listen[listener] = f"127.0.0.1:{self.port}"
            f.write("".join(f'listen_{k} = "{v}"\n' for k, v in listen.items()) +
                    f'pool_mode = "transaction"\npool_size = {pool_size}\n{extra}\n'
                    f'{head}\n[topology]{rest}\n')
        self.argv = [pgha_bin, "proxy", "--config", self.config]

    def start(self):
        log = os.path.join(self.dir, "proxy.log")
        out = open(log, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        _wait_port(self.port, self.proc, log)
        return self

    def pids(self):
        return [self.pid]
