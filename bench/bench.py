#!/usr/bin/env python3
"""lanshare benchmark orchestrator. Called by bench/run.sh; not meant to be run by hand.

Subcommands:
  suite  loopback suite (runs INSIDE a loopback-only network namespace): lanshare QUIC/TCP
         against the quinn ceiling, nc, tar|socat|tar, scp, rsync, sendme, magic-wormhole;
         plus the lanshare extras (1-byte latency, idle RSS, 4 GiB RSS).
  link   link-rate benchmark (runs inside namespace A; namespace B is reached with
         `ip netns exec`): lanshare QUIC/TCP and iperf3 over a tbf-limited veth pair.
  disk   disk benchmark (runs inside namespace A, the receivers in B): lanshare QUIC/TCP onto a
         throttled loop-device file system against nc, dd conv=fsync and tar|nc|tar + sync -f.
  plot   JSON results -> PNG chart (needs matplotlib).

Conventions: 1 MiB = 2^20 bytes, 1 GiB = 2^30 bytes. Times are wall-clock seconds measured
here around the client process (start to exit) unless the tool says otherwise.
Progress goes to stderr; the markdown report goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
CLK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

PROCS: list[subprocess.Popen] = []  # everything we started, for cleanup


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A run that did not complete or did not verify."""


# --------------------------------------------------------------------------- processes


def spawn(cmd, *, stdout=None, stderr=None, stdin=None, cwd=None, env=None) -> subprocess.Popen:
    p = subprocess.Popen(
        [str(c) for c in cmd],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,  # own process group: we can stop it and its children
    )
    PROCS.append(p)
    return p


