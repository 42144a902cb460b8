#!/usr/bin/env bash
# lanshare benchmark suite: the one entry point. See bench/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/run.sh [OPTIONS]

Builds lanshare (cargo build --release) and the quinn ceiling tool, creates the
workloads on a private tmpfs, and runs every tool inside a network namespace
that has only loopback (nothing ever touches the real network). Tools are
interleaved within each repetition (A/B, a different tool first each time);
every run is verified byte for byte against the source.

Needs root (namespaces, tmpfs mount, throwaway sshd). Installs missing Debian
packages (openssh-server openssh-client rsync netcat-openbsd socat iperf3 time
python3-matplotlib) with apt-get, sendme with `cargo install` (once, time-limited,
cached under bench/.cache) and magic-wormhole with pip into a venv under
bench/.cache. A tool that cannot be installed is skipped with a note.

Options:
  --quick            1 repetition and small workloads (128 MiB file, 200 x 4 KiB,
                     20 x 1 MiB; 5 latency runs; no 4 GiB check). For development.
  --runs N           repetitions per tool and workload (default 3; --quick: 1)
  --only TOOLS       comma-separated subset of: lanshare-quic lanshare-tcp
                     quinn-ceiling quinn-raw nc tar-socat scp-aes scp-chacha
                     rsync-aes sendme wormhole ("lanshare" = both transports,
                     "quinn" = both ceilings)
  --workloads W      comma-separated subset of: large (1 GiB file), small
                     (2000 x 4 KiB files), medium (200 x 1 MiB files)
  --no-extras        skip the lanshare extras (1-byte latency, idle RSS, 4 GiB RSS)
  --no-4g            skip only the 4 GiB RSS check
  --link             run only the link-rate benchmark (two namespaces, veth pair
                     shaped with tbf to --rate): lanshare QUIC and TCP vs iperf3
  --with-link        run the loopback suite and then the link-rate benchmark
  --rate RATE        link rate for --link/--with-link/--disk, in Mbit/s (default 1000)
  --disk             run only the disk benchmark: the receiver writes to ext4 on a
                     loop device (backing file on a real disk) whose writes are
                     throttled with the blkio cgroup, behind the --rate link:
                     lanshare QUIC and TCP vs nc, dd conv=fsync, tar|nc|tar + sync
  --disk-dir DIR     where the disk benchmark's backing file goes (default: a
                     new directory under /var/tmp; must not be tmpfs)
  --disk-size GIB    size of that file, fully written first (default 4)
  --disk-scenarios S comma-separated subset of disk100,dirty,disk30,unthrottled
  --localsend        run only the LocalSend benchmark (issue 19): a 1 GiB upload
                     into lanshare's LocalSend server with curl, lanshare's
                     LocalSend sender into a discarding receiver
                     (bench/localsend-sink), and native transfers with
                     LocalSend on and off side by side
  --with-localsend   run the loopback suite (and --with-link's benchmark, if
                     given) and then the LocalSend benchmark
  --plot             also write a PNG chart (bench/results/latest.png)
  --wait-idle SECS   before measuring, wait up to SECS for the machine to be idle
                     (other processes below 0.25 cores for 6 s); then run anyway
  --no-build         do not run cargo build (use the existing release binaries)
  --no-install       do not install anything; skip tools that are missing
  --keep-page-reporting
                     in a VM, leave the guest's free page reporting to the
                     hypervisor on (by default it is paused for the run and
                     restored afterwards; see bench/README.md, Caveats)
  -h, --help         this help

Output: a markdown report on stdout (also bench/results/latest.md), JSON in
bench/results/latest.json (link-only runs: latest-link.json, disk runs:
latest-disk.json, the LocalSend benchmark: latest-localsend.json and
latest-localsend.md) plus a timestamped copy of each. Progress goes to stderr.
EOF
}

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
CACHE="$BENCH/.cache"
RESULTS="$BENCH/results"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"

