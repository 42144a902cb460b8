#!/bin/bash
# Static checks of the systemd units and the sysctl drop-in in systemd/:
#
#  * `systemd-analyze verify` prints nothing and succeeds for every unit
#    (system units as system units, lanshare-user.service and
#    lanshare-notify.service as user units),
#    with ExecStart pointed at a built `share` and the man page it prints
#    on MANPATH, so the Documentation=man:share(1) check is real;
#  * `systemd-analyze security --offline=true` rates the system service at
#    an exposure of at most $MAX_EXPOSURE (default 1.4);
#  * no unit sets RestrictSUIDSGID=yes (systemd enforces it by making
#    openat2 fail with ENOSYS, and receiving needs openat2), and every
#    service names exit status 78 (configuration error) in
#    RestartPreventExitStatus= and has a start limit;
#  * the system service cannot write its configuration (no
#    ConfigurationDirectory=) and has NoExecPaths=, MemoryMax=, TasksMax=;
#  * no value carries an inline comment (systemd has none: the text would
#    become part of the value);
#  * the sysctl drop-in only holds `key = value` lines for the keys we mean.
#
# Usage: tests/systemd/check-units.sh [path/to/share]   (default: target/debug/share)
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${1:-target/debug/share}
MAX_EXPOSURE=${MAX_EXPOSURE:-1.4}
command -v systemd-analyze >/dev/null || { echo "check-units: systemd-analyze is missing (apt-get install systemd)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "check-units: $BIN is not built (cargo build)" >&2; exit 1; }
BIN=$(realpath "$BIN")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/man/man1" "$work/units" "$work/user-units" "$work/xdg-runtime"
chmod 700 "$work/xdg-runtime"
"$BIN" man > "$work/man/man1/share.1"
man_opt=()
command -v man >/dev/null || man_opt=(--man=no)
export MANPATH="$work/man:"

failed=0
fail() { echo "check-units: FAIL: $*" >&2; failed=1; }

# Copies a unit with ExecStart pointing at the built binary.
stage() { sed "s|^ExecStart=/usr/bin/share |ExecStart=$BIN |" "$1" > "$2"; }

check_verify() { # label, unit-file, extra systemd-analyze args...
    local label=$1 unit=$2; shift 2
    local out rc=0
    out=$(systemd-analyze "$@" verify "${man_opt[@]}" "$unit" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
        fail "systemd-analyze verify $label (rc $rc):"
        printf '%s\n' "$out" >&2
    else
        echo "ok: systemd-analyze verify $label"
    fi
}

for unit in systemd/*.service systemd/*.socket systemd/*.timer; do
    [ -e "$unit" ] || continue
    name=$(basename "$unit")
    # Inline comments: a '#' or ';' after a value on a key=value line.
    if grep -nE '^[A-Za-z]+=.*[[:space:]][#;]' "$unit" >/dev/null; then
        fail "$name has an inline comment (systemd would keep it as part of the value):"
        grep -nE '^[A-Za-z]+=.*[[:space:]][#;]' "$unit" >&2
    fi
    if [[ $name == *.service ]]; then
        if grep -qE '^RestrictSUIDSGID=(yes|true|1)' "$unit"; then
            fail "$name sets RestrictSUIDSGID=yes: openat2 fails with ENOSYS under it, so nothing can be received"
        fi
        grep -qE '^RestartPreventExitStatus=.*\b78\b' "$unit" ||
            fail "$name does not name exit status 78 (configuration error) in RestartPreventExitStatus="
        grep -qE '^StartLimitBurst=' "$unit" || fail "$name has no start limit (StartLimitBurst=)"
    fi
    case "$name" in
    *-user.service | lanshare-notify.service)
        # User units; lanshare-user.service is installed as lanshare.service.
        installed=${name/-user.service/.service}
        stage "$unit" "$work/user-units/$installed"
        XDG_RUNTIME_DIR="$work/xdg-runtime" check_verify "$name (user unit)" "$work/user-units/$installed" --user
        ;;
    *)
        stage "$unit" "$work/units/$name"
        check_verify "$name" "$work/units/$name"
        if [[ $name == *.service ]]; then
            if grep -qE '^ConfigurationDirectory=' "$unit"; then
                fail "$name has ConfigurationDirectory=, which makes /etc/lanshare writable by the daemon"
            fi
            for key in NoExecPaths MemoryMax TasksMax; do
                grep -qE "^$key=" "$unit" || fail "$name does not set $key="
            done
        fi
        if [[ $name == *.service ]]; then
            report=$(systemd-analyze security --offline=true "$work/units/$name" 2>&1 || true)
            score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
            if [ -z "$score" ]; then
                fail "no exposure score for $name:"
                printf '%s\n' "$report" >&2
            elif awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
                fail "$name exposure $score is above $MAX_EXPOSURE:"
                printf '%s\n' "$report" | grep -v '^✓' >&2
            else
                echo "ok: $name exposure $score (max $MAX_EXPOSURE)"
            fi
        fi
        ;;
    esac
done

sysctl=systemd/60-lanshare.conf
if [ ! -f "$sysctl" ]; then
    fail "$sysctl is missing"
else
    bad=$(grep -vnE '^[[:space:]]*(#.*)?$|^net\.core\.(rmem|wmem)_max = [0-9]+$' "$sysctl" || true)
    [ -z "$bad" ] || fail "$sysctl has unexpected lines: $bad"
    for key in net.core.rmem_max net.core.wmem_max; do
        grep -qE "^$key = 7500000$" "$sysctl" || fail "$sysctl does not set $key = 7500000"
    done
    [ "$failed" -ne 0 ] || echo "ok: $sysctl"
fi

if [ "$failed" -ne 0 ]; then
    echo "check-units: FAILED" >&2
    exit 1
fi
echo "check-units: all unit checks passed"
