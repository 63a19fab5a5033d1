#!/usr/bin/env python3
"""HA benchmarks: pgha against Patroni (Debian 3.0.2 and PyPI 4.x) on this
machine in the same run, interleaved round by round (pgha, Patroni ..., pgha,
Patroni ...). Entry point: bench/ha/run.sh, which picks the virtualenv's
python3 (psycopg) and passes its arguments here.

Scenarios (each with the write client running through the front end):
  node    SIGKILL of the primary's manager (pgha agent / patroni) and postmaster
  pg      SIGKILL of the primary's postmaster only (manager alive)
  switch  planned switchover (`pgha switchover` / `patronictl switchover`)
  stop    SIGSTOP of the primary's manager, SIGCONT once another member leads
plus `bootstrap` (a new cluster until healthy, each round a fresh one).

Hazards: it runs real clusters as root (PostgreSQL and Patroni as postgres),
stops only the PIDs it started (or read from postmaster.pid files of data
directories it created), and removes its temp dirs at the end, also on
Ctrl-C. Timings are wall-clock on a shared 2-core machine: see the load
averages recorded with every measurement.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusters  # noqa: E402
from clusters import PATRONI_DEFAULT, PATRONI_FAST, PATRONI_TTL5, PatroniCluster, PghaCluster, wait_for  # noqa: E402
import logscan  # noqa: E402
import summary  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WRITER = os.path.join(HERE, "writer.py")


def log(msg):
    print(f"[{datetime.datetime.utcnow():%H:%M:%S}] {msg}", flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


class Writer:
    """The write client as a subprocess; a thread follows its acks."""

    def __init__(self, cluster, run, outdir):
        self.out = os.path.join(outdir, f"{run}.json")
        self.run = run
        self.last_ack = 0.0
        self.last_sent = 0.0
        self.errors = []
        self.count = 0
        self.proc = subprocess.Popen(
            [sys.executable, WRITER, "--dsn", cluster.front_dsn(), "--run", run, "--out", self.out,
             "--progress"], stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.thread = threading.Thread(target=self.follow, daemon=True)
        self.thread.start()

    def follow(self):
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "A":
                self.last_sent, self.last_ack = float(parts[2]), float(parts[3])
                self.count += 1
            elif len(parts) == 2 and parts[0] == "E":
                self.errors.append(float(parts[1]))

    def wait_acks(self, n, timeout=60):
        wait_for("writer acks", timeout, lambda: self.count >= n, interval=0.05)

    def wait_ack_after(self, t, timeout):
        """Whether a write sent after t was acknowledged within timeout."""
        try:
            wait_for("an acknowledged write", timeout, lambda: self.last_sent > t, interval=0.01)
            return True
        except TimeoutError:
            return False

    def wait_recovered(self, t, timeout):
        """Whether writes succeed again after an outage that began at t: an
        ack of a write sent after the first error that followed t (a write
        in flight at t may still be acknowledged by the old primary). With
        no error within 10 s, an ack of a write sent after t."""
        def done():
            errs = [e for e in self.errors if e >= t]
            if errs:
                return self.last_sent > errs[0]
            return time.monotonic() - t > 10 and self.last_sent > t
        try:
            wait_for("writes to succeed again", timeout, done, interval=0.01)
            return True
        except TimeoutError:
            return False

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(timeout=5)
        with open(self.out) as f:
            return json.load(f)


def analyse(doc, t_event, present, t_end=None):
    """Numbers of one scenario from the writer's record."""
    acks, errors = doc["acks"], doc["errors"]
    acked = {a[0] for a in acks}
    lost = sorted(acked - present)
    after = [a for a in acks if a[2] > t_event]
    errs_after = sorted(e[1] for e in errors if e[1] >= t_event)
    ref = errs_after[0] if errs_after else t_event
    first = min((a[2] for a in acks if a[1] > ref), default=None)
    before = [a[2] for a in acks if a[2] <= t_event]
    window = [before[-1]] if before else [t_event]
    window += [a[2] for a in after]
    gaps = [b - a for a, b in zip(window, window[1:])]
    # When writes resumed: the acknowledgement that ends the longest gap.
    # "First ack after the first error" misreads a run in which the client
    # saw no error (a backend of the dying primary acknowledged once more).
    resumed = window[gaps.index(max(gaps)) + 1] if gaps else None
    failed = [e for e in errors if e[2] is not None and e[0] >= (before[-1] if before else t_event) - 0.001]
    failed_conn = [e for e in errors if e[2] is None and e[0] >= t_event]
    unknown_committed = sorted({e[2] for e in errors if e[2] is not None} & present)
    msgs = {}
    for e in errors:
        k = e[3][:90]
        msgs[k] = msgs.get(k, 0) + 1
    return {
        "first_ack_after_s": None if first is None else round(first - t_event, 4),
        "longest_gap_s": round(max(gaps), 4) if gaps else None,
        "resumed_after_s": None if resumed is None else round(resumed - t_event, 4),
        "acked": len(acked), "lost": len(lost), "lost_ids": lost[:50],
        "failed_tx": len(failed), "failed_connects": len(failed_conn),
        "errored_but_committed": len(unknown_committed),
        "error_kinds": dict(sorted(msgs.items(), key=lambda kv: -kv[1])[:8]),
    }


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="pgha-bench-ha-", dir="/tmp")
        os.chmod(self.work, 0o755)
        self.records = []
        self.clusters = []
        self.stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d-%H%M")
        self.started = datetime.datetime.utcnow().isoformat() + "Z"

    # --- clusters --------------------------------------------------------
    def patroni_builds(self):
        out = []
        if "deb" in self.args.patroni:
            out.append(("patroni3", "/usr/bin/patroni", "/usr/bin/patronictl"))
        if "pypi" in self.args.patroni:
            v = self.args.venv
            out.append(("patroni4", f"{v}/bin/patroni", f"{v}/bin/patronictl"))
        return out

    def new_cluster(self, name):
        if name == "pgha":
            c = PghaCluster(self.work, self.args.pgha_bin)
        else:
            _, patroni, ctl = next(b for b in self.patroni_builds() if b[0] == name)
            c = PatroniCluster(self.work, name, patroni, ctl, version(patroni))
        self.clusters.append(c)
        return c

    def drop(self, c):
        c.destroy()
        self.clusters.remove(c)

    def cleanup(self):
        for c in list(self.clusters):
            try:
                self.drop(c)
            except Exception as e:  # noqa: BLE001
                log(f"cleanup of {c.label}: {e}")
        if not self.args.keep:
            import shutil
            shutil.rmtree(self.work, ignore_errors=True)

    def variants(self, scenario):
        """(label, cluster name, patroni settings or None), in run order."""
        if scenario in ("etcd", "etcd_standby"):
            return self.etcd_variants()
        v = [("pgha", "pgha", None)]
        for name, _, _ in self.patroni_builds():
            if "default" in self.args.settings and (scenario != "stop" or self.args.stop_default):
                v.append((f"{name}-default", name, PATRONI_DEFAULT))
        for name, _, _ in self.patroni_builds():
            if "fast" in self.args.settings:
                v.append((f"{name}-fast", name, PATRONI_FAST))
        for name, _, _ in self.patroni_builds():
            if "ttl5" in self.args.settings and name == "patroni3":
                v.append((f"{name}-ttl5", name, PATRONI_TTL5))
        return v

    def etcd_variants(self):
        """The etcd outage: failsafe mode on and off, pgha and each Patroni
        (its fast settings; failsafe_mode is dynamic config in both)."""
        v = [("pgha", "pgha", {"failsafe_mode": True}),
             ("pgha-failsafe-off", "pgha", {"failsafe_mode": False})]
        for name, _, _ in self.patroni_builds():
            v.append((f"{name}-fast-failsafe", name, {**PATRONI_FAST, "failsafe_mode": True}))
            v.append((f"{name}-fast", name, {**PATRONI_FAST, "failsafe_mode": False}))
        return v

    # --- measurements ----------------------------------------------------
    def record(self, rec):
        rec["loadavg_after"] = loadavg()
        self.records.append(rec)
        keys = ("resumed_after_s", "longest_gap_s", "failed_tx", "lost", "seconds", "error")
        log("  " + ", ".join(f"{k}={rec[k]}" for k in keys if k in rec))
        self.save()

    def bootstrap_round(self, r):
        for name in ["pgha"] + [b[0] for b in self.patroni_builds()]:
            load = loadavg()
            c = self.new_cluster(name)
            log(f"bootstrap round {r}: {name}")
            rec = {"scenario": "bootstrap", "variant": name, "round": r, "loadavg_before": load}
            wall = time.time()
            try:
                took = c.bootstrap()
                rec["command_s"] = round(took, 3)
                t0 = time.monotonic()
                c.wait_healthy(timeout=120)
                rec["healthy_after_command_s"] = round(time.monotonic() - t0, 3)
                rec["seconds"] = round(took + rec["healthy_after_command_s"], 3)
                rec["log_timeline"] = logscan.timeline(c.logs(), wall, wall + rec["seconds"], limit=60)
            except Exception as e:  # noqa: BLE001
                rec["error"] = str(e)[:2000]
            self.record(rec)
            self.drop(c)

    def scenario(self, sc, label, c, r):
        rec = {"scenario": sc, "variant": label, "round": r, "loadavg_before": loadavg()}
        if isinstance(c, PatroniCluster):
            rec["patroni_settings"] = dict(c.settings)
        run = f"{sc}-{label}-r{r}-{os.urandom(3).hex()}"
        try:
            primary = c.wait_healthy(timeout=240)
            rec["primary_before"] = primary
            w = Writer(c, run, self.work)
            try:
                w.wait_acks(30)
                time.sleep(0.5)
                ok, t_event, wall_event, extra = self.inject(sc, c, primary, w)
                rec.update(extra)
                if ok:
                    time.sleep(self.args.tail)
                doc = w.stop()
            except BaseException:
                w.proc.kill()
                raise
            try:
                self.restore(sc, c, primary)
            except Exception as e:  # noqa: BLE001 - still count what the primary holds
                rec["restore_error"] = f"{type(e).__name__}: {str(e)[:500]}"
                ok = False
            present, final = c.ids_present(run)
            rec["primary_after"] = final
            rec.update(analyse(doc, t_event, present))
            if "restore_error" in rec:
                rec["error"] = "the cluster did not become healthy again: " + rec["restore_error"]
            elif not ok:
                rec["error"] = f"no acknowledged write within {self.args.timeout}s"
            wall_ack = None if rec["resumed_after_s"] is None else wall_event + rec["resumed_after_s"]
            rec["log_timeline"] = logscan.timeline(c.logs(), wall_event, wall_ack)
        except Exception as e:  # noqa: BLE001
            rec["error"] = f"{type(e).__name__}: {str(e)[:1500]}"
        self.record(rec)

    def inject(self, sc, c, primary, w):
        """Cause the event; return (writes resumed, t_event mono, wall, extra)."""
        extra = {}
        if sc == "node":
            pids = [c.manager_pid(primary), c.postmaster(primary)]
            t, wall = time.monotonic(), time.time()
            for p in pids:
                clusters.signal_pid(p, signal.SIGKILL)
            extra["killed_pids"] = pids
            return w.wait_recovered(t, self.args.timeout), t, wall, extra
        if sc == "pg":
            pid = c.postmaster(primary)
            t, wall = time.monotonic(), time.time()
            clusters.signal_pid(pid, signal.SIGKILL)
            extra["killed_pids"] = [pid]
            return w.wait_recovered(t, self.args.timeout), t, wall, extra
        if sc == "switch":
            cand = c.sync_standby(primary) if isinstance(c, PatroniCluster) else None
            t, wall = time.monotonic(), time.time()
            argv, res = c.switchover(primary, cand)
            extra["command"] = " ".join(argv)
            extra["command_s"] = round(time.monotonic() - t, 3)
            extra["command_rc"] = res.returncode
            extra["command_out"] = (res.stdout + res.stderr)[-600:]
            others = [m for m in c.members if m != primary]
            try:
                wait_for("new primary", self.args.timeout, lambda: c.primary() in others)
            except TimeoutError:
                return False, t, wall, extra
            return w.wait_ack_after(time.monotonic(), self.args.timeout), t, wall, extra
        if sc == "stop":
            pid = c.manager_pid(primary)
            t, wall = time.monotonic(), time.time()
            clusters.signal_pid(pid, signal.SIGSTOP)
            extra["stopped_pid"] = pid
            others = [m for m in c.members if m != primary]
            try:
                promoted = wait_for("a standby promoted", self.args.timeout,
                                    lambda: next((m for m in others if is_primary(c, m)), None))
                extra["promoted"] = promoted
                extra["promoted_after_s"] = round(time.monotonic() - t, 3)
                ok = w.wait_ack_after(time.monotonic(), self.args.timeout)
                time.sleep(1.0)
            finally:
                clusters.signal_pid(pid, signal.SIGCONT)
                extra["continued_after_s"] = round(time.monotonic() - t, 3)
            return ok, t, wall, extra
        if sc == "freeze":
            pids = clusters.postgres_pids(c.postmaster(primary))
            t, wall = time.monotonic(), time.time()
            for p in pids:
                clusters.signal_pid(p, signal.SIGSTOP)
            extra["frozen_pids"] = len(pids)
            extra["freeze_s"] = self.args.freeze
            try:
                ok = w.wait_ack_after(t + 0.5, self.args.freeze)
            finally:
                left = self.args.freeze - (time.monotonic() - t)
                if left > 0:
                    time.sleep(left)
                for p in pids:
                    if clusters.is_postgres(p):
                        clusters.signal_pid(p, signal.SIGCONT)
                extra["thawed_after_s"] = round(time.monotonic() - t, 3)
            if not ok:
                ok = w.wait_ack_after(time.monotonic(), self.args.timeout)
            return ok, t, wall, extra
        if sc in ("etcd", "etcd_standby"):
            t, wall = time.monotonic(), time.time()
            c.kill_etcd()
            stopped = None
            if sc == "etcd_standby":
                # One standby's manager stops answering for the outage: it
                # can promise nothing (pgha needs k = 1 of the two, Patroni
                # an answer from every member).
                standby = next(m for m in c.members if m != primary)
                stopped = c.manager_pid(standby)
                clusters.signal_pid(stopped, signal.SIGSTOP)
                extra["stopped_standby"] = standby
            try:
                time.sleep(self.args.outage)
            finally:
                if stopped:
                    clusters.signal_pid(stopped, signal.SIGCONT)
            extra["outage_s"] = round(time.monotonic() - t, 3)
            c.start_etcd()
            extra["etcd_back_after_s"] = round(time.monotonic() - t, 3)
            return w.wait_ack_after(time.monotonic(), self.args.timeout), t, wall, extra
        raise ValueError(sc)

    def restore(self, sc, c, primary):
        if sc == "node":
            c.restart_member(primary)
        c.wait_healthy(timeout=240)

    # --- driver ----------------------------------------------------------
    def run_scenarios(self, scenarios):
        names = ["pgha"] + [b[0] for b in self.patroni_builds()]
        live = {}
        for n in names:
            log(f"starting {n}")
            c = self.new_cluster(n)
            c.bootstrap()
            c.wait_healthy()
            live[n] = c
        for r in range(1, self.args.rounds + 1):
            for sc in scenarios:
                for label, name, settings in self.variants(sc):
                    c = live[name]
                    if settings is not None:
                        c.set_settings(settings)
                    log(f"round {r} {sc}: {label}")
                    self.scenario(sc, label, c, r)
        for c in live.values():
            self.drop(c)

    def meta(self):
        def out(*cmd):
            try:
                return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
            except Exception as e:  # noqa: BLE001
                return f"? ({e})"
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
        mem = next((line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")), "?")
        return {
            "started": self.started, "finished": datetime.datetime.utcnow().isoformat() + "Z",
            "command": " ".join(["bench/ha/run.sh"] + sys.argv[1:]),
            "machine": {"uname": platform.platform(), "cpus": os.cpu_count(), "cpu_model": cpu,
                        "mem_kib": int(mem) if mem.isdigit() else mem,
                        "note": "2 cores shared with other engineers' builds and test clusters during this run; "
                                "see loadavg_before/after of each record"},
            "versions": {"pgha_commit": os.environ.get("PGHA_COMMIT") or out("git", "-C", REPO, "rev-parse", "HEAD"),
                         "pgha_bin": self.args.pgha_bin, "pgha_profile": self.args.pgha_profile,
                         "patroni3": out("/usr/bin/patroni", "--version"),
                         "patroni4": out(f"{self.args.venv}/bin/patroni", "--version"),
                         "postgresql": out(f"{clusters.PG_BIN}/postgres", "--version"),
                         "etcd": out(clusters.ETCD, "--version").splitlines()[0:1],
                         "haproxy": out(clusters.HAPROXY, "-v").splitlines()[0:1]},
            "settings": {"pgha": "defaults (ttl 2s, loop_wait 500ms, fence_margin 500ms, sync_quorum 1: ANY 1 of 2 standbys)",
                         "patroni_default": PATRONI_DEFAULT, "patroni_fast": PATRONI_FAST, "patroni_ttl5": PATRONI_TTL5,
                         "patroni_common": "synchronous_mode on (1 synchronous standby), use_pg_rewind, use_slots, "
                                           "maximum_lag_on_failover 1 MiB, one etcd per cluster",
                         "haproxy": "option httpchk OPTIONS /primary, inter 500ms fall 2 rise 1, "
                                    "on-marked-down shutdown-sessions",
                         "writer": "one autocommit INSERT per transaction, 10 ms pause after each ack, "
                                   "20 ms after an error, 5 s client-side bound per write",
                         "rounds": self.args.rounds, "tail_s": self.args.tail, "timeout_s": self.args.timeout},
        }

    def save(self):
        path = self.args.out or os.path.join(REPO, "bench", "results", f"ha-{self.stamp}-{self.args.what}.json")
        doc = {"meta": self.meta(), "summary": summary.summarise(self.records), "records": self.records}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
        self.path = path


def is_primary(c, m):
    try:
        r = c.query(c.ports[m], "SELECT pg_is_in_recovery()", timeout=1)
        return not r[0][0]
    except Exception:  # noqa: BLE001
        return False


def version(binary):
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


SCENARIOS = {"rto": ["node", "pg"], "node": ["node"], "pg": ["pg"], "switchover": ["switch"],
             "sigstop": ["stop"], "etcd": ["etcd"], "etcd_standby": ["etcd_standby"],
             "freeze": ["freeze"], "all": ["node", "pg", "switch", "stop"]}


def main():
    p = argparse.ArgumentParser(description="pgha vs Patroni HA benchmarks")
    p.add_argument("what", choices=sorted(list(SCENARIOS) + ["bootstrap", "everything"]))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pgha-bin", default=os.environ.get("PGHA_BIN"))
    p.add_argument("--pgha-profile", default=os.environ.get("PGHA_PROFILE", "?"))
    p.add_argument("--venv", default=os.environ.get("PATRONI4_VENV", "/opt/pgha-bench/patroni4"))
    p.add_argument("--patroni", default="deb,pypi", help="which Patroni builds: deb, pypi")
    p.add_argument("--settings", default="default,fast",
                   help="Patroni settings: default, fast (ttl 20, the documented minimum), ttl5 "
                        "(3.0.2 only: ttl 5, loop_wait 1, retry_timeout 2, below the documented minimum)")
    p.add_argument("--stop-default", action="store_true",
                   help="also run the SIGSTOP scenario with Patroni's default settings (by default only "
                        "its fast settings: the same outcome, minutes shorter)")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on one recovery")
    p.add_argument("--tail", type=float, default=2.0, help="seconds of writes after recovery")
    p.add_argument("--outage", type=float, default=20.0, help="seconds etcd stays down (scenario etcd)")
    p.add_argument("--freeze", type=float, default=10.0,
                   help="seconds the primary's PostgreSQL stays SIGSTOPped (scenario freeze)")
    p.add_argument("--out", help="JSON result path (default bench/results/ha-<date>-<HHMM>-<what>.json, UTC)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) at the end")
    args = p.parse_args()
    if not args.pgha_bin:
        p.error("set PGHA_BIN or --pgha-bin")
    b = Bench(args)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    log(f"work dir {b.work}; load {loadavg()}")
    try:
        if args.what in ("bootstrap", "everything"):
            for r in range(1, args.rounds + 1):
                b.bootstrap_round(r)
        if args.what != "bootstrap":
            b.run_scenarios(SCENARIOS["all" if args.what == "everything" else args.what])
    finally:
        b.cleanup()
        b.save()
        log(f"results: {b.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