QUICK=0 PLOT=0 RUNS="" ONLY="" WORKLOADS="large,small,medium" EXTRAS=1 NO4G=0
LINK=0 SUITE=1 RATE=1000 BUILD=1 INSTALL=1 WAIT_IDLE=0 KEEP_PR=0
DISK=0 DISK_DIR="" DISK_SIZE=4 DISK_SCENARIOS="disk100,dirty,disk30,unthrottled"
LOCALSEND=0
ORIG_ARGS="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --plot) PLOT=1 ;;
        --runs) RUNS="${2:?--runs N}"; shift ;;
        --only) ONLY="${2:?--only TOOLS}"; shift ;;
        --workloads) WORKLOADS="${2:?--workloads W}"; shift ;;
        --no-extras) EXTRAS=0 ;;
        --no-4g) NO4G=1 ;;
        --link) LINK=1; SUITE=0 ;;
        --with-link) LINK=1; SUITE=1 ;;
        --rate) RATE="${2:?--rate MBIT}"; shift ;;
        --disk) DISK=1; SUITE=0; LINK=0 ;;
        --localsend) LOCALSEND=1; SUITE=0 ;;
        --with-localsend) LOCALSEND=1 ;;
        --disk-dir) DISK_DIR="${2:?--disk-dir DIR}"; shift ;;
        --disk-size) DISK_SIZE="${2:?--disk-size GIB}"; shift ;;
        --disk-scenarios) DISK_SCENARIOS="${2:?--disk-scenarios LIST}"; shift ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --keep-page-reporting) KEEP_PR=1 ;;
        --wait-idle) WAIT_IDLE="${2:?--wait-idle SECS}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$RUNS" ] || { [ "$QUICK" = 1 ] && RUNS=1 || RUNS=3; }
case "$RUNS" in ''|*[!0-9]*|0) echo "bench/run.sh: --runs needs a positive integer" >&2; exit 2 ;; esac
# expand group names in --only
if [ -n "$ONLY" ]; then
    expanded=""
    IFS=, read -ra _tools <<<"$ONLY"
    for t in "${_tools[@]}"; do
        case "$t" in
            lanshare) t="lanshare-quic,lanshare-tcp" ;;
            quinn) t="quinn-ceiling,quinn-raw" ;;
            lanshare-quic|lanshare-tcp|quinn-ceiling|quinn-raw|nc|tar-socat|scp-aes|scp-chacha|rsync-aes|sendme|wormhole) ;;
            *) echo "bench/run.sh: unknown tool $t (see --help)" >&2; exit 2 ;;
        esac
        expanded="${expanded:+$expanded,}$t"
    done
    ONLY="$expanded"
fi

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, tmpfs, sshd)"
for c in ip tc cargo timeout mount; do command -v "$c" >/dev/null || die "missing $c"; done

# ---------------------------------------------------------------- cleanup (always)
NS="" NSA="" NSB="" TMP="" BGPID="" PR_SAVED=""
# disk benchmark: backing directory (if we made it), mount point, loop device,
# its MAJ:MIN, and the cgroup throttle to undo
DISK_MADE="" DISK_IMG="" DISK_MNT="" LOOPDEV="" LOOP_MM="" THROTTLE_V1="" THROTTLE_V2="" IO_ENABLED=""
PR_PARAM=/sys/module/page_reporting/parameters/page_reporting_order
# Long steps run in the background and are waited for, so that a signal is
# handled at once (bash defers traps while a foreground child runs).
bgwait() {
    "$@" &
    BGPID=$!
    local rc=0
    wait "$BGPID" || rc=$?
    BGPID=""
    return "$rc"
}
cleanup() {
    local rc=$?
    set +e
    [ "$rc" = 0 ] || log "cleaning up (exit status $rc)"
    if [ -n "$BGPID" ]; then
        kill -TERM "$BGPID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$BGPID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BGPID" 2>/dev/null
    fi
    for ns in $NS $NSA $NSB; do
        # only processes inside namespaces this script created
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
    done
    sleep 0.5
    for ns in $NS $NSA $NSB; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    # (the disk was mounted in a private mount namespace that ended with the run)
    [ -n "$DISK_MNT" ] && rmdir "$DISK_MNT" 2>/dev/null
    if [ -n "$THROTTLE_V1" ] && [ -n "$LOOP_MM" ]; then
        echo "$LOOP_MM 0" >"$THROTTLE_V1" 2>/dev/null
    fi
    if [ -n "$THROTTLE_V2" ]; then
        # anything still in the cgroup goes back to the root, then it goes
        while read -r pid; do echo "$pid" >/sys/fs/cgroup/cgroup.procs; done <"$THROTTLE_V2/cgroup.procs" 2>/dev/null
        rmdir "$THROTTLE_V2" 2>/dev/null
        [ -n "$IO_ENABLED" ] && echo -io >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
    fi
    [ -n "$LOOPDEV" ] && losetup -d "$LOOPDEV" 2>/dev/null
    [ -n "$DISK_IMG" ] && rm -f "$DISK_IMG"
    [ -n "$DISK_MADE" ] && rmdir "$DISK_MADE" 2>/dev/null
    if [ -n "$PR_SAVED" ]; then
        echo "$PR_SAVED" >"$PR_PARAM" && log "free page reporting restored (order $PR_SAVED)"
    fi
    if [ -n "$TMP" ]; then
        umount "$TMP" 2>/dev/null || umount -l "$TMP" 2>/dev/null
        rmdir "$TMP" 2>/dev/null
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- packages
PKGS=()
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || PKGS+=("$1"); }
if [ "$SUITE" = 1 ]; then
    for p in openssh-server openssh-client rsync netcat-openbsd socat iperf3 time; do need_pkg "$p"; done
