#!/bin/bash
# Real-systemd test of the Debian package (root only).
#
# Boots two Debian bookworm containers with systemd-nspawn, each inside a
# network namespace of its own joined to the other by a veth pair (nothing
# reaches the real network; mDNS stays between the two), installs the .deb
# built by `cargo deb`, and checks what a user of the package relies on:
#
#  1. a configuration error stops the start for good: exit status 78,
#     no restart loop, one journal entry at priority err;
#  2. `systemctl enable --now lanshare` brings the service to "active"
#     (Type=notify: READY=1 came);
#  3. a member of group lanshare can run `share status`; another user is
#     refused with "permission denied: add yourself to group lanshare";
#  4. the sandbox: /etc/lanshare read-only, nothing the daemon writes is
#     executable, memory and task limits set;
#  5. the second container discovers the first over mDNS, and a file in a
#     user's private home (which the hardened daemon cannot read) is sent
#     with `share send` and arrives intact;
#  6. a download directory outside the service's own is reported by
#     `share status` and `share doctor` with the drop-in it needs, and
#     works once the drop-in is there;
#  7. `systemctl stop lanshare` finishes quickly and leaves no socket;
#  8. the per-user unit, installed as the docs say, receives a file and
#     sends one.
#
# Usage: tests/systemd/container-test.sh [path/to/lanshare.deb]
# Without an argument the package is built from the debug binary
# (LANSHARE_DEB_PROFILE=dev packaging/build-deb.sh; needs cargo-deb).
# The debootstrapped root file system is cached in $LANSHARE_ROOTFS
# (default target/systemd-test/rootfs-bookworm), so reruns take ~30 s.
# Exits 0 with a SKIPPED line when not root or tools are missing, unless
# LANSHARE_REQUIRE_CONTAINER_TEST=1 (CI), where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

skip() {
    if [ "${LANSHARE_REQUIRE_CONTAINER_TEST:-0}" = 1 ]; then
        echo "container-test: FAIL: $*" >&2
        exit 1
    fi
    echo "container-test: SKIPPED: $*"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root"
for tool in systemd-nspawn debootstrap ip nsenter mount; do
    command -v "$tool" >/dev/null || skip "$tool is missing (apt-get install systemd-container debootstrap iproute2)"
done

T0=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "[$(elapsed "$T0") s] $*"; }

PASSED=0
pass() { PASSED=$((PASSED + 1)); log "ok: $*"; }
die() {
    echo "container-test: FAIL: $*" >&2
    dump_logs
    echo "container-test: $PASSED passed, 1 failed" >&2
    exit 1
}

# ---------------------------------------------------------------- package
DEB=${1:-}
if [ -z "$DEB" ]; then
    command -v cargo-deb >/dev/null || skip "cargo-deb is missing (cargo install cargo-deb --locked)"
    mkdir -p target/systemd-test
    DEB=target/systemd-test/lanshare-test.deb
    log "building the package (debug binary)"
    LANSHARE_DEB_PROFILE=dev packaging/build-deb.sh --output "$DEB" >target/systemd-test/build-deb.log 2>&1 ||
        { cat target/systemd-test/build-deb.log >&2; echo "container-test: FAIL: cannot build the package" >&2; exit 1; }
fi
[ -f "$DEB" ] || { echo "container-test: FAIL: no package at $DEB" >&2; exit 1; }
DEB=$(realpath "$DEB")

