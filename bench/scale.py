#!/usr/bin/env python3
"""mDNS scale benchmark (issue 20): N lanshare daemons on one emulated LAN.

Every daemon runs in its own network namespace with one veth joined to a
bridge in a "switch" namespace, so mDNS runs on real (virtual) interfaces
and nothing leaves the machine. Packets are counted on the bridge with
nftables counters (each frame once, as it enters the bridge), sampled
every second. For each LAN size and start mode the benchmark reports:

- convergence: seconds from the last daemon's "ready" until every daemon
  lists every other one;
- mDNS packets/s and bytes/s, early (the first --early seconds after the
  last start) and in steady state (the --steady seconds after that), the
  busiest second of each, and the share of queries;
- UDP datagrams the kernel dropped for want of receive buffer space;
- per-daemon CPU (% of one core, steady window) and RSS (end of it);
- false removals (a live peer dropped from a list) and how complete the
  lists were (share of daemon-seconds with a complete list);
- churn: kill -9 of a quarter of the daemons, the time until every
  survivor stopped listing them, then a restart of the same devices, the
  time until all lists are complete again, and a `share send NAME` to a
  just-restarted device.

Lists are followed through the daemons' own log lines ("peer discovered",
"peer gone"), which have microsecond timestamps, and checked once against
`share peers --json` at the end of the steady window.

Run as root (namespaces, nftables):

    sudo bench/scale.py                      # N = 2..64, together and staggered (~45 min)
    sudo bench/scale.py --sizes 64 --modes together --steady 210   # the 5-minute N = 64 run
    sudo bench/scale.py --bin old=/tmp/share-old --bin new=target/release/share --sizes 16

Everything it creates (namespaces, processes, the work directory) is
removed on exit, also on errors and Ctrl-C. Namespace names start with
`lsc<pid>` so concurrent runs never collide.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK = os.sysconf("SC_CLK_TCK")

READY = re.compile(r"lanshare daemon ready name=(\S+)")
DISCOVERED = re.compile(r"peer discovered peer=(\S+)")
GONE = re.compile(r"peer gone \(([^)]*)\).*fullname=([^.\s]+)\.")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A run that could not complete."""