fi
[ "$LINK" = 1 ] && need_pkg iperf3
if [ "$DISK" = 1 ]; then for p in netcat-openbsd mount e2fsprogs coreutils; do need_pkg "$p"; done; fi
[ "$LOCALSEND" = 1 ] && { need_pkg curl; need_pkg openssl; }
[ "$PLOT" = 1 ] && need_pkg python3-matplotlib
if [ "${#PKGS[@]}" -gt 0 ]; then
    if [ "$INSTALL" = 1 ]; then
        log "installing ${PKGS[*]}"
        timeout 300 apt-get update -qq || log "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >&2 \
            || log "apt-get install failed; missing tools will be skipped"
    else
        log "missing packages (not installing): ${PKGS[*]}"
    fi
fi
# apt may have started a system sshd on port 22 of the host; this suite never needs it
# (it starts its own inside the namespace) but does not touch it either.

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || PY=/usr/bin/python3

# ---------------------------------------------------------------- builds
if [ "$BUILD" = 1 ]; then
    log "cargo build --release --locked (lanshare)"
    bgwait timeout 3600 cargo build --release --locked --bin share --manifest-path "$REPO/Cargo.toml" >&2 \
        || die "release build failed"
    if [ "$SUITE" = 1 ]; then
        log "cargo build --release (bench/quinn-ceiling, sharing $TARGET)"
        bgwait timeout 3600 cargo build --release --manifest-path "$BENCH/quinn-ceiling/Cargo.toml" \
            --target-dir "$TARGET" >&2 || die "quinn-ceiling build failed"
    fi
    if [ "$LOCALSEND" = 1 ]; then
        log "cargo build --release (bench/localsend-sink, sharing $TARGET)"
        bgwait timeout 3600 cargo build --release --manifest-path "$BENCH/localsend-sink/Cargo.toml" \
            --target-dir "$TARGET" >&2 || die "localsend-sink build failed"
    fi
fi
SINK="$TARGET/release/localsend-sink"
[ "$LOCALSEND" = 0 ] || [ -x "$SINK" ] || die "$SINK missing (run without --no-build)"
SHARE="$TARGET/release/share"
CEILING="$TARGET/release/quinn-ceiling"
[ -x "$SHARE" ] || die "$SHARE missing (run without --no-build)"
[ "$SUITE" = 0 ] || [ -x "$CEILING" ] || die "$CEILING missing (run without --no-build)"

# ---------------------------------------------------------------- optional tools
mkdir -p "$CACHE" "$RESULTS"
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
SENDME="" SENDME_NOTE="" WH_VENV="" WH_NOTE=""
if [ "$SUITE" = 1 ] && want sendme; then
    for c in "$CACHE/sendme/bin/sendme" "$(command -v sendme 2>/dev/null || true)" "$HOME/.cargo/bin/sendme"; do
        if [ -n "$c" ] && [ -x "$c" ]; then SENDME="$c"; break; fi
    done
    if [ -z "$SENDME" ] && [ -f "$CACHE/sendme.failed" ]; then
        SENDME_NOTE="$(cat "$CACHE/sendme.failed") (delete bench/.cache/sendme.failed to retry)"
    elif [ -z "$SENDME" ] && [ "$INSTALL" = 1 ]; then
        log "cargo install --locked sendme (one attempt, at most 45 min, cached in bench/.cache/sendme)"
        if bgwait timeout 2700 nice -n 10 cargo install --locked sendme --root "$CACHE/sendme" \
                --target-dir "$CACHE/sendme-build" >"$CACHE/sendme-install.log" 2>&1; then
            SENDME="$CACHE/sendme/bin/sendme"
            rm -rf "$CACHE/sendme-build"
        else
            echo "cargo install --locked sendme failed or timed out: $(tail -n 3 "$CACHE/sendme-install.log" | tr '\n' ' ')" \
                >"$CACHE/sendme.failed"
            SENDME_NOTE="$(cat "$CACHE/sendme.failed")"
        fi
    elif [ -z "$SENDME" ]; then
        SENDME_NOTE="not installed (--no-install)"
    fi