# ----------------------------------------------------------------- rootfs
ROOTFS=${LANSHARE_ROOTFS:-$ROOT/target/systemd-test/rootfs-bookworm}
# libpam-systemd: logind sessions, so that lingering starts user managers
# (the per-user unit's test); present on any normal Debian install.
if [ ! -x "$ROOTFS/usr/lib/systemd/systemd" ] || ! compgen -G "$ROOTFS/usr/lib/*/security/pam_systemd.so" >/dev/null; then
    mirror=$( (grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -m1 '/debian/\?$') ||
        (grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -m1 '/debian/\?$') || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    log "building the container root file system from $mirror (cached in $ROOTFS)"
    rm -rf "$ROOTFS.tmp"
    mkdir -p "$(dirname "$ROOTFS")"
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libpam-systemd,adduser,iproute2 \
        bookworm "$ROOTFS.tmp" "$mirror" >"$ROOTFS.log" 2>&1 ||
        { tail -20 "$ROOTFS.log" >&2; echo "container-test: FAIL: debootstrap failed" >&2; exit 1; }
    # No console login prompt needed; keep the boot short.
    rm -f "$ROOTFS.tmp/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
    mv "$ROOTFS.tmp" "$ROOTFS"
fi

# ------------------------------------------------------------ containers
RUN=$ROOT/target/systemd-test/run-$$
rm -rf "$RUN"
mkdir -p "$RUN"
TAG=$(($$ % 100000))
NAMES=(lsct-a lsct-b)
declare -A NS NSPAWN LEADER
for name in "${NAMES[@]}"; do NS[$name]="$name-$TAG"; done

cleanup() {
    set +e
    for name in "${NAMES[@]}"; do
        local pid=${NSPAWN[$name]:-}
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            [ -n "${LEADER[$name]:-}" ] && nsenter -t "${LEADER[$name]}" -a systemctl poweroff >/dev/null 2>&1
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                [ -n "${LEADER[$name]:-}" ] && kill -9 "${LEADER[$name]}" 2>/dev/null
                sleep 0.5
                kill -9 "$pid" 2>/dev/null
            fi
        fi
        mountpoint -q "$RUN/$name/root" && umount "$RUN/$name/root"
        ip netns del "${NS[$name]}" 2>/dev/null
    done
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$RUN"; fi
}
trap cleanup EXIT

dump_logs() {
    set +e
    for name in "${NAMES[@]}"; do
        [ -n "${LEADER[$name]:-}" ] || continue
        echo "----- $name: journalctl -u lanshare -----" >&2
        in_ct "$name" journalctl -u lanshare --no-pager -o short-monotonic 2>&1 | tail -60 >&2
        echo "----- $name: failed units -----" >&2
        in_ct "$name" systemctl --failed --no-pager 2>&1 >&2
    done
}

# Runs a command inside a booted container, with a clean environment.
in_ct() {
    local name=$1; shift
    nsenter -t "${LEADER[$name]}" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 "$@"
}

# The LAN: one veth pair between the two namespaces.
ip netns add "${NS[lsct-a]}"
ip netns add "${NS[lsct-b]}"
ip link add "lsct$TAG-a" netns "${NS[lsct-a]}" type veth peer name "lsct$TAG-b" netns "${NS[lsct-b]}"
i=1
for name in "${NAMES[@]}"; do
    ns=${NS[$name]}
    dev="lsct$TAG-${name#lsct-}"
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$dev" name eth0
    ip -n "$ns" addr add "10.231.$((TAG % 250)).$i/24" dev eth0
    ip -n "$ns" link set eth0 up multicast on
    i=$((i + 1))
done

# Boot both: overlay over the cached root, so it stays pristine.
for name in "${NAMES[@]}"; do
    mkdir -p "$RUN/$name/upper" "$RUN/$name/work" "$RUN/$name/root" "$RUN/$name/upper/pkg" "$RUN/$name/upper/etc"
    echo "$name" >"$RUN/$name/upper/etc/hostname"
    cp "$DEB" "$RUN/$name/upper/pkg/lanshare.deb"
    mount -t overlay overlay \
        -o "lowerdir=$ROOTFS,upperdir=$RUN/$name/upper,workdir=$RUN/$name/work" "$RUN/$name/root"
    setsid systemd-nspawn --boot --quiet --directory="$RUN/$name/root" --machine="$name" \
        --network-namespace-path="/run/netns/${NS[$name]}" --register=no --keep-unit \
        </dev/null >"$RUN/$name/console.log" 2>&1 &
    NSPAWN[$name]=$!
done
for name in "${NAMES[@]}"; do
    for _ in $(seq 200); do
        # The container's PID 1 (systemd) is a child of systemd-nspawn;
        # other, short-lived children come and go during start-up.
        LEADER[$name]=$(pgrep -P "${NSPAWN[$name]}" -x systemd | head -1 || true)
        [ -n "${LEADER[$name]}" ] && break
        kill -0 "${NSPAWN[$name]}" 2>/dev/null || { cat "$RUN/$name/console.log" >&2; die "$name: systemd-nspawn exited"; }
        sleep 0.1
    done
    [ -n "${LEADER[$name]}" ] || die "$name: no container process"
    state=""
    for _ in $(seq 450); do
        state=$(nsenter -t "${LEADER[$name]}" -a systemctl is-system-running 2>/dev/null || true)
        case "$state" in running | degraded) break ;; esac
        kill -0 "${NSPAWN[$name]}" 2>/dev/null || break
        sleep 0.2
    done
    case "$state" in
    running | degraded) ;;
    *) cat "$RUN/$name/console.log" >&2; die "$name: systemd did not boot (state '$state')" ;;
    esac