def run(cmd: list[str], check: bool = True, stdin: str | None = None) -> str:
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise Failed(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return out.stdout


def stamp(line: str) -> float | None:
    """The Unix time of a daemon log line (tracing's RFC 3339 UTC stamp)."""
    m = STAMP.match(line)
    if not m:
        return None
    return datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()


# --------------------------------------------------------------------------- the LAN


NFT_COUNTERS = """
table bridge scale {
  counter q4 {}
  counter r4 {}
  counter q6 {}
  counter r6 {}
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    ether type ip udp dport 5353 @th,80,1 0 counter name q4
    ether type ip udp dport 5353 @th,80,1 1 counter name r4
    ether type ip6 udp dport 5353 @th,80,1 0 counter name q6
    ether type ip6 udp dport 5353 @th,80,1 1 counter name r6
  }
}
"""


class Lan:
    """A bridge in a switch namespace and one host namespace per daemon."""

    def __init__(self, tag: str):
        self.tag = tag
        self.switch = f"{tag}sw"
        self.hosts: list[str] = []
        self.created: list[str] = []

    def build(self, n: int) -> None:
        """Creates the namespaces; `close` removes whatever exists, also after a failure."""
        run(["ip", "netns", "add", self.switch])
        self.created.append(self.switch)
        sw = ["ip", "-n", self.switch]
        run(sw + ["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        run(sw + ["link", "set", "br0", "up"])
        run(["ip", "netns", "exec", self.switch, "nft", "-f", "-"], stdin=NFT_COUNTERS)
        for i in range(n):
            host = f"{self.tag}h{i}"
            run(["ip", "netns", "add", host])
            self.created.append(host)
            self.hosts.append(host)
            outer = f"{self.tag}p{i}"
            run(["ip", "link", "add", outer, "netns", self.switch, "type", "veth",
                 "peer", "name", "eth0", "netns", host])
            run(sw + ["link", "set", outer, "master", "br0"])
            run(sw + ["link", "set", outer, "up"])
            hn = ["ip", "-n", host]
            run(hn + ["addr", "add", f"10.77.{i // 250}.{i % 250 + 1}/16", "dev", "eth0"])
            run(hn + ["link", "set", "eth0", "up"])
            run(hn + ["link", "set", "lo", "up"])

    def counters(self) -> dict[str, tuple[int, int]]:
        out = run(["ip", "netns", "exec", self.switch, "nft", "-j", "list", "counters",
                   "table", "bridge", "scale"])
        found = {}
        for item in json.loads(out)["nftables"]:
            c = item.get("counter")
            if c:
                found[c["name"]] = (c["packets"], c["bytes"])
        return found

    def udp_drops(self) -> int:
        """UDP datagrams dropped for want of receive buffer, all hosts."""
        total = 0
        for host in self.hosts:
            snmp = run(["ip", "netns", "exec", host, "cat", "/proc/net/snmp", "/proc/net/snmp6"])
            lines = snmp.splitlines()
            for a, b in zip(lines, lines[1:]):
                if a.startswith("Udp:") and b.startswith("Udp:"):
                    total += int(dict(zip(a.split()[1:], b.split()[1:]))["RcvbufErrors"])
            for line in lines:
                if line.startswith("Udp6RcvbufErrors"):
                    total += int(line.split()[1])
        return total

    def close(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created = []


class Sampler(threading.Thread):
    """Reads the bridge counters once a second."""

    def __init__(self, lan: Lan):
        super().__init__(daemon=True)
        self.lan = lan
        self.samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        next_at = time.time()
        while not self.stop.is_set():
            try:
                self.samples.append((time.time(), self.lan.counters()))
            except Failed as e:
                log(f"counter read failed: {e}")
            next_at += 1.0
            self.stop.wait(max(0.0, next_at - time.time()))

    def series(self, t0: float) -> list[tuple[float, int]]:
        """(seconds after t0, packets in the second before) for every sample."""
        out = []
        for a, b in zip(self.samples, self.samples[1:]):
            pkts = sum(v[0] for v in b[1].values()) - sum(v[0] for v in a[1].values())
            out.append((round(b[0] - t0, 1), pkts))
        return out

    def window(self, start: float, end: float) -> dict:
        """Packets and bytes between two times, and the busiest second."""
        inside = [s for s in self.samples if start - 0.5 <= s[0] <= end + 0.5]
        if len(inside) < 2:
            return {}

        def total(sample, kind):
            return sum(v[kind] for v in sample[1].values())

        first, last = inside[0], inside[-1]
        secs = last[0] - first[0]
        pkts = total(last, 0) - total(first, 0)
        queries = sum(last[1][k][0] - first[1][k][0] for k in ("q4", "q6"))
        peak = max(total(b, 0) - total(a, 0) for a, b in zip(inside, inside[1:]))
        return {
            "seconds": round(secs, 1),
            "packets": pkts,
            "pps": pkts / secs,
            "bps": (total(last, 1) - total(first, 1)) / secs,
            "peak_second": peak,
            "query_share": queries / pkts if pkts else 0.0,
        }


# --------------------------------------------------------------------------- daemons


class Daemon:
    def __init__(self, bin_path: Path, work: Path, host: str, index: int):
        self.bin = bin_path
        self.host = host
        self.name = f"node{index}"
        self.dir = work / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "share.sock"
        self.logfile = self.dir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.read_pos = 0

    def start(self) -> None:
        with open(self.logfile, "ab") as logf:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.host, str(self.bin), "daemon",
                 "--name", self.name, "--port", "0", "--accept", "all",
                 "--state-dir", str(self.dir / "state"),
                 "--download-dir", str(self.dir / "downloads"),
                 "--socket", str(self.socket)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf,
                env={**os.environ, "RUST_LOG": "info", "HOME": str(self.dir)},
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def new_lines(self) -> list[str]:
        with open(self.logfile, "rb") as f:
            f.seek(self.read_pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.read_pos += end
        return data[:end].decode("utf-8", "replace").splitlines()

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cli(self, args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin), *args],
            env={**os.environ, "SHARE_SOCKET": str(self.socket), "RUST_LOG": "warn"},
            capture_output=True, text=True, timeout=timeout,
        )


class Lists:
    """Every daemon's peer list, followed through its log lines."""

    def __init__(self, daemons: list[Daemon]):
        self.daemons = daemons
        self.listed: dict[str, set[str]] = {d.name: set() for d in daemons}
        self.ready: dict[str, float] = {}
        # (time, observer, peer, reason) of every removal.
        self.removals: list[tuple[float, str, str, str]] = []
        # (time, observer, complete?) whenever completeness changes.
        self.changes: list[tuple[float, str, bool]] = []
        self.expected: dict[str, set[str]] = {}

    def expect(self, running: list[Daemon]) -> None:
        names = {d.name for d in running}
        for d in self.daemons:
            self.expected[d.name] = names - {d.name} if d.name in names else set()
        now = time.time()
        for d in self.daemons:
            self.changes.append((now, d.name, self.complete(d.name)))

    def complete(self, name: str) -> bool:
        return self.expected.get(name, set()) <= self.listed[name]

    def poll(self) -> None:
        for d in self.daemons:
            for line in d.new_lines():
                t = stamp(line)
                if t is None:
                    continue
                if m := READY.search(line):
                    self.ready[d.name] = t
                    self.listed[d.name] = set()
                elif m := DISCOVERED.search(line):
                    self.listed[d.name].add(m.group(1))
                elif m := GONE.search(line):
                    self.listed[d.name].discard(m.group(2))
                    self.removals.append((t, d.name, m.group(2), m.group(1)))
                else:
                    continue
                self.changes.append((t, d.name, self.complete(d.name)))

    def all_complete(self, among: list[Daemon]) -> bool:
        return all(self.complete(d.name) for d in among)

    def completeness(self, start: float, end: float, among: list[Daemon]) -> float:
        """Share of daemon-seconds in [start, end) with a complete list."""
        total = 0.0
        for d in among:
            state, at, incomplete = None, start, 0.0
            for t, name, ok in sorted(c for c in self.changes if c[1] == d.name):
                if t <= start:
                    state = ok
                    continue
                if t >= end:
                    break
                if state is False:
                    incomplete += t - at
                state, at = ok, t
            if state is False:
                incomplete += end - at
            total += incomplete
        return 1.0 - total / ((end - start) * len(among))

    def first_all_complete(self, among: list[Daemon], after: float) -> float:
        """The first time from `after` on at which every list in `among` was complete."""
        names = {d.name for d in among}
        state = {name: False for name in names}
        incomplete = set(names)
        for t, name, ok in sorted(c for c in self.changes if c[1] in names):
            state[name] = ok
            (incomplete.discard if ok else incomplete.add)(name)
            if t >= after and not incomplete:
                return t
        return after if not incomplete else float("inf")


def wait_until(pred, limit: float, what: str, step: float = 0.1) -> float:
    deadline = time.time() + limit
    while not pred():
        if time.time() > deadline:
            raise Failed(f"timed out after {limit:.0f} s waiting for {what}")
        time.sleep(step)
    return time.time()


# --------------------------------------------------------------------------- one run


def one_run(args, label: str, bin_path: Path, n: int, mode: str, tag: str, work: Path) -> dict:
    result: dict = {"binary": label, "n": n, "mode": mode}
    lan = Lan(tag)
    daemons: list[Daemon] = []
    sampler = Sampler(lan)
    try:
        lan.build(n)
        daemons = [Daemon(bin_path, work, lan.hosts[i], i) for i in range(n)]
        lists = Lists(daemons)
        sampler.start()
        drops_before = lan.udp_drops()
        lists.expect(daemons)
        if mode == "together":
            for d in daemons:
                d.start()
        else:
            gap = args.stagger / max(1, n - 1)
            for d in daemons:
                d.start()
                time.sleep(gap)
        wait_until(lambda: (lists.poll(), len(lists.ready) == n)[1], 60, "all daemons ready")
        for d in daemons:
            if not d.alive():
                raise Failed(f"{d.name} exited; see {d.logfile}")
            # `ip netns exec` execs the daemon: the PID is the daemon's own.
            if Path(f"/proc/{d.proc.pid}/comm").read_text().strip() != d.bin.name[:15]:
                raise Failed(f"PID {d.proc.pid} is not the daemon")
        t0 = max(lists.ready.values())
        try:
            wait_until(lambda: (lists.poll(), lists.all_complete(daemons))[1], args.converge_limit, "convergence")
            result["convergence_s"] = round(lists.first_all_complete(daemons, t0) - t0, 3)
        except Failed:
            # Measured on regardless: what the LAN carries matters all the more.
            result["convergence_s"] = None
        log(f"{label} N={n} {mode}: converged {result['convergence_s']} s after the last start")

        steady_start = t0 + args.early
        steady_end = steady_start + args.steady
        time.sleep(max(0.0, steady_start - time.time()))
        cpu0 = [d.cpu_seconds() for d in daemons]
        time.sleep(max(0.0, steady_end - time.time()))
        cpu1 = [d.cpu_seconds() for d in daemons]
        lists.poll()
        cpu = [100 * (b - a) / args.steady for a, b in zip(cpu0, cpu1)]
        rss = [d.rss_mib() for d in daemons]
        result["early"] = sampler.window(t0, steady_start)
        result["steady"] = sampler.window(steady_start, steady_end)
        result["cpu_pct_median"] = round(statistics.median(cpu), 2)
        result["cpu_pct_max"] = round(max(cpu), 2)
        result["rss_mib_median"] = round(statistics.median(rss), 1)
        result["rss_mib_max"] = round(max(rss), 1)
        result["udp_drops"] = lan.udp_drops() - drops_before
        result["false_removals"] = sum(1 for r in lists.removals if r[0] >= t0)
        complete_from = t0 + (result["convergence_s"] or args.converge_limit)
        result["complete_pct"] = round(100 * lists.completeness(complete_from, steady_end, daemons), 3)
        incomplete = []
        for d in daemons:
            out = d.cli(["peers", "--json"])
            listed = {p["name"] for p in json.loads(out.stdout)} if out.returncode == 0 else set()
            if listed != lists.expected[d.name]:
                incomplete.append(d.name)
        result["final_check_incomplete"] = incomplete
        log(f"{label} N={n} {mode}: steady {result['steady'].get('pps', 0):.2f} pkt/s, "
            f"peak {result['steady'].get('peak_second')}, false removals {result['false_removals']}")
        if mode in args.churn_modes.split(","):
            result["churn"] = churn(args, lists, lan, sampler, daemons)
        result["packets_per_second"] = sampler.series(t0)
    finally:
        sampler.stop.set()
        for d in daemons:
            d.stop()
        lan.close()
    return result


def churn(args, lists: Lists, lan: Lan, sampler: Sampler, daemons: list[Daemon]) -> dict:
    out: dict = {}
    victims = daemons[1::4][: max(1, len(daemons) // 4)]
    survivors = [d for d in daemons if d not in victims]
    victim_names = {d.name for d in victims}
    drops_before = lan.udp_drops()
    removals_before = len(lists.removals)
    killed = time.time()
    for d in victims:
        d.kill9()
    lists.expect(survivors)

    def dropped():
        lists.poll()
        return all(not (lists.listed[s.name] & victim_names) for s in survivors)

    try:
        wait_until(dropped, args.churn_limit, "survivors to drop the killed daemons", 0.25)
        out["all_dropped"] = True
    except Failed:
        out["all_dropped"] = False
    gone_at = {}
    for t, observer, peer, _ in lists.removals[removals_before:]:
        if peer in victim_names and observer not in victim_names:
            gone_at[peer] = max(gone_at.get(peer, 0.0), t - killed)
    times = sorted(gone_at.values())
    out["killed"] = len(victims)
    out["gone_from_all_median_s"] = round(statistics.median(times), 1) if times else None
    out["gone_from_all_max_s"] = round(max(times), 1) if len(times) == len(victims) else None
    out["false_removals"] = sum(
        1 for t, observer, peer, _ in lists.removals[removals_before:]
        if peer not in victim_names and observer not in victim_names)
    window_end = time.time()
    out["traffic"] = sampler.window(killed, window_end)

    # Restart the same devices (same state, same identity and name).
    restart = time.time()
    lists.expect(daemons)
    for d in victims:
        d.start()
    wait_until(lambda: (lists.poll(), all(d.name in lists.ready and lists.ready[d.name] >= restart - 1
                                         for d in victims))[1], 60, "restarted daemons ready")
    t_ready = max(lists.ready[d.name] for d in victims)
    # A send by name to a just-started device, from a survivor.
    sample = REPO / "bench" / "scale.py"
    sent = survivors[0].cli(["send", victims[-1].name, str(sample), "--json"], timeout=60)
    out["send_to_restarted"] = "ok" if sent.returncode == 0 else sent.stderr.strip()[:200]
    out["send_s"] = round(time.time() - t_ready, 2)
    wait_until(lambda: (lists.poll(), lists.all_complete(daemons))[1], 60, "convergence after restart")
    out["rejoin_s"] = round(lists.first_all_complete(daemons, restart) - t_ready, 3)
    out["udp_drops"] = lan.udp_drops() - drops_before
    log(f"churn: gone from all in median {out['gone_from_all_median_s']} s, max {out['gone_from_all_max_s']} s; "
        f"rejoin {out['rejoin_s']} s; send {out['send_to_restarted']}")
    return out


# --------------------------------------------------------------------------- report


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def report(results: list[dict], args) -> str:
    lines = [
        f"mDNS scale benchmark: early = first {args.early:.0f} s after the last start, "
        f"steady = the {args.steady:.0f} s after that; staggered starts spread over {args.stagger:.0f} s.",
        "",
        "| binary | N | start | converge s | early pkt/s | early peak/s | steady pkt/s | steady B/s | "
        "steady peak/s | queries | drops | CPU % med/max | RSS MiB med/max | false removals | complete % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['binary']} | {r['n']} | {r['mode']} | failed: {r['error']} |")
            continue
        e, s = r["early"], r["steady"]
        converge = fmt(r["convergence_s"], 2) if r["convergence_s"] is not None else f"> {args.converge_limit:.0f}"
        lines.append(
            f"| {r['binary']} | {r['n']} | {r['mode']} | {converge} | {fmt(e.get('pps'))} | "
            f"{e.get('peak_second', '-')} | {fmt(s.get('pps'), 2)} | {fmt(s.get('bps'), 0)} | "
            f"{s.get('peak_second', '-')} | {100 * s.get('query_share', 0):.0f} % | {r['udp_drops']} | "
            f"{r['cpu_pct_median']:.2f}/{r['cpu_pct_max']:.2f} | {r['rss_mib_median']:.1f}/{r['rss_mib_max']:.1f} | "
            f"{r['false_removals']} | {r['complete_pct']:.3f} |")
    churned = [r for r in results if r.get("churn")]
    if churned:
        lines += [
            "",
            "Churn: kill -9 of a quarter, then restart of the same devices.",
            "",
            "| binary | N | start | killed | gone from all: median / max s | false removals | "
            "pkt/s until gone | peak/s | drops | rejoin s | send to a restarted peer |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in churned:
            c = r["churn"]
            t = c.get("traffic", {})
            lines.append(
                f"| {r['binary']} | {r['n']} | {r['mode']} | {c['killed']} | "
                f"{fmt(c['gone_from_all_median_s'])} / {fmt(c['gone_from_all_max_s'])} | {c['false_removals']} | "
                f"{fmt(t.get('pps'))} | {t.get('peak_second', '-')} | {c['udp_drops']} | {fmt(c['rejoin_s'], 2)} | "
                f"{c['send_to_restarted']} ({c['send_s']} s) |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2,8,16,32,64", help="comma-separated LAN sizes")
    p.add_argument("--modes", default="together,staggered", help="together and/or staggered")
    p.add_argument("--stagger", type=float, default=15, help="staggered starts spread over this many s")
    p.add_argument("--early", type=float, default=90,
                   help="seconds after the last start counted as early (start-up, first periodic announcements)")
    p.add_argument("--steady", type=float, default=120, help="length of the steady-state window, s")
    p.add_argument("--churn-modes", default="together", metavar="MODES",
                   help="start modes after whose steady window a quarter is killed (kill -9) and restarted; "
                        "'' for none")
    p.add_argument("--converge-limit", type=float, default=60,
                   help="longest wait for convergence, s (measurement goes on without it)")
    p.add_argument("--churn-limit", type=float, default=200, help="longest wait for the killed to be dropped, s")
    p.add_argument("--bin", action="append", default=[], metavar="LABEL=PATH",
                   help="daemon binary to measure (repeatable; default: build target/release/share)")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "scale-latest.json")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("scale.py needs root (network namespaces, nftables)", file=sys.stderr)
        return 2

    bins: list[tuple[str, Path]] = []
    for spec in args.bin:
        label, _, path = spec.rpartition("=")
        bins.append((label or Path(path).name, Path(path).resolve()))
    if not bins:
        log("building target/release/share")
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "share"], cwd=REPO, check=True)
        bins.append(("HEAD", REPO / "target" / "release" / "share"))

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)

    results = []
    seq = 0
    with tempfile.TemporaryDirectory(prefix="lanshare-scale-") as tmp:
        for n in [int(x) for x in args.sizes.split(",")]:
            for mode in args.modes.split(","):
                for label, path in bins:
                    tag = f"lsc{os.getpid() % 100000}x{seq}"
                    seq += 1
                    work = Path(tmp) / tag
                    log(f"{label}: N={n}, {mode}")
                    try:
                        results.append(one_run(args, label, path, n, mode, tag, work))
                    except Failed as e:
                        log(f"{label} N={n} {mode} failed: {e}")
                        results.append({"binary": label, "n": n, "mode": mode, "error": str(e)})
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(results, indent=1))
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