fi
if [ "$SUITE" = 1 ] && want wormhole; then
    V="$CACHE/wormhole-venv"
    if [ -x "$V/bin/wormhole" ] && [ -x "$V/bin/twist" ]; then
        WH_VENV="$V"
    elif [ "$INSTALL" = 1 ]; then
        log "pip install magic-wormhole magic-wormhole-mailbox-server magic-wormhole-transit-relay (venv in bench/.cache)"
        if "$PY" -m venv "$V" >&2 && timeout 900 "$V/bin/pip" install -q magic-wormhole \
                magic-wormhole-mailbox-server magic-wormhole-transit-relay >&2; then
            WH_VENV="$V"
        else
            WH_NOTE="pip install of magic-wormhole failed"
        fi
    else
        WH_NOTE="not installed (--no-install)"
    fi
fi

# ---------------------------------------------------------------- tmpfs
avail_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
if [ "$QUICK" = 1 ]; then size_g=4; else size_g=14; fi
if [ $((avail_kib / 1048576)) -lt $((size_g + 2)) ]; then
    [ "$QUICK" = 1 ] || { NO4G=1; size_g=6; log "little free RAM: tmpfs of ${size_g} GiB, 4 GiB check skipped"; }
fi
TMP="$(mktemp -d /tmp/lanshare-bench.XXXXXX)"
mount -t tmpfs -o "size=${size_g}g,mode=0700" lanshare-bench "$TMP"
if [ "$DISK" = 1 ]; then
    log "workloads on tmpfs $TMP (${size_g} GiB max); the receivers write to the benchmark's disk"
else
    log "workloads and receive directories on tmpfs $TMP (${size_g} GiB max): disk speed is not measured"
fi

# In a VM with a memory balloon, freed guest memory is handed back to the
# host within seconds, and touching it again costs a host page fault: every
# receiver then writes its file into such memory at a speed that depends on
# the host (on the project VM, 1 GiB of dd into tmpfs 3 s after the last
# one: 0.5-1.6 s, against 0.4-0.5 s with reporting paused). Raising the
# reporting order above the largest page
# order reports nothing until the original value is restored on exit.
MEMORY_NOTE=""
if [ -w "$PR_PARAM" ]; then
    if [ "$KEEP_PR" = 1 ]; then
        MEMORY_NOTE="the guest's free page reporting to the hypervisor was left on (--keep-page-reporting)"
    else
        saved="$(cat "$PR_PARAM")"
        if echo 11 >"$PR_PARAM" 2>/dev/null; then
            PR_SAVED="$saved"
            MEMORY_NOTE="the guest's free page reporting to the hypervisor was paused for the run (page_reporting_order $saved, restored afterwards)"
            log "free page reporting paused (order $saved -> 11) until the end of the run"
        else
            MEMORY_NOTE="the guest reports free pages to the hypervisor; pausing it failed, so memory speed may vary"
            log "could not pause free page reporting; memory speed may vary between runs"
        fi
    fi
fi

if [ "$WAIT_IDLE" != 0 ]; then
    bgwait "$PY" "$BENCH/bench.py" wait-idle --timeout "$WAIT_IDLE" \
        || log "the machine did not become idle within $WAIT_IDLE s; measuring anyway (see the others' CPU column)"
fi

STAMP="$(date +%Y%m%d-%H%M%S)"
GIT_COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
GIT_DIRTY=()
[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] && GIT_DIRTY=(--git-dirty)
COMMON_FLAGS=()
[ "$QUICK" = 1 ] && COMMON_FLAGS+=(--quick)