done
pass "both containers booted (systemd $(in_ct lsct-a systemctl --version | head -1 | awk '{print $2}'))"

# ------------------------------------------------------------------ install
for name in "${NAMES[@]}"; do
    in_ct "$name" dpkg -i /pkg/lanshare.deb >"$RUN/$name/dpkg.log" 2>&1 ||
        { cat "$RUN/$name/dpkg.log" >&2; die "$name: dpkg -i failed"; }
    in_ct "$name" getent group lanshare >/dev/null || die "$name: no group lanshare after install"
    in_ct "$name" getent passwd lanshare >/dev/null || die "$name: no user lanshare after install"
    enabled=$(in_ct "$name" systemctl is-enabled lanshare 2>&1 || true)
    [ "$enabled" = disabled ] || die "$name: the package must not enable the service (is-enabled: $enabled)"
    active=$(in_ct "$name" systemctl is-active lanshare 2>&1 || true)
    [ "$active" = inactive ] || die "$name: the package must not start the service ($active)"
    agent=$(in_ct "$name" systemctl --global is-enabled lanshare-notify.service 2>&1 || true)
    [ "$agent" = enabled ] || die "$name: the desktop agent's user unit is not enabled for every user ($agent)"
    in_ct "$name" useradd --create-home --groups lanshare alice
    in_ct "$name" useradd --create-home mallory
done
pass "package installed: user and group lanshare created, service neither enabled nor started, desktop agent enabled for every user"

# ------------------------------------------------------ permanent errors
# A broken configuration file: the start fails once, with status 78 that
# RestartPreventExitStatus= names (no restart every RestartSec), and the
# reason is one journal entry at err (a TOML error spans several lines).
in_ct lsct-a sh -c 'mkdir -p /etc/lanshare && printf "name = \nport = 47000\n" > /etc/lanshare/config.toml'
timeout 60 nsenter -t "${LEADER[lsct-a]}" -a systemctl start lanshare >/dev/null 2>&1 &&
    die "lanshare started with a broken configuration"
show=$(in_ct lsct-a systemctl show lanshare -p ActiveState -p SubState -p ExecMainStatus -p NRestarts)
for want in ActiveState=failed SubState=failed ExecMainStatus=78 NRestarts=0; do
    echo "$show" | grep -qx "$want" || die "after a configuration error, want $want: $(echo $show)"
done
errors=$(in_ct lsct-a journalctl -u lanshare -p err -o cat --no-pager SYSLOG_IDENTIFIER=share)
log "journalctl -u lanshare -p err (the daemon's entries): $errors"
[ "$(printf '%s\n' "$errors" | grep -c .)" = 1 ] || die "want one err entry from the daemon, got: $errors"
echo "$errors" | grep -q "^share: invalid config file /etc/lanshare/config.toml" || die "unexpected err entry: $errors"
pass "a configuration error: status 78, failed without restarts, one journal entry at err"
in_ct lsct-a rm /etc/lanshare/config.toml
in_ct lsct-a systemctl reset-failed lanshare

# The receiving side accepts offers without asking (test setup).
in_ct lsct-b sh -c 'mkdir -p /etc/lanshare && echo "accept = \"all\"" > /etc/lanshare/config.toml'

