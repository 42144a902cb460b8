#!/usr/bin/env python3
"""LocalSend benchmark (issue 19). Called by bench/run.sh --localsend / --with-localsend,
inside a loopback-only network namespace; not meant to be run by hand.

Three measurements, interleaved per repetition, on a tmpfs:

  upload   a 1 GiB upload into lanshare's LocalSend server from a fast client
           (curl --cert, with Content-Length; also chunked), timed from curl's
           start to its exit (the server answers the last upload only after
           the file is verified, synced and renamed); peak RSS (VmHWM) of the
           receiving daemon, fresh for every run.
  send     `share send localsend://127.0.0.1:PORT FILE` from a lanshare daemon
           into bench/localsend-sink, a LocalSend receiver that discards, timed
           from start to exit 0 (includes hashing the file for its sha256).
  native   the same 1 GiB native transfer (QUIC and TCP) with both daemons
           started with and without --localsend: LocalSend must not slow it.

Reuses bench.py's process, timing and memory helpers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench as B

TARGET_MIBS = 500
TARGET_RSS_MIB = 64


class LocalSendDaemon(B.Daemon):
    """A bench daemon with LocalSend on (HTTPS on a free port, no multicast)."""

    def start(self, download_dir: Path, localsend: bool = True) -> None:
        download_dir.mkdir(parents=True, exist_ok=True)
        self.sock.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.sock.parent, 0o700)
        if self.sock.exists():
            self.sock.unlink()
        log_fh = open(self.logf, "ab")
        cmd = [self.share, "daemon", "--name", self.name, "--no-mdns", "--bind", self.bind,
               "--port", "0", "--state-dir", self.state, "--download-dir", download_dir,
               "--socket", self.sock, "--accept", "all"]
        if localsend:
            cmd += ["--localsend", "--localsend-port", "0"]
        self.p = B.spawn(cmd, stderr=log_fh, stdout=log_fh)
        log_fh.close()
        B.wait_until(lambda: self._status() is not None, 20, f"daemon {self.name} ready")

    def _status(self):
        if self.p.poll() is not None:
            raise B.Failed(f"daemon {self.name} exited; see {self.logf}")
        if not self.sock.exists():
            return None
        r = subprocess.run([self.share, "--socket", self.sock, "status", "--json"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            return None
        self.status = json.loads(r.stdout)
        self.port = self.status["port"]
        return self.status

    @property
    def localsend_port(self) -> int:
        return self.status["localsend"]["port"]


def client_cert(root: Path) -> tuple[Path, Path, str]:
    """A P-256 client certificate for curl, and its LocalSend fingerprint."""
    cert, key = root / "curl-cert.pem", root / "curl-key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-keyout", key, "-out", cert, "-days", "30", "-nodes", "-subj", "/CN=bench"],
                       check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], check=True, capture_output=True).stdout
    return cert, key, hashlib.sha256(der).hexdigest().upper()


def curl(cert: Path, key: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "-k", "--cert", cert, "--key", key, *args],
                          capture_output=True, text=True, timeout=600)


def run_upload(share: str, root: Path, src: Path, sha: str, chunked: bool, timeout: float) -> dict:
    """One upload of `src` into a fresh daemon's LocalSend server."""
    cert, key, fp = client_cert(root)
    dst = root / "upload-dl"
    daemon = LocalSendDaemon(share, root, "ls-recv", "127.0.0.1")
    daemon.start(dst)
    try:
        base = f"https://127.0.0.1:{daemon.localsend_port}/api/localsend/v2"
        offer = {"info": {"alias": "bench", "version": "2.2", "fingerprint": fp, "port": 53317,
                          "protocol": "https"},
                 "files": {"f": {"id": "f", "fileName": src.name, "size": src.stat().st_size,
                                 "fileType": "application/octet-stream", "sha256": sha}}}
        r = curl(cert, key, "-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                 json.dumps(offer), f"{base}/prepare-upload")
        answer = json.loads(r.stdout)
        url = f"{base}/upload?sessionId={answer['sessionId']}&fileId=f&token={answer['files']['f']}"
        cmd = ["curl", "-sS", "-k", "--cert", cert, "--key", key, "-X", "POST", "-T", src,
               "-H", "Content-Type: application/octet-stream", "-o", "/dev/null", "-w", "%{http_code}", url]
        if chunked:
            cmd[1:1] = ["-H", "Transfer-Encoding: chunked"]
        out = root / "curl.out"
        c0 = B.proc_cpu(daemon.pid)
        with open(out, "wb") as fo:
            B.mark_start()
            t0 = time.perf_counter()
            p = B.spawn(cmd, stdout=fo)
            t1, rc, ru = B.wait_rusage(p, timeout)
            B.mark_end()
        code = out.read_text().strip()
        if rc != 0 or code != "200":
            raise B.Failed(f"curl exited {rc}, HTTP {code}")
        got = dst / src.name
        if got.stat().st_size != src.stat().st_size:
            raise B.Failed("the received file has the wrong size")
        hwm = B.proc_status_kib(daemon.pid, "VmHWM")
        cpu = B.proc_cpu(daemon.pid) - c0 + B.ru_cpu(ru)
        got.unlink()
        return {"seconds": t1 - t0, "cpu_seconds": cpu, "rss_recv_kib": hwm}
    finally:
        daemon.stop()


def run_send(share: str, sink: str, root: Path, src: Path, timeout: float) -> dict:
    """One `share send` into the discarding sink."""
    sink_p = B.spawn([sink, "0", root / "sink-state"], stdout=subprocess.PIPE)
    line = sink_p.stdout.readline()
    port = json.loads(line)["port"]
    sender = LocalSendDaemon(share, root, "ls-send", "127.0.0.1")
    sender.start(root / "send-dl")
    try:
        out = root / "send.out"
        cmd = [share, "--socket", sender.sock, "send", f"localsend://127.0.0.1:{port}", src, "--json"]
        c0 = B.proc_cpu(sender.pid) + B.proc_cpu(sink_p.pid)
        with open(out, "wb") as fo:
            B.mark_start()
            t0 = time.perf_counter()
            p = B.spawn(cmd, stdout=fo)
            t1, rc, ru = B.wait_rusage(p, timeout)
            B.mark_end()
        doc = json.loads(out.read_text() or "{}")
        if rc != 0 or doc.get("transport") != "localsend":
            raise B.Failed(f"share send exited {rc}: {out.read_text()[:300]}")
        cpu = B.proc_cpu(sender.pid) + B.proc_cpu(sink_p.pid) - c0 + B.ru_cpu(ru)
        return {"seconds": t1 - t0, "cpu_seconds": cpu, "json_seconds": doc.get("seconds"),
                "rss_send_kib": B.proc_status_kib(sender.pid, "VmHWM")}
    finally:
        sender.stop()
        B.stop(sink_p)


def run_native(share: str, root: Path, src: Path, transport: str, localsend: bool, timeout: float) -> dict:
    """One native 1 GiB send between fresh daemons, with or without LocalSend on."""
    tag = f"{transport}-{'ls' if localsend else 'plain'}"
    dst = root / f"native-{tag}"
    sender = LocalSendDaemon(share, root, f"n-send-{tag}", "127.0.0.1")
    receiver = LocalSendDaemon(share, root, f"n-recv-{tag}", "127.0.0.1")
    sender.start(root / "n-send-dl", localsend)
    receiver.start(dst, localsend)
    try:
        warm = root / "warm-up"
        warm.write_bytes(b"w")
        subprocess.run([share, "--socket", sender.sock, "send", f"127.0.0.1:{receiver.port}", warm],
                       check=True, capture_output=True, timeout=60)
        (dst / "warm-up").unlink()
        cmd = [share, "--socket", sender.sock, "send", f"127.0.0.1:{receiver.port}", src, "--json",
               "--transport", transport]
        out = root / "native.out"
        with open(out, "wb") as fo:
            t0 = time.perf_counter()
            p = B.spawn(cmd, stdout=fo)
            t1, rc, _ = B.wait_rusage(p, timeout)
        if rc != 0:
            raise B.Failed(f"native send exited {rc}: {out.read_text()[:300]}")
        (dst / src.name).unlink()
        return {"seconds": t1 - t0}
    finally:
        receiver.stop()
        sender.stop()


def median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--share", required=True)
    ap.add_argument("--sink", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--git-commit", default="unknown")
    args = ap.parse_args()
    root = args.root / "localsend"
    root.mkdir(parents=True, exist_ok=True)
    size = (128 if args.quick else 1024) * B.MiB
    src = root / "large.bin"
    if not src.exists() or src.stat().st_size != size:
        B.write_random(src, size)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    timeout = 600
    cases = {
        "upload (Content-Length)": lambda: run_upload(args.share, root, src, sha, False, timeout),
        "upload (chunked)": lambda: run_upload(args.share, root, src, sha, True, timeout),
        "send into a sink": lambda: run_send(args.share, args.sink, root, src, timeout),
        "native QUIC, LocalSend off": lambda: run_native(args.share, root, src, "quic", False, timeout),
        "native QUIC, LocalSend on": lambda: run_native(args.share, root, src, "quic", True, timeout),
        "native TCP, LocalSend off": lambda: run_native(args.share, root, src, "tcp", False, timeout),
        "native TCP, LocalSend on": lambda: run_native(args.share, root, src, "tcp", True, timeout),
    }
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    failures: dict[str, list[str]] = {name: [] for name in cases}
    names = list(cases)
    for rep in range(args.runs):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            B.log(f"localsend {rep + 1}/{args.runs}: {name}")
            try:
                runs[name].append(cases[name]())
            except B.Failed as e:
                B.log(f"  failed: {e}")
                failures[name].append(str(e))
    rows = []
    for name in names:
        secs = median(runs[name], "seconds")
        rows.append({
            "case": name, "ok": len(runs[name]), "runs": args.runs, "median_s": secs,
            "mib_s": size / B.MiB / secs if secs else None,
            "cpu_s_per_gib": (median(runs[name], "cpu_seconds") or 0) / (size / B.GiB) or None,
            "peak_rss_mib": max([(r.get("rss_recv_kib") or r.get("rss_send_kib") or 0) / 1024
                                 for r in runs[name]], default=None) or None,
            "failures": failures[name],
        })
    doc = {"commit": args.git_commit, "bytes": size, "runs": runs, "rows": rows,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    args.out.write_text(json.dumps(doc, indent=1))
    print(report(doc))
    return 0 if all(r["ok"] for r in rows) else 1


def report(doc: dict) -> str:
    by = {r["case"]: r for r in doc["rows"]}
    f = lambda v, spec=".0f": "–" if v is None else format(v, spec)  # noqa: E731
    lines = [f"## LocalSend ({doc['bytes'] // B.MiB} MiB file, commit {doc['commit']}, {doc['date']})", "",
             "| case | ok | median s | MiB/s | CPU s/GiB | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['case']} | {r['ok']}/{r['runs']} | {f(r['median_s'], '.2f')} | {f(r['mib_s'])} "
                     f"| {f(r['cpu_s_per_gib'], '.2f')} | {f(r['peak_rss_mib'], '.1f')} |")
    up, send = by["upload (Content-Length)"], by["send into a sink"]
    lines += ["", "| target (issue 19) | measured | met |", "|---|---|---|"]
    checks = [
        (f"upload ≥ {TARGET_MIBS} MiB/s", up["mib_s"], up["mib_s"] is not None and up["mib_s"] >= TARGET_MIBS),
        (f"receiver peak RSS ≤ {TARGET_RSS_MIB} MiB", up["peak_rss_mib"],
         up["peak_rss_mib"] is not None and up["peak_rss_mib"] <= TARGET_RSS_MIB),
        (f"sender ≥ {TARGET_MIBS} MiB/s", send["mib_s"], send["mib_s"] is not None and send["mib_s"] >= TARGET_MIBS),
    ]
    for t in ("QUIC", "TCP"):
        off, on = by[f"native {t}, LocalSend off"], by[f"native {t}, LocalSend on"]
        ratio = on["median_s"] / off["median_s"] if on["median_s"] and off["median_s"] else None
        checks.append((f"native {t} with LocalSend on ÷ off (time)", ratio,
                       ratio is not None and ratio <= 1.05))
    for what, value, ok in checks:
        lines.append(f"| {what} | {f(value, '.2f')} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        B.cleanup_all()