# ---------------------------------------------------------------- loopback suite
SUITE_JSON=""
if [ "$SUITE" = 1 ]; then
    NS="lsbench-$$"
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    log "network namespace $NS (loopback only)"
    SUITE_JSON="$RESULTS/$STAMP.json"
    ARGS=(suite --root "$TMP" --share "$SHARE" --ceiling "$CEILING" --runs "$RUNS" --workloads "$WORKLOADS"
          --out "$SUITE_JSON" --command-line "bench/run.sh $ORIG_ARGS" --git-commit "$GIT_COMMIT" "${GIT_DIRTY[@]}"
          --memory-note "$MEMORY_NOTE" "${COMMON_FLAGS[@]}")
    [ -n "$ONLY" ] && ARGS+=(--only "$ONLY")
    [ "$EXTRAS" = 0 ] && ARGS+=(--no-extras)
    [ "$NO4G" = 1 ] && ARGS+=(--no-4g)
    [ -n "$SENDME" ] && ARGS+=(--sendme "$SENDME")
    [ -n "$SENDME_NOTE" ] && ARGS+=(--sendme-note "$SENDME_NOTE")
    [ -n "$WH_VENV" ] && ARGS+=(--wormhole-venv "$WH_VENV")
    [ -n "$WH_NOTE" ] && ARGS+=(--wormhole-note "$WH_NOTE")
    if [ "$QUICK" = 1 ]; then lim=1800; else lim=7200; fi
    bgwait ip netns exec "$NS" timeout -k 30 "$lim" "$PY" "$BENCH/bench.py" "${ARGS[@]}" >"$RESULTS/$STAMP.md" \
        || die "suite failed (see above)"
    cp "$SUITE_JSON" "$RESULTS/latest.json"
    cp "$RESULTS/$STAMP.md" "$RESULTS/latest.md"
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    ip netns del "$NS"
    NS=""
fi

# Two namespaces NSA and NSB (named with prefix $1) joined by a veth pair
# whose ends are shaped to $RATE; sets DESC. A previous mode's pair is
# removed first (its benchmark has ended), so cleanup() knows every one.
shaped_link() {
    for ns in $NSA $NSB; do ip netns del "$ns" 2>/dev/null; done
    NSA="${1}a-$$" NSB="${1}b-$$"
    ip netns add "$NSA"
    ip netns add "$NSB"
    for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
    # veth pair created directly inside the namespaces; addresses exist only there
    ip -n "$NSA" link add lsb0 type veth peer name lsb1 netns "$NSB"
    ip -n "$NSA" addr add 10.231.8.1/24 dev lsb0
    ip -n "$NSB" addr add 10.231.8.2/24 dev lsb1
    ip -n "$NSA" link set lsb0 up
    ip -n "$NSB" link set lsb1 up
    QDISC=(tbf rate "${RATE}mbit" burst 256kb latency 10ms)
    ip netns exec "$NSA" tc qdisc add dev lsb0 root "${QDISC[@]}"
    ip netns exec "$NSB" tc qdisc add dev lsb1 root "${QDISC[@]}"
    DESC="veth pair between two namespaces, both ends shaped with \`tc qdisc add dev X root ${QDISC[*]}\`, MTU 1500"
    log "link: $DESC"
}

# ---------------------------------------------------------------- link-rate benchmark
if [ "$LINK" = 1 ]; then
    shaped_link lslink
    LINK_JSON="$RESULTS/$STAMP-link.json"
    if [ "$QUICK" = 1 ]; then lim=900; else lim=1800; fi
    bgwait ip netns exec "$NSA" timeout -k 30 "$lim" "$PY" "$BENCH/bench.py" link --root "$TMP" --share "$SHARE" \
        --peer-ns "$NSB" --addr-a 10.231.8.1 --addr-b 10.231.8.2 --rate-mbit "$RATE" --description "$DESC" \
        --runs "$RUNS" --out "$LINK_JSON" --command-line "bench/run.sh $ORIG_ARGS" --git-commit "$GIT_COMMIT" \
        "${GIT_DIRTY[@]}" --memory-note "$MEMORY_NOTE" "${COMMON_FLAGS[@]}" || die "link benchmark failed"
    if [ -n "$SUITE_JSON" ]; then
        "$PY" "$BENCH/bench.py" merge "$SUITE_JSON" "$LINK_JSON" >"$RESULTS/$STAMP.md"
        cp "$SUITE_JSON" "$RESULTS/latest.json"
        cp "$RESULTS/$STAMP.md" "$RESULTS/latest.md"
    else
        "$PY" "$BENCH/bench.py" report "$LINK_JSON" >"$RESULTS/$STAMP-link.md"
        cp "$LINK_JSON" "$RESULTS/latest-link.json"
        cp "$RESULTS/$STAMP-link.md" "$RESULTS/latest.md"
    fi