# ------------------------------------------------------------------- start
for name in "${NAMES[@]}"; do
    t=$(date +%s.%N)
    timeout 60 nsenter -t "${LEADER[$name]}" -a systemctl enable --now lanshare >/dev/null 2>&1 ||
        die "$name: systemctl enable --now lanshare failed"
    active=$(in_ct "$name" systemctl is-active lanshare || true)
    [ "$active" = active ] || die "$name: service is '$active', not active"
    log "$name: active $(elapsed "$t") s after systemctl enable --now"
done
pass "systemctl enable --now lanshare: active in both containers"

# ------------------------------------------------------------ permissions
out=$(in_ct lsct-a runuser -u alice -- share status --json 2>&1) || die "alice (group lanshare): share status failed: $out"
echo "$out" | grep -q '"name": *"lsct-a"' || die "unexpected status: $out"
pass "a member of group lanshare runs share status"
in_ct lsct-a runuser -u alice -- share status | sed 's/^/    /'
journal=$(in_ct lsct-a journalctl -u lanshare -o json --no-pager)
echo "$journal" | grep '"MESSAGE":"lanshare daemon ready' | grep -q '"PRIORITY":"6"' ||
    die "journal: the ready line is not priority info"
if echo "$journal" | grep -q '"MESSAGE":"<[0-9]>'; then die "journal: raw priority prefixes in messages"; fi
pass "journal: levels mapped to priorities, no raw prefixes in messages"
mode=$(in_ct lsct-a stat -c '%a %U %G' /run/lanshare/share.sock)
[ "$mode" = "660 lanshare lanshare" ] || die "socket is '$mode', want '660 lanshare lanshare'"
rc=0
out=$(in_ct lsct-a runuser -u mallory -- share status 2>&1) || rc=$?
[ "$rc" = 1 ] || die "mallory (not in the group): share status exited $rc: $out"
echo "$out" | grep -q "permission denied: add yourself to group lanshare" ||
    die "mallory got: $out"
pass "a user outside the group is refused: $out"
in_ct lsct-a journalctl -u lanshare --no-pager | grep -q "control command uid=$(in_ct lsct-a id -u alice)" ||
    die "the daemon did not log alice's uid"
pass "the daemon logs the caller's uid"

# ---------------------------------------------------------------- sandbox
# Looked at from inside the service's own mount namespace, as root (who
# would bypass permissions, not read-only or noexec mounts).
main_pid=$(in_ct lsct-a systemctl show lanshare -p MainPID --value)
in_sandbox() { in_ct lsct-a nsenter -t "$main_pid" -m -- "$@"; }
out=$(in_sandbox sh -c 'touch /etc/lanshare/probe' 2>&1) && die "the daemon can write /etc/lanshare"
echo "$out" | grep -q "Read-only file system" || die "writing /etc/lanshare: $out"
owner=$(in_ct lsct-a stat -c %U /etc/lanshare)
[ "$owner" = root ] || die "/etc/lanshare belongs to $owner (ConfigurationDirectory=?)"
for dir in /var/lib/lanshare/incoming /var/lib/lanshare/state /run/lanshare; do
    out=$(in_sandbox sh -c "cp /bin/true $dir/.probe && $dir/.probe" 2>&1) && die "programs in $dir can be run"
    echo "$out" | grep -q "Permission denied" || die "running a program in $dir: $out"
    in_sandbox rm -f "$dir/.probe"
done
limits=$(in_ct lsct-a systemctl show lanshare -p MemoryMax -p TasksMax -p LimitNOFILE)
for want in MemoryMax=2147483648 TasksMax=1024 LimitNOFILE=524288; do
    echo "$limits" | grep -qx "$want" || die "want $want: $(echo $limits)"
done
pass "sandbox: /etc/lanshare read-only and root's, no execution from state, downloads or runtime dir, limits set"

# --------------------------------------------------------- discover + send
found=""
for _ in $(seq 60); do
    if in_ct lsct-a runuser -u alice -- share peers --json 2>/dev/null | grep -q '"name": *"lsct-b"'; then
        found=1
        break
    fi
    sleep 0.5