def _killpg(p: subprocess.Popen, sig) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(p: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL after `timeout`."""
    if p.returncode is not None:
        return
    _killpg(p, signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        _killpg(p, signal.SIGKILL)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def cleanup_all() -> None:
    for p in reversed(PROCS):
        try:
            stop(p, 3)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def wait_rusage(p: subprocess.Popen, timeout: float):
    """Waits for `p` (bounded). Returns (end perf_counter, exit code, rusage of p + waited children)."""
    res: dict = {}

    def waiter():
        try:
            _, status, ru = os.wait4(p.pid, 0)
            res["t"] = time.perf_counter()
            res["status"] = status
            res["ru"] = ru
        except ChildProcessError as e:
            res["err"] = e

    th = threading.Thread(target=waiter, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        _killpg(p, signal.SIGKILL)
        th.join(5)
        p.returncode = -9
        raise Failed(f"timed out after {timeout:.0f} s: {' '.join(map(str, p.args))[:200]}")
    if "err" in res:
        raise Failed(f"wait failed: {res['err']}")
    p.returncode = os.waitstatus_to_exitcode(res["status"])
    return res["t"], p.returncode, res["ru"]


TIME_BIN = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


def with_rss(cmd, rss_file: Path) -> list:
    """Wraps `cmd` in GNU time to learn its true peak RSS. (ru_maxrss from wait4 here would
    include the forking Python's own ~40 MiB: Linux keeps the pre-exec high-water mark.)"""
    if TIME_BIN is None:
        return list(cmd)
    return [TIME_BIN, "-f", "%M", "-o", rss_file] + list(cmd)


def read_rss(rss_file: Path) -> int | None:
    try:
        lines = [ln for ln in rss_file.read_text().splitlines() if ln.strip()]
        return int(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def ru_cpu(ru) -> float:
    return ru.ru_utime + ru.ru_stime


def proc_cpu(pid: int, children: bool = True) -> float:
    """utime+stime (+cutime+cstime: reaped children) of a running process, seconds."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    f = s[s.rindex(")") + 2 :].split()
    t = int(f[11]) + int(f[12])
    if children:
        t += int(f[13]) + int(f[14])
    return t / CLK


def machine_busy() -> float:
    """Non-idle CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK


WINDOW: dict = {}


def mark_start() -> None:
    """Start of a timed section: remembers the machine's busy CPU (see `others_cpu_share`)."""
    WINDOW.clear()
    WINDOW["b0"], WINDOW["w0"] = machine_busy(), time.perf_counter()


def mark_end() -> None:
    WINDOW["b1"], WINDOW["w1"] = machine_busy(), time.perf_counter()


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def listening(port: int, proto: str = "tcp", ns: str | None = None) -> bool:
    """Whether something listens on `port` (reads /proc/net of this or `ns`'s namespace)."""
    files = [f"/proc/net/{proto}", f"/proc/net/{proto}6"]
    want = f":{port:04X}"
    for fn in files:
        try:
            if ns:
                txt = subprocess.run(
                    ["ip", "netns", "exec", ns, "cat", fn], capture_output=True, text=True, timeout=5
                ).stdout
            else:
                txt = Path(fn).read_text()
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in txt.splitlines()[1:]:
            parts = line.split()
            if len(parts) > 3 and parts[1].endswith(want):
                if proto == "udp" or parts[3] == "0A":
                    return True
    return False


def wait_until(pred, timeout: float, what: str, interval: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(interval)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")


_port = [20000 + random.randrange(0, 10000)]  # below the ephemeral range (32768+)


def free_port() -> int:
    """A port number for per-run listeners (fresh each time: no TIME_WAIT surprises)."""
    _port[0] += 1
    if _port[0] > 32000:
        _port[0] = 20000
    return _port[0]


# --------------------------------------------------------------------------- workloads


class Workload:
    def __init__(self, key, label, name, kind, files, nbytes, src_root):
        self.key = key
        self.label = label
        self.name = name  # entry name under src_root (file or directory)
        self.kind = kind  # "file" or "tree"
        self.files = files
        self.bytes = nbytes
        self.path = Path(src_root) / name

    def to_json(self):
        return {
            "key": self.key,
            "label": self.label,
            "kind": self.kind,
            "files": self.files,
            "bytes": self.bytes,
            "path": str(self.path),
        }


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def write_small_tree(root: Path, n: int) -> None:
    """`n` files of 4 KiB of random bytes, spread over 100 nested directories (`d00/e00/...`)."""
    i = 0
    for a in range(10):
        for b in range(10):
            d = root / f"d{a:02}" / f"e{b:02}"
            d.mkdir(parents=True, exist_ok=True)
            for _ in range(n // 100):
                (d / f"f{i:05}.dat").write_bytes(os.urandom(4096))
                i += 1


def make_workloads(src_root: Path, quick: bool, wanted: list[str]) -> dict[str, Workload]:
    src_root.mkdir(parents=True, exist_ok=True)
    big = (128 * MiB) if quick else GiB
    nsmall = 200 if quick else 2000
    nmed = 20 if quick else 200
    wls: dict[str, Workload] = {}
    if "large" in wanted:
        w = Workload("large", f"1 file of {big // MiB} MiB", "large.bin", "file", 1, big, src_root)
        if not w.path.exists() or w.path.stat().st_size != big:
            log(f"creating {w.path} ({big // MiB} MiB of random data)")
            write_random(w.path, big)
        wls["large"] = w
    if "small" in wanted:
        w = Workload("small", f"{nsmall} files of 4 KiB", "small", "tree", nsmall, nsmall * 4096, src_root)
        if not w.path.exists():
            log(f"creating {w.path} ({nsmall} x 4 KiB in nested directories)")
            write_small_tree(w.path, nsmall)
        wls["small"] = w
    if "medium" in wanted:
        w = Workload("medium", f"{nmed} files of 1 MiB", "medium", "tree", nmed, nmed * MiB, src_root)
        if not w.path.exists():
            log(f"creating {w.path} ({nmed} x 1 MiB in 4 directories)")
            for i in range(nmed):
                d = w.path / f"part{i % 4}"
                d.mkdir(parents=True, exist_ok=True)
                write_random(d / f"m{i:04}.bin", MiB)
        wls["medium"] = w
    return wls


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(8 * MiB)
            y = fb.read(8 * MiB)
            if x != y:
                return False
            if not x:
                return True


def verify(wl: Workload, got: Path) -> None:
    """Raises Failed unless `got` is byte-identical to the workload (tree and contents)."""
    if wl.kind == "file":
        if not got.is_file():
            raise Failed(f"verification: {got} missing")
        if not _same_file(wl.path, got):
            raise Failed(f"verification: {got} differs from the source")
        return
    if not got.is_dir():
        raise Failed(f"verification: directory {got} missing")

    def listing(root: Path):
        out = {}
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            for d in dirnames:
                out[os.path.normpath(os.path.join(rel, d))] = "d"
            for f in filenames:
                out[os.path.normpath(os.path.join(rel, f))] = "f"
        return out

    a, b = listing(wl.path), listing(got)
    if a != b:
        missing = sorted(set(a) - set(b))[:3]
        extra = sorted(set(b) - set(a))[:3]
        raise Failed(f"verification: tree differs (missing {missing}, unexpected {extra})")
    for rel, kind in a.items():
        if kind == "f" and not _same_file(wl.path / rel, got / rel):
            raise Failed(f"verification: {rel} differs")


# --------------------------------------------------------------------------- tools


class Tool:
    name = "?"
    label = "?"
    workloads = {"large", "small", "medium"}
    is_lanshare = False
    note = ""
    # sides whose peak RSS is reported
    def setup(self, ctx) -> None:  # noqa: E301
        pass

    def teardown(self) -> None:
        pass

    def run(self, wl: Workload, dst: Path, timeout: float) -> dict:
        raise NotImplementedError


def result(seconds, cpu, rss_send=None, rss_recv=None, **extra) -> dict:
    r = {"seconds": seconds, "cpu_seconds": cpu, "rss_send_kib": rss_send, "rss_recv_kib": rss_recv}
    r.update(extra)
    return r


class Daemon:
    """One lanshare daemon. `prefix` runs it in another namespace (link benchmark)."""

    def __init__(self, share: str, root: Path, name: str, bind: str, prefix=()):
        self.share = share
        self.root = root
        self.name = name
        self.bind = bind
        self.prefix = list(prefix)
        # The daemon only puts its control socket in a directory of mode 0700.
        self.sock = root / f"{name}-run" / "share.sock"
        self.state = root / f"{name}-state"
        self.logf = root / f"{name}.log"
        self.p: subprocess.Popen | None = None
        self.port = None

    def start(self, download_dir: Path) -> None:
        download_dir.mkdir(parents=True, exist_ok=True)
        self.sock.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.sock.parent, 0o700)
        if self.sock.exists():
            self.sock.unlink()
        log_fh = open(self.logf, "ab")
        self.p = spawn(
            self.prefix
            + [self.share, "daemon", "--name", self.name, "--no-mdns", "--bind", self.bind,
               "--port", "0", "--state-dir", self.state, "--download-dir", download_dir,
               "--socket", self.sock, "--accept", "all"],
            stderr=log_fh,
            stdout=log_fh,
        )
        log_fh.close()
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if self.p.poll() is not None:
                raise Failed(f"daemon {self.name} exited with {self.p.returncode}; see {self.logf}")
            if self.sock.exists():
                r = subprocess.run(
                    [self.share, "--socket", self.sock, "status", "--json"],
                    capture_output=True, text=True, timeout=10,
                )
                if r.returncode == 0:
                    st = json.loads(r.stdout)
                    self.port = st["port"]
                    self.status = st
                    return
            time.sleep(0.02)
        raise Failed(f"daemon {self.name} not ready within 20 s; see {self.logf}")

    @property
    def pid(self) -> int:
        assert self.p is not None
        return self.p.pid

    def stop(self) -> None:
        if self.p is not None:
            stop(self.p, 10)
            self.p = None


class Lanshare(Tool):
    is_lanshare = True

    def __init__(self, transport: str, share: str, root: Path):
        self.transport = transport
        self.name = f"lanshare-{transport}"
        self.label = f"lanshare, {'QUIC' if transport == 'quic' else 'TCP+TLS fallback'}"
        self.share = share
        self.root = root / self.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.sender = Daemon(share, self.root, "bench-send", "127.0.0.1")
        self.receiver = Daemon(share, self.root, "bench-recv", "127.0.0.1")

    def send(self, path: Path, timeout: float, transport: str | None = None, sender=None, peer=None,
             rss_file: Path | None = None):
        """One `share send`; returns (wall seconds, json doc, cli rusage)."""
        sender = sender or self.sender
        peer = peer or f"127.0.0.1:{self.receiver.port}"
        out = self.root / "send.out"
        err = self.root / "send.err"
        cmd = [self.share, "--socket", sender.sock, "send", peer, path, "--json"]
        t = transport or self.transport
        if t != "auto":
            cmd += ["--transport", t]
        with open(out, "wb") as fo, open(err, "wb") as fe:
            mark_start()
            t0 = time.perf_counter()
            p = spawn(with_rss(cmd, rss_file) if rss_file else cmd, stdout=fo, stderr=fe)
            t1, rc, ru = wait_rusage(p, timeout)
            mark_end()
        text = out.read_text()
        try:
            doc = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            doc = {"raw": text[:300]}
        if rc != 0 or doc.get("status") != "done":
            raise Failed(f"share send exited {rc}: {text.strip()[:300]} {err.read_text().strip()[:300]}")
        if t != "auto" and doc.get("transport") != t:
            raise Failed(f"asked for {t}, transfer went over {doc.get('transport')}")
        return t1 - t0, doc, ru

    def run(self, wl, dst, timeout):
        # Fresh daemons per run: VmHWM is then the peak of this run alone.
        self.sender.start(self.root / "send-dl")
        try:
            self.receiver.start(dst)
            # One 1-byte warm-up send first, as in the latency test: the
            # daemon is a service that runs from boot, so what a user meets
            # is a daemon that has connected before, not its very first
            # connection (thread start-up, first page faults).
            warm = self.root / "warm-up"
            warm.write_bytes(b"w")
            self.send(warm, timeout)
            (dst / "warm-up").unlink()
            c0 = proc_cpu(self.sender.pid) + proc_cpu(self.receiver.pid)
            rssf = self.root / "cli.rss"
            secs, doc, ru = self.send(wl.path, timeout, rss_file=rssf)
            c1 = proc_cpu(self.sender.pid) + proc_cpu(self.receiver.pid)
            hwm_s = proc_status_kib(self.sender.pid, "VmHWM")
            hwm_r = proc_status_kib(self.receiver.pid, "VmHWM")
            if doc.get("files") != wl.files or doc.get("bytes") != wl.bytes:
                raise Failed(f"share send reported {doc.get('files')} files / {doc.get('bytes')} B")
            return result(
                secs, c1 - c0 + ru_cpu(ru), hwm_s, hwm_r,
                json_seconds=doc.get("seconds"), cli_rss_kib=read_rss(rssf),
                daemon_cpu=c1 - c0, cli_cpu=ru_cpu(ru),
            )
        finally:
            self.receiver.stop()
            self.sender.stop()


class QuinnCeiling(Tool):
    workloads = {"large"}

    def __init__(self, binary: str, mode: str):
        self.binary = binary
        self.mode = mode
        self.name = "quinn-ceiling" if mode == "link" else "quinn-raw"
        self.label = (
            "raw quinn ceiling (lanshare QuicTransport + Link, 1 process)"
            if mode == "link"
            else "raw quinn ceiling (quinn write_chunk, same settings)"
        )
        self.note = "memory to memory; verified against the pattern inside the tool; time = stream transfer only"

    def run(self, wl, dst, timeout):
        mark_start()
        p = spawn([self.binary, "--mode", self.mode, "--bytes", wl.bytes], stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
        t1, rc, ru = wait_rusage(p, timeout)
        mark_end()
        out = p.stdout.read().decode()
        err = p.stderr.read().decode()
        if rc != 0:
            raise Failed(f"quinn-ceiling exited {rc}: {err.strip()[:300]}")
        doc = json.loads(out)
        if not doc.get("verified") or doc.get("received") != wl.bytes:
            raise Failed("quinn-ceiling: verification failed")
        return result(doc["seconds"], ru_cpu(ru), doc["peak_rss_kib"], None, handshake_ms=doc["handshake_ms"],
                      verified_internally=True)


class Nc(Tool):
    name = "nc"
    label = "nc (plain TCP, no crypto) into a file"
    workloads = {"large"}

    def run(self, wl, dst, timeout):
        port = free_port()
        target = dst / wl.name
        rs, rr = dst.parent / "nc-send.rss", dst.parent / "nc-recv.rss"
        with open(target, "wb") as fo:
            recv = spawn(with_rss(["nc", "-l", "127.0.0.1", port], rr), stdout=fo)
        try:
            wait_until(lambda: listening(port), 10, "nc to listen")
            with open(wl.path, "rb") as fi:
                mark_start()
                t0 = time.perf_counter()
                send = spawn(with_rss(["nc", "-N", "127.0.0.1", port], rs), stdin=fi)
                _, rc_s, ru_s = wait_rusage(send, timeout)
            t1, rc_r, ru_r = wait_rusage(recv, timeout)
            mark_end()
        finally:
            stop(recv)
        if rc_s != 0 or rc_r != 0:
            raise Failed(f"nc exited {rc_s}/{rc_r}")
        return result(t1 - t0, ru_cpu(ru_s) + ru_cpu(ru_r), read_rss(rs), read_rss(rr))


class TarSocat(Tool):
    name = "tar-socat"
    label = "tar | socat | tar (plain TCP, no crypto)"

    def run(self, wl, dst, timeout):
        port = free_port()
        rs, rr = dst.parent / "ts-send.rss", dst.parent / "ts-recv.rss"
        recv = spawn(with_rss(["bash", "-c",
                      f"set -o pipefail; socat -u TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr STDOUT | tar -x -C '{dst}'"], rr))
        try:
            wait_until(lambda: listening(port), 10, "socat to listen")
            mark_start()
            t0 = time.perf_counter()
            send = spawn(with_rss(["bash", "-c",
                          f"set -o pipefail; tar -c -C '{wl.path.parent}' '{wl.name}' | socat -u STDIN TCP:127.0.0.1:{port}"], rs))
            _, rc_s, ru_s = wait_rusage(send, timeout)
            t1, rc_r, ru_r = wait_rusage(recv, timeout)
            mark_end()
        finally:
            stop(recv)
        if rc_s != 0 or rc_r != 0:
            raise Failed(f"tar|socat exited {rc_s}/{rc_r}")
        return result(t1 - t0, ru_cpu(ru_s) + ru_cpu(ru_r), read_rss(rs), read_rss(rr))


class Sshd:
    """A throwaway sshd on 127.0.0.1:PORT (inside the namespace) with its own keys."""

    def __init__(self, root: Path):
        self.root = root / "sshd"
        self.p = None

    def start(self):
        r = self.root
        shutil.rmtree(r, ignore_errors=True)
        r.mkdir(parents=True)
        os.chmod(r, 0o700)
        for k in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", r / k], check=True, timeout=30)
        shutil.copy(r / "client_key.pub", r / "authorized_keys")
        self.port = free_port()
        sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server") if Path(p).exists()),
                    "internal-sftp")
        (r / "sshd_config").write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {r}/host_key
AuthorizedKeysFile {r}/authorized_keys
PidFile {r}/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
UseDNS no
Ciphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-ctr
Subsystem sftp {sftp}
LogLevel ERROR
MaxStartups 100
"""
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        chk = subprocess.run(["/usr/sbin/sshd", "-t", "-f", r / "sshd_config"], capture_output=True, text=True,
                             timeout=30)
        if chk.returncode != 0:
            raise Failed(f"sshd config check failed: {chk.stderr.strip()}")
        self.logf = open(r / "sshd.log", "ab")
        self.p = spawn(["/usr/sbin/sshd", "-f", r / "sshd_config", "-D", "-e"], stderr=self.logf)
        wait_until(lambda: listening(self.port), 10, "sshd to listen")

    def ssh_opts(self, cipher: str) -> list[str]:
        return ["-F", "/dev/null", "-i", str(self.root / "client_key"), "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR", "-o", "Compression=no", "-c", cipher]

    def cpu(self) -> float:
        return proc_cpu(self.p.pid, children=True)

    def stop(self):
        if self.p:
            stop(self.p)
            self.p = None


class SshTool(Tool):
    sshd: Sshd | None = None
    users = 0

    def __init__(self, name, label, cipher, root: Path):
        self.name, self.label, self.cipher, self.root = name, label, cipher, root
        self.note = "server-side (sshd) CPU counted from the sshd master's reaped children; its RSS is not measured"

    def setup(self, ctx):
        if SshTool.sshd is None:
            SshTool.sshd = Sshd(self.root)
            SshTool.sshd.start()
        SshTool.users += 1

    def teardown(self):
        SshTool.users -= 1
        if SshTool.users == 0 and SshTool.sshd:
            SshTool.sshd.stop()
            SshTool.sshd = None

    def command(self, wl, dst):
        raise NotImplementedError

    def run(self, wl, dst, timeout):
        sshd = SshTool.sshd
        c0 = sshd.cpu()
        errf = dst.parent / f"{self.name}.err"
        with open(errf, "wb") as fe:
            mark_start()
            t0 = time.perf_counter()
            rssf = dst.parent / f"{self.name}.rss"
            p = spawn(with_rss(self.command(wl, dst), rssf), stderr=fe)
            t1, rc, ru = wait_rusage(p, timeout)
            mark_end()
        if rc != 0:
            raise Failed(f"{self.name} exited {rc}: {errf.read_text().strip()[:300]}")
        # let sshd reap the session processes so their CPU lands in cutime/cstime
        prev, end = -1.0, time.monotonic() + 3
        while time.monotonic() < end:
            time.sleep(0.1)
            cur = sshd.cpu()
            if cur == prev:
                break
            prev = cur
        return result(t1 - t0, ru_cpu(ru) + (prev - c0), read_rss(rssf), None)


class Scp(SshTool):
    def command(self, wl, dst):
        return ["scp", "-q", "-r", "-P", str(SshTool.sshd.port)] + SshTool.sshd.ssh_opts(self.cipher) + [
            str(wl.path), f"root@127.0.0.1:{dst}/"]


class Rsync(SshTool):
    def command(self, wl, dst):
        ssh = " ".join(["ssh", "-p", str(SshTool.sshd.port)] + SshTool.sshd.ssh_opts(self.cipher))
        return ["rsync", "-a", "-e", ssh, str(wl.path), f"root@127.0.0.1:{dst}/"]


class Sendme(Tool):
    name = "sendme"
    label = "sendme (iroh QUIC, BLAKE3)"

    def __init__(self, binary: str, root: Path):
        self.binary = binary
        self.root = root / "sendme"
        self.note = "sender started first; time = from sender start to receiver exit (ticket hand-over included)"

    def run(self, wl, dst, timeout):
        self.root.mkdir(parents=True, exist_ok=True)
        out = self.root / "send.out"
        env = dict(os.environ, RUST_LOG="error", NO_COLOR="1")
        with open(out, "wb") as fo:
            mark_start()
            t0 = time.perf_counter()
            send = spawn([self.binary, "send", "--relay", "disabled", "--no-progress", "--ticket-type", "addresses",
                          "--magic-ipv4-addr", "127.0.0.1:0", wl.path], stdout=fo, stderr=subprocess.STDOUT,
                         cwd=self.root, env=env)
            try:
                ticket = None

                def have_ticket():
                    nonlocal ticket
                    for tok in out.read_text(errors="replace").split():
                        if tok.startswith("blob") and len(tok) > 40:
                            ticket = tok
                            return True
                    if send.poll() is not None:
                        raise Failed(f"sendme send exited: {out.read_text()[:300]}")
                    return False

                wait_until(have_ticket, timeout, "sendme ticket", interval=0.005)
                errf = self.root / "recv.out"
                with open(errf, "wb") as fe:
                    rr = self.root / "recv.rss"
                    recv = spawn(with_rss([self.binary, "receive", "--relay", "disabled", "--no-progress", ticket], rr), cwd=dst, stdout=fe,
                                 stderr=subprocess.STDOUT, env=env)
                    t1, rc, ru_r = wait_rusage(recv, timeout)
                    mark_end()
                if rc != 0:
                    raise Failed(f"sendme receive exited {rc}: {errf.read_text()[-300:]}")
                c_send = proc_cpu(send.pid, children=False)
                rss_send = proc_status_kib(send.pid, "VmHWM")
            finally:
                stop(send)
        for leftover in dst.glob(".sendme-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return result(t1 - t0, c_send + ru_cpu(ru_r), rss_send, read_rss(rr))


class Wormhole(Tool):
    name = "wormhole"
    label = "magic-wormhole (local mailbox + transit relay)"

    def __init__(self, venv: Path, root: Path):
        self.venv = venv
        self.root = root / "wormhole"
        self.servers = []
        self.n = 0
        self.note = "sender and receiver started together; time = until both exit; relays' CPU included"

    def setup(self, ctx):
        self.root.mkdir(parents=True, exist_ok=True)
        self.mport, self.tport = free_port(), free_port()
        twist = self.venv / "bin" / "twist"
        lf = open(self.root / "servers.log", "ab")
        self.servers = [
            spawn([twist, "wormhole-mailbox", f"--port=tcp:{self.mport}:interface=127.0.0.1",
                   f"--channel-db={self.root}/relay.sqlite"], stdout=lf, stderr=lf, cwd=self.root),
            spawn([twist, "transitrelay", f"--port=tcp:{self.tport}:interface=127.0.0.1"], stdout=lf, stderr=lf,
                  cwd=self.root),
        ]
        wait_until(lambda: listening(self.mport) and listening(self.tport), 30, "wormhole mailbox and relay")

    def teardown(self):
        for s in self.servers:
            stop(s)

    def run(self, wl, dst, timeout):
        self.n += 1
        code = f"{self.n}-lanshare-bench-{random.randrange(10**9)}"
        wh = self.venv / "bin" / "wormhole"
        common = [wh, "--relay-url", f"ws://127.0.0.1:{self.mport}/v1", "--transit-helper",
                  f"tcp:127.0.0.1:{self.tport}"]
        c0 = sum(proc_cpu(s.pid) for s in self.servers)
        so, ro = self.root / "send.out", self.root / "recv.out"
        with open(so, "wb") as fs, open(ro, "wb") as fr:
            mark_start()
            t0 = time.perf_counter()
            rs, rr = self.root / "send.rss", self.root / "recv.rss"
            send = spawn(with_rss(common + ["send", "--hide-progress", "--code", code, wl.path], rs), stdout=fs,
                         stderr=subprocess.STDOUT)
            recv = spawn(with_rss(common + ["receive", "--hide-progress", "--accept-file", "-o", dst / wl.name, code], rr),
                         stdout=fr, stderr=subprocess.STDOUT)
            try:
                t_r, rc_r, ru_r = wait_rusage(recv, timeout)
                t_s, rc_s, ru_s = wait_rusage(send, timeout)
                mark_end()
            finally:
                stop(send)
                stop(recv)
        if rc_r != 0 or rc_s != 0:
            raise Failed(f"wormhole exited {rc_s}/{rc_r}: {ro.read_text()[-300:]} {so.read_text()[-300:]}")
        c1 = sum(proc_cpu(s.pid) for s in self.servers)
        return result(max(t_r, t_s) - t0, ru_cpu(ru_s) + ru_cpu(ru_r) + (c1 - c0), read_rss(rs), read_rss(rr))


# --------------------------------------------------------------------------- statistics


def summarize(runs: list[dict], wl: Workload) -> dict:
    ok = [r for r in runs if r.get("ok")]
    s = {"runs": len(runs), "ok_runs": len(ok), "failed": [r.get("error") for r in runs if not r.get("ok")]}
    if not ok:
        return s
    secs = [r["seconds"] for r in ok]
    med = statistics.median(secs)
    s.update(
        median_s=med, min_s=min(secs), max_s=max(secs),
        mib_s=wl.bytes / MiB / med, files_s=wl.files / med,
    )
    cpus = [r["cpu_seconds"] for r in ok if r.get("cpu_seconds") is not None]
    if cpus:
        s["cpu_s"] = statistics.median(cpus)
        s["cpu_s_per_gib"] = s["cpu_s"] / (wl.bytes / GiB)
    for k in ("rss_send_kib", "rss_recv_kib", "cli_rss_kib"):
        v = [r[k] for r in ok if r.get(k)]
        if v:
            s[k.replace("_kib", "_peak_mib")] = max(v) / 1024
    oth = [r["others_cpu_share"] for r in ok if r.get("others_cpu_share") is not None]
    if oth:
        s["others_cpu_share"] = statistics.median(oth)
    js = [r["json_seconds"] for r in ok if r.get("json_seconds") is not None]
    if js:
        s["json_median_s"] = statistics.median(js)
    return s


def fmt(v, spec=".2f", none="–"):
    if v is None:
        return none
    return format(v, spec)


def fmt_s(v):
    if v is None:
        return "–"
    if v < 0.1:
        return f"{v:.3f}"
    if v < 10:
        return f"{v:.2f}"
    return f"{v:.1f}"


# --------------------------------------------------------------------------- suite


def lanshare_extras(args, share: str, root: Path, src_root: Path, quick: bool, summary: dict) -> dict:
    ex: dict = {}
    L = Lanshare("quic", share, root / "extras")
    # Idle RSS: fresh daemons, after 2 s of nothing.
    L.sender.start(root / "extras" / "send-dl")
    L.receiver.start(root / "extras" / "recv-dl")
    try:
        time.sleep(2)
        ex["idle_rss_kib"] = {
            "sender": proc_status_kib(L.sender.pid, "VmRSS"),
            "receiver": proc_status_kib(L.receiver.pid, "VmRSS"),
        }
        log(f"idle RSS: {ex['idle_rss_kib']}")
        # 1-byte latency: `share send` start to exit 0, daemons already running, peer known by address.
        one = src_root / "one-byte"
        one.write_bytes(b"x")
        n = 5 if quick else 20
        lat: dict = {"auto": [], "quic": [], "tcp": []}
        fails: list = []
        L.send(one, 30, transport="auto")  # warm-up (first connection, page faults)
        for i in range(n):
            for t in ("auto", "quic", "tcp"):
                try:
                    secs, doc, _ = L.send(one, 30, transport=t)
                    lat[t].append({"seconds": secs, "json_seconds": doc.get("seconds"),
                                   "transport": doc.get("transport")})
                except Failed as e:
                    fails.append(str(e))
                for f in (root / "extras" / "recv-dl").iterdir():
                    f.unlink()
        ex["latency_1byte"] = {}
        for t, v in lat.items():
            if v:
                w = [x["seconds"] for x in v]
                ex["latency_1byte"][t] = {
                    "runs": len(v), "median_ms": statistics.median(w) * 1e3, "min_ms": min(w) * 1e3,
                    "max_ms": max(w) * 1e3,
                    "json_median_ms": statistics.median([x["json_seconds"] for x in v]) * 1e3,
                    "transports": sorted({x["transport"] for x in v}),
                }
        ex["latency_failures"] = fails
        log(f"1-byte latency: { {k: round(v['median_ms'], 1) for k, v in ex['latency_1byte'].items()} } ms")
        ex["rss_after_latency_kib"] = {
            "sender": proc_status_kib(L.sender.pid, "VmRSS"),
            "receiver": proc_status_kib(L.receiver.pid, "VmRSS"),
        }
    finally:
        L.receiver.stop()
        L.sender.stop()

    # 4 GiB: peak RSS must not grow with file size (full run only).
    if not quick and not args.no_4g:
        size = 4 * GiB
        st = os.statvfs(src_root)
        free_fs = st.f_bavail * st.f_frsize
        avail_mem = 0
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail_mem = int(line.split()[1]) * 1024
        need = 2 * size + 2 * GiB
        if free_fs < need or avail_mem < need:
            ex["rss_4gib"] = {"skipped": f"needs {need / GiB:.0f} GiB free on the tmpfs and in RAM "
                                         f"(have {free_fs / GiB:.1f} / {avail_mem / GiB:.1f} GiB)"}
        else:
            big = src_root / "huge.bin"
            log("creating 4 GiB file for the RSS check")
            write_random(big, size)
            wl = Workload("huge", "1 file of 4 GiB", "huge.bin", "file", 1, size, src_root)
            ex["rss_4gib"] = {}
            try:
                for t in ("quic", "tcp"):
                    T = Lanshare(t, share, root / "extras4g")
                    dst = root / "extras4g" / "dl"
                    shutil.rmtree(dst, ignore_errors=True)
                    dst.mkdir(parents=True)
                    try:
                        r = T.run(wl, dst, 600)
                        verify(wl, dst / wl.name)
                        one_g = summary.get("large", {}).get(T.name, {})
                        r.update(
                            ok=True, mib_s=size / MiB / r["seconds"],
                            rss_send_1gib_mib=one_g.get("rss_send_peak_mib"),
                            rss_recv_1gib_mib=one_g.get("rss_recv_peak_mib"),
                        )
                        log(f"4 GiB over {t}: {r['seconds']:.2f} s, peak RSS send {r['rss_send_kib'] / 1024:.1f} MiB "
                            f"recv {r['rss_recv_kib'] / 1024:.1f} MiB")
                    except Failed as e:
                        r = {"ok": False, "error": str(e)}
                        log(f"4 GiB over {t} FAILED: {e}")
                    finally:
                        shutil.rmtree(dst, ignore_errors=True)
                    ex["rss_4gib"][t] = r
            finally:
                big.unlink(missing_ok=True)
    return ex


def build_tools(args, root: Path) -> tuple[list[Tool], dict]:
    only = set(args.only.split(",")) if args.only else None
    skipped: dict = {}
    cands: list[Tool] = []

    def want(name):
        return only is None or name in only or any(name.startswith(o + "-") for o in only)

    if want("lanshare-quic"):
        cands.append(Lanshare("quic", args.share, root))
    if want("lanshare-tcp"):
        cands.append(Lanshare("tcp", args.share, root))
    if want("quinn-ceiling"):
        cands.append(QuinnCeiling(args.ceiling, "link"))
    if want("quinn-raw"):
        cands.append(QuinnCeiling(args.ceiling, "raw"))
    if want("nc"):
        cands.append(Nc())
    if want("tar-socat"):
        cands.append(TarSocat())
    if want("scp-aes"):
        cands.append(Scp("scp-aes", "scp, aes128-gcm", "aes128-gcm@openssh.com", root))
    if want("scp-chacha"):
        cands.append(Scp("scp-chacha", "scp, chacha20-poly1305 (default)", "chacha20-poly1305@openssh.com", root))
    if want("rsync-aes"):
        cands.append(Rsync("rsync-aes", "rsync over ssh, aes128-gcm", "aes128-gcm@openssh.com", root))
    if want("sendme"):
        if args.sendme and Path(args.sendme).exists():
            cands.append(Sendme(args.sendme, root))
        else:
            skipped["sendme"] = args.sendme_note or "not installed"
    if want("wormhole"):
        if args.wormhole_venv and (Path(args.wormhole_venv) / "bin" / "wormhole").exists():
            cands.append(Wormhole(Path(args.wormhole_venv), root))
        else:
            skipped["wormhole"] = args.wormhole_note or "not installed"
    return cands, skipped


def cmd_suite(args) -> int:
    args.loadavg_at_start = os.getloadavg()
    root = Path(args.root)
    src_root = root / "src"
    quick = args.quick
    wanted = args.workloads.split(",")
    wls = make_workloads(src_root, quick, wanted)
    tools, skipped = build_tools(args, root / "work")
    runs_n = args.runs
    timeout = 120 if quick else 300

    active: list[Tool] = []
    for t in tools:
        try:
            t.setup(None)
            active.append(t)
        except (Failed, OSError, subprocess.SubprocessError) as e:
            skipped[t.name] = f"setup failed: {e}"
            log(f"skipping {t.name}: {e}")

    raw: list[dict] = []
    try:
        for rep in range(runs_n):
            for wk, wl in wls.items():
                ts = [t for t in active if wk in t.workloads]
                k = rep % len(ts) if ts else 0
                order = ts[k:] + ts[:k]  # rotate: A/B interleaved, a different tool first each repetition
                for t in order:
                    dst = root / "recv" / t.name
                    shutil.rmtree(dst, ignore_errors=True)
                    dst.mkdir(parents=True)
                    rec = {"tool": t.name, "workload": wk, "rep": rep}
                    try:
                        WINDOW.clear()
                        r = t.run(wl, dst, timeout)
                        # CPU used by everything else on the machine during the timed section
                        # (CPU accounting ticks are 10 ms: meaningless for very short runs)
                        if {"b0", "b1"} <= WINDOW.keys() and WINDOW["w1"] - WINDOW["w0"] >= 0.25:
                            r["others_cpu_share"] = max(
                                0.0, (WINDOW["b1"] - WINDOW["b0"]) - (r.get("cpu_seconds") or 0)
                            ) / ((WINDOW["w1"] - WINDOW["w0"]) * (os.cpu_count() or 1))
                        if not r.get("verified_internally"):
                            verify(wl, dst / wl.name)
                        rec.update(r, ok=True)
                        log(f"rep {rep + 1}/{runs_n} {wk:6} {t.name:14} {r['seconds']:8.3f} s "
                            f"{wl.bytes / MiB / r['seconds']:8.1f} MiB/s")
                    except (Failed, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                        rec.update(ok=False, error=str(e))
                        log(f"rep {rep + 1}/{runs_n} {wk:6} {t.name:14} FAILED: {e}")
                    finally:
                        shutil.rmtree(dst, ignore_errors=True)
                    raw.append(rec)
    finally:
        for t in active:
            try:
                t.teardown()
            except Exception as e:  # noqa: BLE001
                log(f"teardown {t.name}: {e}")

    summary: dict = {}
    for wk, wl in wls.items():
        summary[wk] = {}
        for t in active:
            if wk in t.workloads:
                summary[wk][t.name] = summarize([r for r in raw if r["tool"] == t.name and r["workload"] == wk], wl)
        # ratios: lanshare speed / baseline speed = baseline median s / lanshare median s
        for ln in ("lanshare-quic", "lanshare-tcp"):
            ls = summary[wk].get(ln, {}).get("median_s")
            if not ls:
                continue
            for name, s in summary[wk].items():
                if s.get("median_s"):
                    s.setdefault("ratio", {})[ln] = s["median_s"] / ls

    extras = {}
    if args.extras and any(t.name == "lanshare-quic" for t in active):
        try:
            extras = lanshare_extras(args, args.share, root / "work", src_root, quick, summary)
        except (Failed, OSError, subprocess.SubprocessError) as e:
            extras = {"error": str(e)}
            log(f"lanshare extras FAILED: {e}")

    doc = {
        "kind": "lanshare-bench",
        "meta": meta(args),
        "workloads": {k: w.to_json() for k, w in wls.items()},
        "tools": {t.name: {"label": t.label, "note": t.note, "workloads": sorted(t.workloads)} for t in active},
        "skipped_tools": skipped,
        "summary": summary,
        "runs": raw,
        "extras": extras,
    }
    doc["targets"] = targets(doc)
    Path(args.out).write_text(json.dumps(doc, indent=1, sort_keys=True))
    print(report(doc))
    return 0


def meta(args) -> dict:
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": args.command_line,
        "quick": args.quick,
        "runs": args.runs,
        "git_commit": args.git_commit,
        "git_dirty": args.git_dirty,
        "kernel": os.uname().release,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "loadavg_at_start": getattr(args, "loadavg_at_start", None),
        "tmpfs": args.root,
        "storage": "all sources and receive directories on tmpfs (RAM): disk speed is not measured; "
                   "lanshare's fsync/syncfs before 'done' is therefore cheap here",
        "network": "network namespace with only loopback (127.0.0.1); nothing on the real network",
        "memory": getattr(args, "memory_note", ""),
        "versions": {
            "share": sh([args.share, "--version"]),
            "ssh": sh(["bash", "-c", "ssh -V 2>&1"]),
            "rsync": (sh(["rsync", "--version"]) or "").split("\n")[0],
            "socat": (sh(["socat", "-V"]) or "").split("\n")[1:2],
        },
    }


# --------------------------------------------------------------------------- targets and report


WL_ORDER = ("large", "small", "medium")


def ordered(summary: dict):
    return sorted(summary.items(), key=lambda kv: WL_ORDER.index(kv[0]) if kv[0] in WL_ORDER else 99)


def targets(doc) -> list[dict]:
    S = doc.get("summary", {})
    ex = doc.get("extras", {})
    lk = doc.get("link", {})
    out = []

    def add(what, value, target, ok, unit=""):
        out.append({"target": what, "value": value, "goal": target, "met": ok, "unit": unit})

    def med(wk, tool):
        return S.get(wk, {}).get(tool, {}).get("median_s")

    def mibs(wk, tool):
        return S.get(wk, {}).get(tool, {}).get("mib_s")

    q, t = mibs("large", "lanshare-quic"), mibs("large", "lanshare-tcp")
    big = doc.get("workloads", {}).get("large", {}).get("label", "1 GiB")
    if q:
        add(f"{big} over QUIC", q, "≥ 800 MiB/s", q >= 800, "MiB/s")
        scp = mibs("large", "scp-aes")
        if scp:
            add(f"QUIC ÷ scp aes128-gcm ({big})", q / scp, "≥ 2×", q / scp >= 2, "×")
        ceils = [c for c in (mibs("large", "quinn-ceiling"), mibs("large", "quinn-raw")) if c]
        if ceils:
            ceil = max(ceils)
            add(f"QUIC ÷ quinn ceiling, the faster mode ({big})", q / ceil, "≥ 0.75", q / ceil >= 0.75, "×")
    if t:
        add(f"{big} over TCP fallback", t, "≥ 900 MiB/s", t >= 900, "MiB/s")
    wlabel = {k: w["label"] for k, w in doc.get("workloads", {}).items()}
    for tool in ("lanshare-quic", "lanshare-tcp"):
        m = med("small", tool)
        if m:
            add(f"{wlabel['small']}, {tool}", m, "≤ 0.35 s", m <= 0.35, "s")
            r = med("small", "rsync-aes")
            if r:
                add(f"{wlabel['small']}, rsync ÷ {tool}", r / m, "≥ 4×", r / m >= 4, "×")
        m = med("medium", tool)
        if m:
            add(f"{wlabel['medium']}, {tool}", m, "≤ 0.4 s", m <= 0.4, "s")
    lat = ex.get("latency_1byte", {}).get("auto")
    if lat:
        add("1-byte send to a known peer (auto)", lat["median_ms"], "≤ 30 ms", lat["median_ms"] <= 30, "ms")
    for tool in ("lanshare-quic", "lanshare-tcp"):
        s = S.get("large", {}).get(tool, {})
        for side in ("send", "recv"):
            v = s.get(f"rss_{side}_peak_mib")
            if v:
                add(f"peak RSS, {big}, {tool}, {side} daemon", v, "≤ 64 MiB", v <= 64, "MiB")
    for t, r in (ex.get("rss_4gib") or {}).items():
        if not isinstance(r, dict) or not r.get("ok"):
            continue
        for side in ("send", "recv"):
            v4 = r[f"rss_{side}_kib"] / 1024
            v1 = r.get(f"rss_{side}_1gib_mib")
            if v1:
                add(f"peak RSS 4 GiB ÷ 1 GiB, lanshare-{t}, {side}", v4 / v1, "0.9–1.1", 0.9 <= v4 / v1 <= 1.1, "×")
            add(f"peak RSS, 4 GiB, lanshare-{t}, {side} daemon", v4, "≤ 64 MiB", v4 <= 64, "MiB")
    idle = ex.get("idle_rss_kib")
    if idle:
        for side, v in idle.items():
            if v:
                add(f"idle daemon RSS ({side})", v / 1024, "≤ 16 MiB", v / 1024 <= 16, "MiB")
    for t in ("lanshare-quic", "lanshare-tcp"):
        s = lk.get("summary", {}).get(t, {})
        if s.get("link_fraction"):
            add(f"1 Gbit/s link, {t}", s["link_fraction"] * 100, "≥ 93 %", s["link_fraction"] >= 0.93, "%")
    return out


def report(doc) -> str:
    L = []
    m = doc.get("meta", {})
    L.append(f"## lanshare benchmark ({m.get('timestamp')}, {'QUICK, ' if m.get('quick') else ''}"
             f"{m.get('runs')} rep(s), commit {m.get('git_commit')}{' +dirty' if m.get('git_dirty') else ''})")
    L.append("")
    la = m.get("loadavg_at_start")
    L.append(f"Machine: {m.get('cpu')}, {m.get('cores')} cores, Linux {m.get('kernel')}; load average "
             f"{la[0] if la else '?'} at the start, {(m.get('loadavg_at_end') or ['?'])[0]} at the end. "
             f"Storage: {m.get('storage')}. Network: {m.get('network')}."
             + (f" Memory: {m['memory']}." if m.get("memory") else ""))
    L.append("")
    for wk, tools in ordered(doc.get("summary", {})):
        wl = doc["workloads"][wk]
        L.append(f"### {wl['label']} ({wl['bytes'] / MiB:.0f} MiB, {wl['files']} file(s))")
        L.append("")
        L.append("| tool | ok | median s | min–max s | MiB/s | files/s | CPU s/GiB | peak RSS send / recv MiB "
                 "| QUIC ÷ this | TCP ÷ this | others' CPU |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, s in sorted(tools.items(), key=lambda kv: kv[1].get("median_s") or 1e9):
            label = doc["tools"].get(name, {}).get("label", name).replace("|", "\\|")
            if not s.get("median_s"):
                L.append(f"| {label} | 0/{s['runs']} | FAILED: {(s['failed'] or ['?'])[0][:80]} |||||||| ")
                continue
            r = s.get("ratio", {})
            L.append(
                f"| {label} | {s['ok_runs']}/{s['runs']} | {fmt_s(s['median_s'])} | {fmt_s(s['min_s'])}–{fmt_s(s['max_s'])} "
                f"| {s['mib_s']:.0f} | {s['files_s']:.0f} | {fmt(s.get('cpu_s_per_gib'), '.2f')} "
                f"| {fmt(s.get('rss_send_peak_mib'), '.1f')} / {fmt(s.get('rss_recv_peak_mib'), '.1f')} "
                f"| {fmt(r.get('lanshare-quic'), '.2f')} | {fmt(r.get('lanshare-tcp'), '.2f')} "
                f"| {fmt(s['others_cpu_share'] * 100, '.0f') + ' %' if s.get('others_cpu_share') is not None else '–'} |"
            )
        L.append("")
    if doc.get("summary"):
        L.append("`QUIC ÷ this` = lanshare-QUIC's speed ÷ this tool's speed = this tool's median seconds ÷ "
                 "lanshare-QUIC's median seconds (> 1: lanshare is that many times faster; same for TCP). lanshare's RSS columns are the two daemons' VmHWM "
                 "(fresh daemons each run, after one 1-byte warm-up send); baselines show the client and receiving process (ssh: client only). "
                 "`others' CPU` = median share of the machine's cores used by other processes during this tool's "
                 "runs (shown for runs of 0.25 s or more): high values mean the figures are depressed by a busy machine.")
        L.append("")
    sk = doc.get("skipped_tools") or {}
    if sk:
        L.append("Skipped: " + "; ".join(f"**{k}**: {v}" for k, v in sk.items()))
        L.append("")
    ex = doc.get("extras") or {}
    if ex:
        L.append("### lanshare extras")
        L.append("")
        for t, v in (ex.get("latency_1byte") or {}).items():
            L.append(f"- 1-byte file, `share send` start to exit 0 ({t}, {v['runs']} runs, went over "
                     f"{'/'.join(v['transports'])}): median **{v['median_ms']:.1f} ms** (min {v['min_ms']:.1f}, "
                     f"max {v['max_ms']:.1f}; JSON `seconds` median {v['json_median_ms']:.1f} ms)")
        if ex.get("idle_rss_kib"):
            i = ex["idle_rss_kib"]
            L.append(f"- idle daemon RSS (2 s after start): sender {i['sender'] / 1024:.1f} MiB, "
                     f"receiver {i['receiver'] / 1024:.1f} MiB")
        if ex.get("rss_after_latency_kib"):
            i = ex["rss_after_latency_kib"]
            L.append(f"- daemon RSS after the latency runs: sender {i['sender'] / 1024:.1f} MiB, "
                     f"receiver {i['receiver'] / 1024:.1f} MiB")
        r4 = ex.get("rss_4gib")
        if isinstance(r4, dict):
            if "skipped" in r4:
                L.append(f"- 4 GiB RSS check skipped: {r4['skipped']}")
            for t, r in r4.items():
                if t == "skipped":
                    continue
                if r.get("ok"):
                    L.append(f"- 4 GiB over {t}: {r['seconds']:.2f} s ({r['mib_s']:.0f} MiB/s), peak RSS send "
                             f"{r['rss_send_kib'] / 1024:.1f} MiB / recv {r['rss_recv_kib'] / 1024:.1f} MiB (1 GiB: "
                             f"{fmt(r.get('rss_send_1gib_mib'), '.1f')} / {fmt(r.get('rss_recv_1gib_mib'), '.1f')})")
                else:
                    L.append(f"- 4 GiB over {t}: FAILED {r.get('error')}")
        if ex.get("error"):
            L.append(f"- extras failed: {ex['error']}")
        L.append("")
    lk = doc.get("link")
    if lk:
        L.append(f"### Link rate: {lk['description']}")
        L.append("")
        L.append("| tool | ok | median s | min–max s | MiB/s | Mbit/s | of link | ÷ iperf3 |")
        L.append("|---|---|---|---|---|---|---|---|")
        for name, s in lk["summary"].items():
            if not s.get("median_s"):
                L.append(f"| {name} | 0/{s['runs']} | FAILED: {(s['failed'] or ['?'])[0][:80]} ||||||")
                continue
            L.append(f"| {name} | {s['ok_runs']}/{s['runs']} | {fmt_s(s['median_s'])} | {fmt_s(s['min_s'])}–"
                     f"{fmt_s(s['max_s'])} | {s['mib_s']:.1f} | {s['mbit_s']:.0f} | {s['link_fraction'] * 100:.1f} % "
                     f"| {fmt(s.get('vs_iperf3'), '.3f')} |")
        L.append("")
    tg = doc.get("targets") or []
    if tg:
        L.append("### Targets (issue 8)")
        L.append("")
        if m.get("quick"):
            L.append("QUICK run: the workloads are smaller than the issue's, so these rows only show that "
                     "the checks work; they are not the issue's figures.")
            L.append("")
        L.append("| target | measured | goal | met |")
        L.append("|---|---|---|---|")
        for t in tg:
            v = t["value"]
            vs = f"{v:.2f}" if t["unit"] in ("×",) else f"{v:.3f}" if t["unit"] == "s" else f"{v:.1f}"
            L.append(f"| {t['target']} | {vs} {t['unit']} | {t['goal']} | {'yes' if t['met'] else '**no**'} |")
        L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------- link benchmark


def cmd_link(args) -> int:
    args.loadavg_at_start = os.getloadavg()
    root = Path(args.root)
    src_root = root / "src"
    size = 128 * MiB if args.quick else GiB
    wl = Workload("link", f"1 file of {size // MiB} MiB", "link.bin", "file", 1, size, src_root)
    src_root.mkdir(parents=True, exist_ok=True)
    if not wl.path.exists() or wl.path.stat().st_size != size:
        log(f"creating {wl.path}")
        write_random(wl.path, size)
    nsb = ["ip", "netns", "exec", args.peer_ns]
    rate_bits = args.rate_mbit * 1e6
    timeout = max(60, size * 8 / rate_bits * 6)
    work = root / "link-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sender = Daemon(args.share, work, "link-send", args.addr_a)
    receiver = Daemon(args.share, work, "link-recv", args.addr_b, prefix=nsb)
    L = Lanshare("quic", args.share, work)
    raw = []
    try:
        sender.start(work / "send-dl")
        receiver.start(work / "dl")
        peer = f"{args.addr_b}:{receiver.port}"
        tools = ["iperf3", "lanshare-quic", "lanshare-tcp"]
        for rep in range(args.runs):
            k = rep % len(tools)
            for tool in tools[k:] + tools[:k]:
                rec = {"tool": tool, "rep": rep}
                try:
                    if tool == "iperf3":
                        port = free_port()
                        srv = spawn(nsb + ["iperf3", "-s", "-1", "-B", args.addr_b, "-p", port])
                        try:
                            wait_until(lambda: listening(port, ns=args.peer_ns), 10, "iperf3 server", 0.05)
                            t0 = time.perf_counter()
                            cl = spawn(["iperf3", "-c", args.addr_b, "-p", port, "-n", size, "-J"],
                                       stdout=subprocess.PIPE)
                            t1, rc, _ = wait_rusage(cl, timeout)
                            out = cl.stdout.read().decode()
                        finally:
                            stop(srv)
                        if rc != 0:
                            raise Failed(f"iperf3 exited {rc}: {out[-300:]}")
                        j = json.loads(out)["end"]
                        recvd = j["sum_received"]
                        rec.update(ok=True, seconds=recvd["seconds"], bytes=recvd["bytes"],
                                   wall_seconds=t1 - t0, retransmits=j["sum_sent"].get("retransmits"))
                    else:
                        t = tool.split("-")[1]
                        for f in (work / "dl").iterdir():
                            f.unlink()
                        secs, doc, _ = L.send(wl.path, timeout, transport=t, sender=sender, peer=peer)
                        verify(wl, work / "dl" / wl.name)
                        rec.update(ok=True, seconds=secs, bytes=size, json_seconds=doc.get("seconds"))
                    bps = rec["bytes"] * 8 / rec["seconds"]
                    log(f"link rep {rep + 1}/{args.runs} {tool:14} {rec['seconds']:.2f} s {bps / 1e6:.0f} Mbit/s")
                except (Failed, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                    rec.update(ok=False, error=str(e))
                    log(f"link rep {rep + 1}/{args.runs} {tool} FAILED: {e}")
                raw.append(rec)
    finally:
        receiver.stop()
        sender.stop()
    summ = {}
    for tool in ("iperf3", "lanshare-quic", "lanshare-tcp"):
        rs = [r for r in raw if r["tool"] == tool]
        ok = [r for r in rs if r.get("ok")]
        s = {"runs": len(rs), "ok_runs": len(ok), "failed": [r.get("error") for r in rs if not r.get("ok")]}
        if ok:
            secs = [r["seconds"] for r in ok]
            med = statistics.median(secs)
            nbytes = ok[0]["bytes"]
            s.update(median_s=med, min_s=min(secs), max_s=max(secs), mib_s=nbytes / MiB / med,
                     mbit_s=nbytes * 8 / med / 1e6, link_fraction=nbytes * 8 / med / rate_bits)
        summ[tool] = s
    ip = summ["iperf3"].get("mbit_s")
    for s in summ.values():
        if ip and s.get("mbit_s"):
            s["vs_iperf3"] = s["mbit_s"] / ip
    md = meta(args)
    md["network"] = "two network namespaces joined by a veth pair (10.231.8.1 <-> 10.231.8.2), see below"
    doc = {
        "kind": "lanshare-bench-link",
        "meta": md,
        "description": args.description,
        "rate_mbit": args.rate_mbit,
        "bytes": size,
        "summary": summ,
        "runs": raw,
        "note": "lanshare time = `share send` start to exit 0 (connect, hash, transfer, verify, fsync, rename); "
                "iperf3 = its receiver-side seconds for the same byte count (memory to memory, no crypto)",
    }
    Path(args.out).write_text(json.dumps(doc, indent=1, sort_keys=True))
    return 0


# --------------------------------------------------------------------------- disk benchmark


class Throttle:
    """The write limit of the benchmark's loop device, written through a descriptor run.sh opened
    (inside the network namespaces /sys/fs/cgroup is not mounted): cgroup v1's
    `blkio.throttle.write_bps_device` of the root blkio cgroup, which covers every writer including
    the kernel's flusher threads, or cgroup v2's `io.max` of the cgroup this benchmark runs in (v2
    charges writeback to the cgroup that dirtied the pages)."""

    def __init__(self, args):
        self.device = args.device
        self.fd = args.throttle_fd
        self.v2 = args.throttle_format == "v2"
        self.where = args.throttle_where

    def set(self, mib_s: float | None) -> None:
        if self.v2:
            line = f"{self.device} wbps={int(mib_s * MiB) if mib_s else 'max'}\n"
        else:
            line = f"{self.device} {int(mib_s * MiB) if mib_s else 0}\n"
        os.pwrite(self.fd, line.encode(), 0)

    def describe(self) -> str:
        if self.v2:
            return f"cgroup v2: `{self.device} wbps=<bytes/s>` in {self.where} (the benchmark runs in that cgroup)"
        return f"cgroup v1: `{self.device} <bytes/s>` in {self.where} (root blkio cgroup: every writer)"


def run_timed(cmd, timeout: float, **kw):
    """Runs `cmd` to completion; returns (seconds, exit code)."""
    mark_start()
    t0 = time.perf_counter()
    p = spawn(cmd, **kw)
    t1, rc, _ = wait_rusage(p, timeout)
    mark_end()
    return t1 - t0, rc


def busy_share() -> float | None:
    """Share of all cores busy (everything, this benchmark included) in the last timed section."""
    if {"b0", "b1"} <= WINDOW.keys() and WINDOW["w1"] - WINDOW["w0"] >= 0.25:
        return (WINDOW["b1"] - WINDOW["b0"]) / ((WINDOW["w1"] - WINDOW["w0"]) * (os.cpu_count() or 1))
    return None


def empty_dir(d: Path) -> None:
    """Empties `d` (creating it if needed) without replacing it: a daemon holds its download
    directory open and keeps writing into the one it opened."""
    d.mkdir(parents=True, exist_ok=True)
    for e in d.iterdir():
        if e.is_dir() and not e.is_symlink():
            shutil.rmtree(e)
        else:
            e.unlink()


class DiskBench:
    """The workloads of issue 17 on a throttled disk behind a tbf-shaped link (see bench/README.md)."""

    def __init__(self, args):
        self.args = args
        self.disk = Path(args.disk)
        self.nsb = ["ip", "netns", "exec", args.peer_ns]
        self.throttle = Throttle(args)
        self.work = Path(args.root) / "disk-work"
        empty_dir(self.work)
        self.raw: list[dict] = []
        self.rss: dict = {}

    def sync_disk(self) -> None:
        subprocess.run(["sync", "-f", str(self.disk)], timeout=600)

    # ---- the tools; each returns seconds (raises Failed)

    def lanshare(self, daemons, wl: Workload, transport: str, timeout: float) -> float:
        sender, receiver, dl = daemons
        empty_dir(dl)
        self.sync_disk()
        L = Lanshare(transport, self.args.share, self.work)
        secs, doc, _ = L.send(wl.path, timeout, transport=transport, sender=sender,
                              peer=f"{self.args.addr_b}:{receiver.port}")
        if doc.get("files") != wl.files or doc.get("bytes") != wl.bytes:
            raise Failed(f"share send reported {doc.get('files')} files / {doc.get('bytes')} B")
        verify(wl, dl / wl.name)
        return secs

    def nc_link(self, wl: Workload, timeout: float) -> float:
        """The link alone: nc into /dev/null on the receiving side."""
        port = free_port()
        recv = spawn(self.nsb + ["sh", "-c", f"exec nc -l {self.args.addr_b} {port} > /dev/null"])
        try:
            wait_until(lambda: listening(port, ns=self.args.peer_ns), 10, "nc to listen", 0.05)
            with open(wl.path, "rb") as fi:
                secs, rc = run_timed(["nc", "-N", self.args.addr_b, port], timeout, stdin=fi)
            _, rc_r, _ = wait_rusage(recv, 30)
        finally:
            stop(recv)
        if rc != 0 or rc_r != 0:
            raise Failed(f"nc exited {rc}/{rc_r}")
        return secs

    def dd_disk(self, wl: Workload, timeout: float) -> float:
        """The disk alone: dd from the source (tmpfs) with conv=fsync."""
        out = self.disk / "dd.bin"
        if out.exists():
            out.unlink()
        self.sync_disk()
        secs, rc = run_timed(["dd", f"if={wl.path}", f"of={out}", "bs=4M",
                                                        "conv=fsync", "status=none"], timeout)
        if rc != 0:
            raise Failed(f"dd exited {rc}")
        out.unlink()
        return secs

    def tar_nc_sync(self, wl: Workload, timeout: float) -> float:
        """tar | nc | tar over the link, then `sync -f` of the receiving file system."""
        dst = self.disk / "tar"
        empty_dir(dst)
        self.sync_disk()
        port = free_port()
        recv = spawn(self.nsb + ["bash", "-c", f"set -o pipefail; nc -l {self.args.addr_b} {port} | tar -x -C '{dst}'"])
        try:
            wait_until(lambda: listening(port, ns=self.args.peer_ns), 10, "nc to listen", 0.05)
            mark_start()
            t0 = time.perf_counter()
            send = spawn(["bash", "-c", f"set -o pipefail; tar -c -C '{wl.path.parent}' '{wl.name}' | nc -N {self.args.addr_b} {port}"])
            _, rc_s, _ = wait_rusage(send, timeout)
            _, rc_r, _ = wait_rusage(recv, timeout)
            subprocess.run(["sync", "-f", str(dst)], timeout=timeout, check=True)
            t1 = time.perf_counter()
            mark_end()
        finally:
            stop(recv)
        if rc_s != 0 or rc_r != 0:
            raise Failed(f"tar|nc exited {rc_s}/{rc_r}")
        verify(wl, dst / wl.name)
        return t1 - t0

    def dirty(self) -> None:
        """Another program's unwritten data: 1 GiB written into the same file system, no sync,
        then `--dirty-settle` seconds for the kernel's own writeback to get going, so that every
        tool meets the same state (a journal commit may have to wait for the part of that data
        the kernel has started to write: ext4's data=ordered)."""
        other = self.disk / "other-program.bin"
        subprocess.run(["dd", "if=/dev/zero", f"of={other}", "bs=1M", f"count={self.args.dirty_mib}",
                        "status=none"], check=True, timeout=300)
        time.sleep(self.args.dirty_settle)

    def clean(self) -> None:
        """Drops the other program's file before it was written back (its dirty pages go with it)."""
        other = self.disk / "other-program.bin"
        if other.exists():
            other.unlink()
        self.sync_disk()

    def handmade(self, wl: Workload, timeout: float) -> float:
        """Writing, fdatasync-ing, renaming and directory-syncing the file by hand (timed inside)."""
        dst = self.disk / "hand"
        empty_dir(dst)
        out = subprocess.run([sys.executable, __file__, "handmade", str(wl.path), str(dst)],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise Failed(f"handmade write failed: {out.stderr.strip()[:300]}")
        return float(out.stdout.strip())

    def syncfs(self, wl: Workload, timeout: float) -> float:
        """What the receiver did before issue 17: sync the whole file system (for context)."""
        secs, rc = run_timed(["sync", "-f", str(self.disk)], timeout)
        if rc != 0:
            raise Failed(f"sync exited {rc}")
        return secs

    # ---- scenarios

    def daemons(self, tag: str):
        d = self.work / tag
        empty_dir(d)
        sender = Daemon(self.args.share, d, "disk-send", self.args.addr_a)
        receiver = Daemon(self.args.share, d, "disk-recv", self.args.addr_b,
                          prefix=self.nsb)
        dl = self.disk / "dl"
        sender.start(d / "send-dl")
        receiver.start(dl)
        warm = d / "warm-up"
        warm.write_bytes(b"w")
        Lanshare("quic", self.args.share, d).send(warm, 30, transport="quic", sender=sender,
                                                  peer=f"{self.args.addr_b}:{receiver.port}")
        return sender, receiver, dl

    def scenario(self, key: str, label: str, rate: float | None, wls: list, tools: list, extra=None) -> None:
        log(f"disk scenario {label}")
        self.throttle.set(rate)
        try:
            for wl in wls:
                timeout = max(120, wl.bytes / MiB / (rate or 100) * 8)
                daemons = self.daemons(f"{key}-{wl.key}")
                try:
                    runners = {
                        "lanshare-quic": lambda w=wl: self.lanshare(daemons, w, "quic", timeout),
                        "lanshare-tcp": lambda w=wl: self.lanshare(daemons, w, "tcp", timeout),
                        "nc": lambda w=wl: self.nc_link(w, timeout),
                        "dd": lambda w=wl: self.dd_disk(w, timeout),
                        "tar-nc-sync": lambda w=wl: self.tar_nc_sync(w, timeout),
                        "handmade": lambda w=wl: self.handmade(w, timeout),
                        "syncfs": lambda w=wl: self.syncfs(w, timeout),
                    }
                    for rep in range(self.args.runs):
                        k = rep % len(tools)
                        for tool in tools[k:] + tools[:k]:
                            rec = {"scenario": key, "workload": wl.key, "tool": tool, "rep": rep}
                            try:
                                if extra == "dirty":
                                    self.dirty()
                                WINDOW.clear()
                                secs = runners[tool]()
                                rec.update(ok=True, seconds=secs, busy=busy_share(), loadavg=os.getloadavg()[0])
                                log(f"  {label} {wl.key:8} rep {rep + 1}/{self.args.runs} {tool:14} {secs:8.3f} s")
                            except (Failed, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                                rec.update(ok=False, error=str(e))
                                log(f"  {label} {wl.key:8} rep {rep + 1}/{self.args.runs} {tool} FAILED: {e}")
                            finally:
                                if extra == "dirty":
                                    self.clean()
                            self.raw.append(rec)
                    self.rss[f"{key}/{wl.key}"] = proc_status_kib(daemons[1].pid, "VmHWM")
                finally:
                    daemons[1].stop()
                    daemons[0].stop()
                    empty_dir(daemons[2])
        finally:
            self.throttle.set(None)


def disk_workloads(src_root: Path, quick: bool) -> dict:
    src_root.mkdir(parents=True, exist_ok=True)
    sizes = {"512m": 512 * MiB, "1g": GiB} if not quick else {"512m": 128 * MiB, "1g": 256 * MiB}
    wls = {}
    for key, size in sizes.items():
        w = Workload(key, f"1 file of {size // MiB} MiB", f"disk-{size // MiB}m.bin", "file", 1, size, src_root)
        if not w.path.exists() or w.path.stat().st_size != size:
            log(f"creating {w.path}")
            write_random(w.path, size)
        wls[key] = w
    n = 200 if quick else 2000
    w = Workload("small", f"{n} files of 4 KiB", f"disk-small{n}", "tree", n, n * 4096, src_root)
    if not w.path.exists():
        write_small_tree(w.path, n)
    wls["small"] = w
    w = Workload("1m", "1 file of 1 MiB", "disk-1m.bin", "file", 1, MiB, src_root)
    if not w.path.exists():
        write_random(w.path, MiB)
    wls["1m"] = w
    return wls


def summarize_disk(raw: list) -> dict:
    out: dict = {}
    for r in raw:
        out.setdefault(r["scenario"], {}).setdefault(r["workload"], {}).setdefault(r["tool"], []).append(r)
    summ: dict = {}
    for sc, wls in out.items():
        for wk, tools in wls.items():
            for tool, rs in tools.items():
                ok = [r["seconds"] for r in rs if r.get("ok")]
                s = {"runs": len(rs), "ok_runs": len(ok), "failed": [r.get("error") for r in rs if not r.get("ok")]}
                if ok:
                    s.update(median_s=statistics.median(ok), min_s=min(ok), max_s=max(ok))
                busy = [r["busy"] for r in rs if r.get("busy") is not None]
                if busy:
                    s["busy"] = statistics.median(busy)
                summ.setdefault(sc, {}).setdefault(wk, {})[tool] = s
    return summ


def disk_targets(doc: dict) -> list:
    summ, rows = doc["summary"], []

    def med(sc, wk, tool):
        return summ.get(sc, {}).get(wk, {}).get(tool, {}).get("median_s")

    def add(what, value, limit, unit="s"):
        ok = value is not None and limit is not None and value <= limit
        rows.append({"target": what, "value": value, "limit": limit, "unit": unit, "met": ok})

    def both(sc, wk, what, limit):
        """A row per transport: lanshare's median in scenario `sc`, workload `wk`, against `limit`."""
        for t in ("quic", "tcp"):
            v = med(sc, wk, f"lanshare-{t}")
            if v is not None or limit is not None:
                add(what.replace("{t}", t.upper()), v, limit)

    for sc, label in (("disk100", "100 MiB/s"), ("disk30", "30 MiB/s")):
        for wk in ("512m", "1g"):
            nc, dd = med(sc, wk, "nc"), med(sc, wk, "dd")
            base = dd if sc == "disk30" else (max(nc, dd) if nc and dd else None)
            what = "disk alone" if sc == "disk30" else "max(link alone, disk alone)"
            both(sc, wk, f"{doc['workloads'][wk]['label']}, {label} disk, {{t}} <= 1.10 x {what}",
                 base * 1.10 if base else None)
    tar = med("disk100", "small", "tar-nc-sync")
    both("disk100", "small", f"{doc['workloads']['small']['label']}, 100 MiB/s disk, {{t}} <= 1.5 x "
         "tar|nc|tar + sync -f", tar * 1.5 if tar else None)
    hand = med("dirty", "1m", "handmade")
    both("dirty", "1m", f"1 MiB with {doc['dirty_mib']} MiB of another program's data unwritten, {{t}} "
         "<= write+fdatasync+rename+dirsync by hand + 0.3 s", hand + 0.3 if hand is not None else None)
    peak = max((v for v in doc.get("receiver_peak_rss_kib", {}).values() if v), default=None)
    if peak is not None:
        add("receiver daemon peak RSS (max over the scenarios) <= 64 MiB", peak / 1024, 64, "MiB")
    return rows


def disk_report(doc: dict) -> str:
    m = doc["meta"]
    lines = [
        f"# lanshare disk benchmark {m['timestamp']}",
        "",
        f"- command: `{m['command']}`; commit {m['git_commit']}{' (dirty)' if m['git_dirty'] else ''}; "
        f"{m['runs']} repetition(s), tools interleaved",
        f"- machine: {m['cpu']}, {m['cores']} cores, kernel {m['kernel']}; load average at start "
        f"{fmt(m['loadavg_at_start'][0] if m.get('loadavg_at_start') else None)}, at end {fmt(m['loadavg_at_end'][0])}",
        f"- link: {doc['link']}",
        f"- disk: {doc['disk']}",
        f"- throttle: {doc['throttle']}",
        f"- memory: {m.get('memory') or '–'}",
        "",
        "Seconds from start to finish (lanshare: `share send` start to exit 0, i.e. received, verified, "
        "durable and renamed; nc: sender start to both ends done; dd: with conv=fsync; tar|nc|tar: "
        "until `sync -f` of the receiving file system returned; by hand: timed inside the writer). "
        "busy = share of all cores busy during the run, this benchmark included.",
        "",
    ]
    labels = {"disk100": "100 MiB/s disk", "disk30": "30 MiB/s disk", "dirty": "100 MiB/s disk, another "
              f"program has {doc['dirty_mib']} MiB unwritten", "unthrottled": "unthrottled disk (the VM's own)"}
    for sc, wls in doc["summary"].items():
        lines += [f"## {labels.get(sc, sc)}", "", "| workload | tool | ok | median s | min–max s | MiB/s | busy |",
                  "|---|---|---|---|---|---|---|"]
        for wk, tools in wls.items():
            wl = doc["workloads"][wk]
            for tool, s in tools.items():
                med = s.get("median_s")
                rate = fmt(wl["bytes"] / MiB / med, ".0f") if med and wl["bytes"] >= 64 * MiB else "–"
                rng = f"{fmt(s.get('min_s'), '.3f')}–{fmt(s.get('max_s'), '.3f')}" if med else "–"
                busy = f"{s['busy'] * 100:.0f} %" if s.get("busy") is not None else "–"
                lines.append(f"| {wl['label']} | {tool} | {s['ok_runs']}/{s['runs']} | {fmt(med, '.3f')} | {rng} "
                             f"| {rate} | {busy} |")
        lines.append("")
    lines += ["## Targets (issue 17)", "", "| target | measured | limit | met |", "|---|---|---|---|"]
    for t in doc["targets"]:
        u = t["unit"]
        lines.append(f"| {t['target']} | {fmt(t['value'], '.3f')} {u} | {fmt(t['limit'], '.3f')} {u} | "
                     f"{'yes' if t['met'] else '**no**'} |")
    lines.append("")
    rss = ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in doc.get("receiver_peak_rss_kib", {}).items() if v)
    lines += [f"Receiver daemon peak RSS (VmHWM) per scenario/workload: {rss or '–'}.", ""]
    return "\n".join(lines)


def cmd_disk(args) -> int:
    args.loadavg_at_start = os.getloadavg()
    src_root = Path(args.root) / "src"
    wls = disk_workloads(src_root, args.quick)
    bench = DiskBench(args)
    big = [wls["512m"], wls["1g"]]
    scenarios = [s for s in args.scenarios.split(",") if s]
    try:
        if "disk100" in scenarios:
            bench.scenario("disk100", "100 MiB/s disk", 100, big, ["lanshare-quic", "lanshare-tcp", "nc", "dd"])
            bench.scenario("disk100", "100 MiB/s disk", 100, [wls["small"]],
                           ["lanshare-quic", "lanshare-tcp", "tar-nc-sync"])
        if "dirty" in scenarios:
            bench.scenario("dirty", "100 MiB/s disk + unwritten data", 100, [wls["1m"]],
                           ["lanshare-quic", "lanshare-tcp", "handmade", "syncfs"], extra="dirty")
        if "disk30" in scenarios:
            bench.scenario("disk30", "30 MiB/s disk", 30, big, ["lanshare-quic", "lanshare-tcp", "dd"])
        if "unthrottled" in scenarios:
            bench.scenario("unthrottled", "unthrottled disk", None, [wls["1g"]],
                           ["lanshare-quic", "lanshare-tcp", "nc", "dd"])
            bench.scenario("unthrottled", "unthrottled disk", None, [wls["small"]],
                           ["lanshare-quic", "lanshare-tcp", "tar-nc-sync"])
    finally:
        bench.throttle.set(None)
    md = meta(args)
    md["storage"] = args.disk_description
    md["network"] = args.link_description
    doc = {
        "kind": "lanshare-bench-disk",
        "meta": md,
        "link": args.link_description,
        "disk": args.disk_description,
        "throttle": bench.throttle.describe(),
        "dirty_mib": args.dirty_mib,
        "workloads": {k: w.to_json() for k, w in wls.items()},
        "summary": summarize_disk(bench.raw),
        "receiver_peak_rss_kib": bench.rss,
        "runs": bench.raw,
    }
    doc["targets"] = disk_targets(doc)
    Path(args.out).write_text(json.dumps(doc, indent=1, sort_keys=True))
    print(disk_report(doc))
    return 0


def cmd_handmade(args) -> int:
    """Writes `src` into `dir` by hand the durable way and prints the seconds it took."""
    data = Path(args.src).read_bytes()
    d = Path(args.dir)
    t0 = time.perf_counter()
    fd = os.open(d / ".partial", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.rename(d / ".partial", d / Path(args.src).name)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    print(f"{time.perf_counter() - t0:.6f}")
    return 0


# --------------------------------------------------------------------------- plot


def cmd_plot(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(Path(args.json).read_text())
    if doc.get("kind") == "lanshare-bench-link":
        doc = {"link": doc, "meta": {}}
    panels = [(wk, doc["workloads"][wk]["label"], tools) for wk, tools in ordered(doc.get("summary", {}))]
    if doc.get("link"):
        panels.append(("link", f"{doc['link'].get('rate_mbit', 1000):.0f} Mbit/s link (tbf)", doc["link"]["summary"]))
    if not panels:
        log("nothing to plot")
        return 1
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.2), squeeze=False)
    for ax, (wk, title, tools) in zip(axes[0], panels):
        key = "files_s" if wk == "small" else "mib_s"
        unit = "files/s" if wk == "small" else "MiB/s"
        items = [(n, s) for n, s in tools.items() if s.get(key)]
        items.sort(key=lambda kv: kv[1][key])
        names = [n for n, _ in items]
        vals = [s[key] for _, s in items]
        lo = [s[key] - s[key] * s["median_s"] / s["max_s"] for _, s in items]
        hi = [s[key] * s["median_s"] / s["min_s"] - s[key] for _, s in items]
        colors = ["tab:red" if n.startswith("lanshare") else "tab:gray" if n.startswith("quinn") else "tab:blue"
                  for n in names]
        ax.barh(names, vals, xerr=[lo, hi], color=colors, capsize=3)
        for i, v in enumerate(vals):
            ax.text(v + max(hi[i], 0), i, f" {v:.0f}", va="center", fontsize=8)
        ax.set_title(title)
        ax.set_xlabel(f"{unit} (median; whiskers = min..max)")
    m = doc.get("meta", {})
    fig.suptitle(f"lanshare benchmark {m.get('timestamp', '')} ({'quick, ' if m.get('quick') else ''}"
                 f"{m.get('runs', '?')} reps, tmpfs, loopback netns)")
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    log(f"wrote {args.png}")
    return 0


def cmd_wait_idle(args) -> int:
    """Waits (bounded) until other processes leave the machine nearly idle: busy < `--below` of
    one core over two consecutive 3 s windows. Exit 0 when idle, 1 on timeout (run goes on)."""
    end = time.monotonic() + args.timeout
    quiet = 0
    while time.monotonic() < end:
        b0 = machine_busy()
        time.sleep(3)
        busy = (machine_busy() - b0) / 3
        quiet = quiet + 1 if busy < args.below else 0
        if quiet >= 2:
            log(f"machine idle (busy {busy:.2f} cores)")
            return 0
        log(f"waiting for an idle machine: other processes use {busy:.2f} cores")
    return 1


def cmd_merge(args) -> int:
    """Puts a link result into a suite result (for --with-link) and re-renders the report."""
    suite = json.loads(Path(args.suite).read_text())
    suite["link"] = json.loads(Path(args.link).read_text())
    suite["targets"] = targets(suite)
    Path(args.suite).write_text(json.dumps(suite, indent=1, sort_keys=True))
    print(report(suite))
    return 0


def cmd_report(args) -> int:
    doc = json.loads(Path(args.json).read_text())
    if doc.get("kind") == "lanshare-bench-link":
        doc = {"link": doc, "meta": doc.get("meta", {})}
    doc["targets"] = targets(doc)
    print(report(doc))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite")
    s.add_argument("--root", required=True)
    s.add_argument("--share", required=True)
    s.add_argument("--ceiling", required=True)
    s.add_argument("--sendme")
    s.add_argument("--sendme-note")
    s.add_argument("--wormhole-venv")
    s.add_argument("--wormhole-note")
    s.add_argument("--only", default="")
    s.add_argument("--workloads", default="large,small,medium")
    s.add_argument("--extras", action=argparse.BooleanOptionalAction, default=True)
    s.add_argument("--no-4g", action="store_true")

    def run_options(parser):
        """Repetitions, output, and what the report says about the run."""
        parser.add_argument("--runs", type=int, default=3)
        parser.add_argument("--quick", action="store_true")
        parser.add_argument("--out", required=True)
        parser.add_argument("--command-line", default="")
        parser.add_argument("--git-commit", default="")
        parser.add_argument("--memory-note", default="")
        parser.add_argument("--git-dirty", action="store_true")

    def two_namespaces(parser):
        """Options of the benchmarks that run in namespace A and reach B over the shaped link."""
        parser.add_argument("--root", required=True)
        parser.add_argument("--share", required=True)
        parser.add_argument("--peer-ns", required=True)
        parser.add_argument("--addr-a", required=True)
        parser.add_argument("--addr-b", required=True)
        run_options(parser)

    run_options(s)

    k = sub.add_parser("link")
    two_namespaces(k)
    k.add_argument("--rate-mbit", type=float, default=1000)
    k.add_argument("--description", default="")
    p = sub.add_parser("plot")
    p.add_argument("json")
    p.add_argument("png")
    m = sub.add_parser("merge")
    m.add_argument("suite")
    m.add_argument("link")
    w = sub.add_parser("wait-idle")
    w.add_argument("--timeout", type=float, default=600)
    w.add_argument("--below", type=float, default=0.25)
    r = sub.add_parser("report")
    r.add_argument("json")
    d = sub.add_parser("disk")
    two_namespaces(d)
    d.add_argument("--disk", required=True, help="mount point of the throttled file system")
    d.add_argument("--device", required=True, help="MAJ:MIN of its block device")
    d.add_argument("--throttle-fd", type=int, required=True, help="open descriptor of the throttle file")
    d.add_argument("--throttle-format", choices=("v1", "v2"), required=True)
    d.add_argument("--throttle-where", default="", help="the throttle file, for the report")
    d.add_argument("--scenarios", default="disk100,dirty,disk30,unthrottled")
    d.add_argument("--dirty-mib", type=int, default=1024)
    d.add_argument("--dirty-settle", type=float, default=2.0)
    d.add_argument("--link-description", default="")
    d.add_argument("--disk-description", default="")
    h = sub.add_parser("handmade")
    h.add_argument("src")
    h.add_argument("dir")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        cleanup_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return {"suite": cmd_suite, "link": cmd_link, "plot": cmd_plot, "merge": cmd_merge,
                "report": cmd_report, "wait-idle": cmd_wait_idle, "disk": cmd_disk,
                "handmade": cmd_handmade}[args.cmd](args)
    finally:
        cleanup_all()


if __name__ == "__main__":
    sys.exit(main())