fi

# ---------------------------------------------------------------- disk benchmark
DISK_JSON=""
if [ "$DISK" = 1 ]; then
    for c in losetup mkfs.ext4 dd sync nc; do command -v "$c" >/dev/null || die "missing $c"; done
    # The backing file lives on a real disk: a loop device over tmpfs would
    # measure memory, not a disk.
    if [ -z "$DISK_DIR" ]; then
        DISK_DIR="$(mktemp -d /var/tmp/lanshare-disk.XXXXXX)"
        DISK_MADE="$DISK_DIR"
    fi
    [ "$(stat -f -c %T "$DISK_DIR")" != tmpfs ] || die "$DISK_DIR is on tmpfs; give --disk-dir on a disk"
    DISK_IMG="$DISK_DIR/lanshare-disk-$$.img"
    # Fully written, not sparse: otherwise every first write to the loop
    # device also allocates blocks in the file system below.
    log "writing the ${DISK_SIZE} GiB backing file $DISK_IMG"
    bgwait dd if=/dev/zero of="$DISK_IMG" bs=4M count=$((DISK_SIZE * 256)) conv=fsync status=none \
        || die "cannot write $DISK_IMG"
    # Direct I/O: the loop device writes through to that disk instead of
    # caching a second copy in the page cache.
    LOOPDEV="$(losetup --find --show --direct-io=on "$DISK_IMG")" || die "losetup failed"
    LOOP_MM="$(cat "/sys/block/$(basename "$LOOPDEV")/dev")"
    # Inode tables and journal written now, not by ext4lazyinit during the runs.
    mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$LOOPDEV" >&2 || die "mkfs.ext4 failed"
    DISK_MNT="$(mktemp -d /tmp/lanshare-disk-mnt.XXXXXX)"
    # The write throttle: cgroup v1 blkio (root cgroup: covers the kernel's
    # flusher threads too) or cgroup v2 io.max (a cgroup the receivers run in;
    # v2 charges writeback to the cgroup that dirtied the pages).
    # bench.py sets the limit through descriptor 9: inside the network
    # namespaces /sys/fs/cgroup is not mounted. With v2 the whole benchmark
    # runs in the throttled cgroup (senders only read, from tmpfs).
    V1=/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device
    JOIN=""
    if [ -w "$V1" ]; then
        THROTTLE_V1="$V1"
        THROTTLE_ARGS=(--throttle-format v1 --throttle-where "$V1")
        exec 9>"$V1"
    elif grep -qw io /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        if ! grep -qw io /sys/fs/cgroup/cgroup.subtree_control; then
            echo +io >/sys/fs/cgroup/cgroup.subtree_control || die "cannot enable the io controller for child cgroups"
            IO_ENABLED=1
        fi
        THROTTLE_V2="/sys/fs/cgroup/lanshare-bench-$$"
        mkdir "$THROTTLE_V2" || die "cannot create $THROTTLE_V2"
        THROTTLE_ARGS=(--throttle-format v2 --throttle-where "$THROTTLE_V2/io.max")
        exec 9>"$THROTTLE_V2/io.max"
        JOIN="$THROTTLE_V2/cgroup.procs"
    else
        die "no blkio throttle: neither cgroup v1 blkio nor the cgroup v2 io controller is available"
    fi
    log "disk: ext4 on $LOOPDEV ($LOOP_MM) backed by $DISK_IMG, mounted on $DISK_MNT; throttle ${THROTTLE_V1:-$THROTTLE_V2}"
    shaped_link lsdisk
    BACKING="$(df --output=source,fstype "$DISK_DIR" | tail -1 | tr -s ' ')"
    DISK_DESC="ext4 on $LOOPDEV (losetup --direct-io=on) backed by a fully written ${DISK_SIZE} GiB file on $BACKING"
    DISK_JSON="$RESULTS/$STAMP-disk.json"
    if [ "$QUICK" = 1 ]; then lim=1800; else lim=5400; fi
    # Mounted in a private mount namespace that lives as long as the run:
    # the mount goes away with it, whatever happens, and programs started
    # elsewhere meanwhile (\`ip netns exec\` copies the mount table) cannot
    # pin it and keep the loop device busy.
    bgwait sh -c '[ -z "$1" ] || echo $$ >"$1"; shift; exec "$@"' sh "$JOIN" \
        unshare --mount --propagation private sh -c 'mount "$1" "$2" && shift 2 && exec "$@"' sh \
        "$LOOPDEV" "$DISK_MNT" \
        ip netns exec "$NSA" timeout -k 30 "$lim" "$PY" "$BENCH/bench.py" disk --root "$TMP" --share "$SHARE" \
        --disk "$DISK_MNT" --device "$LOOP_MM" --throttle-fd 9 "${THROTTLE_ARGS[@]}" --peer-ns "$NSB" \
        --addr-a 10.231.8.1 --addr-b 10.231.8.2 --scenarios "$DISK_SCENARIOS" \
        --link-description "$DESC" --disk-description "$DISK_DESC" --runs "$RUNS" --out "$DISK_JSON" \
        --command-line "bench/run.sh $ORIG_ARGS" --git-commit "$GIT_COMMIT" "${GIT_DIRTY[@]}" \
        --memory-note "$MEMORY_NOTE" "${COMMON_FLAGS[@]}" >"$RESULTS/$STAMP-disk.md" || die "disk benchmark failed"
    exec 9>&-
    cp "$DISK_JSON" "$RESULTS/latest-disk.json"
    cp "$RESULTS/$STAMP-disk.md" "$RESULTS/latest.md"