done
[ -n "$found" ] || die "lsct-a did not discover lsct-b over mDNS within 30 s"
pass "lsct-a discovers lsct-b over mDNS"
in_ct lsct-a runuser -u alice -- sh -c 'head -c 3000000 /dev/urandom > ~/photo.bin && chmod 600 ~/photo.bin'
in_ct lsct-a runuser -u alice -- sh -c 'mkdir -p ~/notes/sub && echo hello > ~/notes/sub/a.txt && chmod -R go-rwx ~/notes'
out=$(timeout 60 nsenter -t "${LEADER[lsct-a]}" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/alice \
    runuser -u alice -- share send lsct-b /home/alice/photo.bin /home/alice/notes 2>&1) ||
    die "share send failed: $out"
log "$out"
sum_a=$(in_ct lsct-a sha256sum /home/alice/photo.bin | cut -d' ' -f1)
sum_b=$(in_ct lsct-b sha256sum /var/lib/lanshare/incoming/photo.bin | cut -d' ' -f1) || die "photo.bin did not arrive"
[ "$sum_a" = "$sum_b" ] || die "photo.bin differs after the transfer"
[ "$(in_ct lsct-b cat /var/lib/lanshare/incoming/notes/sub/a.txt)" = hello ] || die "notes/sub/a.txt did not arrive"
pass "share send of files in a private home (ProtectHome daemon, passed descriptors) arrived intact"
in_ct lsct-b runuser -u alice -- cat /var/lib/lanshare/incoming/notes/sub/a.txt >/dev/null ||
    die "a member of group lanshare cannot read received files"
perms=$(in_ct lsct-b stat -c '%a %U %G' /var/lib/lanshare/state /var/lib/lanshare/incoming | tr '\n' ' ')
[ "$perms" = "700 lanshare lanshare 750 lanshare lanshare " ] || die "state/incoming permissions: $perms"
pass "received files are readable by group lanshare; the state directory is private ($perms)"

# --------------------------------------- a download directory of one's own
in_ct lsct-b sh -c 'mkdir -p /srv/incoming && chown lanshare:lanshare /srv/incoming && chmod 750 /srv/incoming'
in_ct lsct-b sh -c 'printf "accept = \"all\"\ndownload_dir = \"/srv/incoming\"\n" > /etc/lanshare/config.toml'
in_ct lsct-b systemctl restart lanshare
out=$(in_ct lsct-b share status --json) || die "share status on lsct-b failed: $out"
echo "$out" | grep -q 'ReadWritePaths=/srv/incoming' || die "share status does not explain the read-only download directory: $out"
out=$(in_ct lsct-b share doctor 2>&1 || true)
echo "$out" | grep -q 'ReadWritePaths=/srv/incoming' || die "share doctor does not explain it: $out"
pass "a download directory outside the sandbox: status and doctor name the ReadWritePaths= drop-in"
in_ct lsct-b sh -c 'mkdir -p /etc/systemd/system/lanshare.service.d &&
    printf "[Service]\nReadWritePaths=/srv/incoming\n" > /etc/systemd/system/lanshare.service.d/downloads.conf &&
    systemctl daemon-reload && systemctl restart lanshare'
out=$(in_ct lsct-b share status --json) || die "share status on lsct-b failed: $out"
echo "$out" | grep -q '"warnings": *\[\]' || die "warnings left after the drop-in: $out"
in_ct lsct-a runuser -u alice -- sh -c 'echo "for /srv" > ~/report.txt'
sent=""
for _ in $(seq 20); do
    if timeout 60 nsenter -t "${LEADER[lsct-a]}" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/alice \
        runuser -u alice -- share send lsct-b /home/alice/report.txt >/dev/null 2>&1; then
        sent=1
        break
    fi
    sleep 0.5
done
[ -n "$sent" ] || die "share send to lsct-b after its restart failed"
[ "$(in_ct lsct-b cat /srv/incoming/report.txt)" = "for /srv" ] || die "report.txt did not arrive in /srv/incoming"
pass "with the drop-in the warning is gone and files arrive in /srv/incoming"