fi

# ---------------------------------------------------------------- LocalSend benchmark
if [ "$LOCALSEND" = 1 ]; then
    NS="lslocalsend-$$"
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    log "LocalSend benchmark in network namespace $NS (loopback only)"
    LS_JSON="$RESULTS/$STAMP-localsend.json"
    LS_ARGS=(--root "$TMP" --share "$SHARE" --sink "$SINK" --runs "$RUNS" --out "$LS_JSON" --git-commit "$GIT_COMMIT")
    [ "$QUICK" = 1 ] && LS_ARGS+=(--quick)
    bgwait ip netns exec "$NS" timeout -k 30 3600 env PYTHONPATH="$BENCH" "$PY" "$BENCH/localsend.py" "${LS_ARGS[@]}" \
        >"$RESULTS/$STAMP-localsend.md" || log "LocalSend benchmark: some runs failed (see above)"
    cp "$LS_JSON" "$RESULTS/latest-localsend.json"
    cp "$RESULTS/$STAMP-localsend.md" "$RESULTS/latest-localsend.md"
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    ip netns del "$NS"
    NS=""
    if [ "$SUITE" = 0 ] && [ "$LINK" = 0 ] && [ "$DISK" = 0 ]; then
        cp "$RESULTS/$STAMP-localsend.md" "$RESULTS/latest.md"
    else
        cat "$RESULTS/$STAMP-localsend.md" >>"$RESULTS/latest.md"
    fi
fi

cat "$RESULTS/latest.md"
log "JSON: ${SUITE_JSON:-${DISK_JSON:-$RESULTS/latest-link.json}} (copied to bench/results/latest*.json)"

# ---------------------------------------------------------------- plot
if [ "$PLOT" = 1 ] && [ -n "$DISK_JSON" ]; then
    log "--plot: the disk benchmark has no chart"
elif [ "$PLOT" = 1 ]; then
    PLOTPY="$PY"
    "$PLOTPY" -c 'import matplotlib' 2>/dev/null || PLOTPY=/usr/bin/python3
    src="$RESULTS/latest.json"
    [ -n "$SUITE_JSON" ] || src="$RESULTS/latest-link.json"
    if timeout 120 "$PLOTPY" "$BENCH/bench.py" plot "$src" "$RESULTS/$STAMP.png"; then
        cp "$RESULTS/$STAMP.png" "$RESULTS/latest.png"
    else
        log "plot failed (is matplotlib installed? apt-get install python3-matplotlib)"
    fi
fi