# -------------------------------------------------------------------- stop
t=$(date +%s.%N)
timeout 30 nsenter -t "${LEADER[lsct-a]}" -a systemctl stop lanshare || die "systemctl stop failed"
took=$(elapsed "$t")
awk -v s="$took" 'BEGIN { exit !(s < 5) }' || die "systemctl stop took $took s (want < 5 s)"
in_ct lsct-a test ! -e /run/lanshare/share.sock || die "stale socket after stop"
result=$(in_ct lsct-a systemctl show lanshare -p Result --value)
[ "$result" = success ] || die "service result after stop: $result"
in_ct lsct-a journalctl -u lanshare --no-pager | grep -q "stopped seconds=" || die "no graceful stop in the journal"
pass "systemctl stop took $took s, clean result, no socket left"

# ------------------------------------------------------- per-user service
# As docs/service.md says: the package installed the user unit, the user
# enables it (lingering keeps her manager running without a login).
alice_uid=$(in_ct lsct-a id -u alice)
in_ct lsct-a loginctl enable-linger alice
for _ in $(seq 100); do
    in_ct lsct-a test -S "/run/user/$alice_uid/systemd/private" && break
    sleep 0.1
done
in_ct lsct-a test -S "/run/user/$alice_uid/systemd/private" ||
    die "alice's user manager did not start: $(in_ct lsct-a systemctl status "user@$alice_uid" --no-pager 2>&1 | tail -20)"
as_alice() {
    timeout 60 nsenter -t "${LEADER[lsct-a]}" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        runuser -u alice -- env "XDG_RUNTIME_DIR=/run/user/$alice_uid" "$@"
}
as_alice sh -c 'mkdir -p ~/.config/lanshare && echo "accept = \"all\"" > ~/.config/lanshare/config.toml'
out=$(as_alice systemctl --user enable --now lanshare 2>&1) || die "systemctl --user enable --now lanshare failed: $out"
[ "$(as_alice systemctl --user is-active lanshare)" = active ] || die "the user unit is not active"
mode=$(in_ct lsct-a stat -c '%a %U' "/run/user/$alice_uid/lanshare/share.sock")
[ "$mode" = "600 alice" ] || die "user socket is '$mode', want '600 alice'"
user_id=$(as_alice share id --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
[ -n "$user_id" ] || die "share id failed for the user daemon"
pass "per-user unit active, socket private to its user"
in_ct lsct-b sh -c 'head -c 1000000 /dev/urandom > /root/gift.bin'
found=""
for _ in $(seq 60); do
    if in_ct lsct-b share peers --json 2>/dev/null | grep -q "\"$user_id\""; then
        found=1
        break
    fi
    sleep 0.5
done
[ -n "$found" ] || die "lsct-b did not discover the user daemon over mDNS within 30 s"
out=$(timeout 60 nsenter -t "${LEADER[lsct-b]}" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    share send "${user_id:0:14}" /root/gift.bin 2>&1) || die "sending to the user daemon failed: $out"
sum_b=$(in_ct lsct-b sha256sum /root/gift.bin | cut -d' ' -f1)
sum_a=$(in_ct lsct-a sha256sum /home/alice/Downloads/gift.bin | cut -d' ' -f1) || die "gift.bin did not arrive in ~alice/Downloads"
[ "$sum_a" = "$sum_b" ] || die "gift.bin differs after the transfer"
pass "the user daemon receives into ~/Downloads"
as_alice sh -c 'echo "from alice'"'"'s own daemon" > ~/from-user.txt'
out=$(as_alice share send lsct-b /home/alice/from-user.txt 2>&1) || die "the user daemon's send failed: $out"
[ "$(in_ct lsct-b cat /srv/incoming/from-user.txt)" = "from alice's own daemon" ] || die "from-user.txt did not arrive"
pass "the user daemon sends"
as_alice systemctl --user disable --now lanshare >/dev/null 2>&1 || die "systemctl --user stop failed"
in_ct lsct-a loginctl disable-linger alice

if in_ct lsct-a journalctl --no-pager | grep -iE "lanshare.*(seccomp|code=killed|core-dump)"; then
    die "the sandbox killed the daemon"
fi
in_ct lsct-b systemctl stop lanshare
pass "no sandbox violations in the journal"

log "all checks passed"
echo "container-test: $PASSED passed, 0 failed"
