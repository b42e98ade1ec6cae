#!/usr/bin/env bash
# tests/systemd/real-systemd.sh BINARY: the shipped units under a real systemd.
# Driven by tests/systemd_real.rs; runnable by hand (as root):
#   NIX_SERVE_SD_FIXTURES=/tmp/nix-serve-sd-fixtures-0 tests/systemd/real-systemd.sh target/debug/nix-serve
#   tests/systemd/real-systemd.sh --check     # can this machine run it? (exit 77 and why if not)
#
# It boots the machine's own systemd (/lib/systemd/systemd) as PID 1 of new PID,
# mount, cgroup, UTS, IPC and network namespaces, installs BINARY and systemd/
# there the way docs/install.md says (its shell blocks, run as written, except
# `cargo build`), and checks what an administrator relies on: socket
# activation, READY and STATUS, the key as a credential, a real `nix copy
# --from`, idle exit and re-activation (the metrics file carried across), `systemctl restart` and `stop` under
# load, fast failure on a bad key or flag, --htpasswd as a credential (and a
# bad htpasswd file), recovery from a nix-daemon restart,
# the journal's priorities, the store database under a writer, an idle
# database (read directly through a nix-daemon connection that holds it open,
# and the cold start that costs), and the live
# `systemd-analyze security` score, and the IP filter of
# systemd/allowed-ips.conf. Prints PASS/FAIL/INFO lines (SKIP for a check
# this machine's systemd cannot make) and the figures;
# exits 0 when every check passes, 1 otherwise, 77 (with a SKIP line saying
# why) when this machine cannot run it.
#
# How the host is kept untouched (nothing outside the run directory changes;
# the test compares a snapshot of the host before and after):
#  * the root file system is an overlay whose upper layer is a tmpfs of the
#    mount namespace; /nix is a read-only bind (the store, the database and
#    the nix-daemon's socket); /run, /etc/systemd/system and /dev are private
#    tmpfs, /dev with only null, zero, full, random, urandom and tty. Every mount
#    is made with `mount -n`, so not even libmount's /run/mount/utab is written;
#  * /proc is the new PID namespace's, with /proc/sys and the other global knobs
#    read-only: PID 1 writes host-wide sysctls at every boot;
#  * /sys is a read-only sysfs; the only writable part is a cgroup2 mount whose
#    root is an empty sub-cgroup made for this run (a cgroup namespace) and
#    removed afterwards;
#  * systemd boots a target of its own from a curated unit path with no
#    generators: none of the host's units exist for it; `container=` is set;
#  * capabilities that reach beyond the namespaces (modules, raw I/O, clock,
#    reboot, audit, MAC, syslog) are dropped from the bounding set;
#  * the namespace runs under `timeout -s KILL` and `unshare --kill-child`; the
#    end is a SIGKILL of its PID 1, which takes every process in it along.
# What the host does see: the shared nix-daemon serves the service's queries,
# and the database check adds a few tiny store paths, deleted again at the end.
set -uo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
REPO=$(readlink -f "$HERE/../..")
NS_TIMEOUT=${NS_TIMEOUT:-240}   # hard limit (s) for the whole namespace
IDLE=4                          # the test drop-in's idle timeout (s)
PORT=5000                       # as shipped in nix-serve.socket
CG_PREFIX=nix-serve-sd-real-systemd
DROP_CAPS=-sys_module,-sys_rawio,-sys_time,-sys_boot,-sys_pacct,-syslog,-wake_alarm,-block_suspend,-audit_control,-audit_write,-audit_read,-mac_admin,-mac_override
INNER=/run/nss-test            # inside the namespace: the staged files
UNIT_PATH=/etc/systemd/system:/run/systemd/system:$INNER/units

# ---------------------------------------------------------------------------
# Stage 1, PID 1 of the new PID namespace: record the host PID, move into the
# run's sub-cgroup and make that the cgroup namespace's root.
if [[ ${1:-} == --ns-stage1 ]]; then
    RUN=$2 CG=$3
    read -r hostpid _ </proc/self/stat
    echo "$hostpid" >"$RUN/pid1"
    echo 0 >"$CG/cgroup.procs" || { echo "stage1: cannot join $CG" >&2; exit 1; }
    exec unshare --cgroup -- "$SELF" --ns-stage2 "$RUN"
fi

# Stage 2: build the root file system and exec systemd as PID 1.
if [[ ${1:-} == --ns-stage2 ]]; then
    set -e
    RUN=$2 N=$2/root
    m() { mount -n "$@"; }
    m --make-rprivate /
    m -t tmpfs -o mode=0755,size=1g nss-test-rw "$RUN/rw"
    mkdir -p "$RUN/rw/upper" "$RUN/rw/work"
    m -t overlay -o "lowerdir=/,upperdir=$RUN/rw/upper,workdir=$RUN/rw/work" nss-test-root "$N"
    m -t proc -o nosuid,nodev,noexec proc "$N/proc"
    for p in sys sysrq-trigger irq bus fs acpi scsi; do
        if [[ -e $N/proc/$p ]]; then
            m --bind "$N/proc/$p" "$N/proc/$p"
            m -o remount,bind,ro "$N/proc/$p"
        fi
    done
    m -t sysfs -o ro,nosuid,nodev,noexec sysfs "$N/sys"
    m -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$N/sys/fs/cgroup"
    m -t tmpfs -o mode=0755,size=8m,nosuid,noexec nss-test-dev "$N/dev"
    for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
        IFS=: read -r name maj min <<<"$d"
        mknod -m 0666 "$N/dev/$name" c "$maj" "$min"
    done
    mkdir -m 0755 "$N/dev/pts" "$N/dev/mqueue"
    mkdir -m 1777 "$N/dev/shm"
    m -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts "$N/dev/pts"
    ln -s pts/ptmx "$N/dev/ptmx"
    m -t tmpfs -o mode=1777,size=64m,nosuid,nodev shm "$N/dev/shm"
    m -t mqueue -o nosuid,nodev,noexec mqueue "$N/dev/mqueue"
    ln -s /proc/self/fd "$N/dev/fd"
    : >"$N/dev/console"
    m --bind "$RUN/console.log" "$N/dev/console"
    m -t tmpfs -o mode=0755,size=64m,nosuid,nodev nss-test-run "$N/run"
    mkdir -p "$N$INNER/stage" "$N$INNER/no-generators"
    m --bind "$RUN/stage" "$N$INNER/stage"
    m -o remount,bind,ro "$N$INNER/stage"
    cp -r "$RUN/stage/units" "$N$INNER/units"
    m -t tmpfs -o mode=0755,size=16m,nosuid,nodev nss-test-units "$N/etc/systemd/system"
    mkdir -p "$N/etc/systemd/journald.conf.d" "$N/etc/systemd/system.conf.d"
    printf '[Journal]\nStorage=volatile\nForwardToConsole=no\nForwardToKMsg=no\nForwardToWall=no\n' \
        >"$N/etc/systemd/journald.conf.d/zz-nss-test.conf"
    printf '[Manager]\nLogColor=no\nDefaultTimeoutStartSec=30s\nDefaultTimeoutStopSec=30s\n' \
        >"$N/etc/systemd/system.conf.d/zz-nss-test.conf"
    m --bind /nix "$N/nix"
    m -o remount,bind,ro,nosuid,nodev "$N/nix"
    cd "$N"
    pivot_root . .
    umount -n -l .
    cd /
    # LoadCredential= builds the credential ramfs in a helper's mount namespace
    # and moves it onto /run/credentials: that needs shared propagation, which
    # PID 1 sets up itself only outside a container. Every mount here was made
    # private first, so these peer groups are new and reach nothing outside.
    mount -n --make-rshared /
    exec env -i container=nix-serve-sd-test \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        SYSTEMD_UNIT_PATH="$UNIT_PATH" \
        SYSTEMD_GENERATOR_PATH=$INNER/no-generators \
        SYSTEMD_ENVIRONMENT_GENERATOR_PATH=$INNER/no-generators \
        setpriv --bounding-set="$DROP_CAPS" \
        /lib/systemd/systemd --unit=nss-test.target --show-status=no
fi

# ---------------------------------------------------------------------------
# Host side.
skip() { echo "SKIP: $*"; exit 77; }

# Why this machine cannot run the test, or nothing.
cannot() {
    [[ $(id -u) == 0 ]] || { echo "not root (needs to create namespaces, mounts and a cgroup)"; return; }
    [[ -x /lib/systemd/systemd ]] || { echo "no /lib/systemd/systemd"; return; }
    local v
    v=$(/lib/systemd/systemd --version 2>/dev/null | awk 'NR == 1 { print $2 }')
    [[ ${v:-0} -ge 248 ]] || { echo "systemd ${v:-?} is older than 248 (the units' sandbox)"; return; }
    for t in unshare nsenter setpriv timeout curl python3 nix nix-store sha256sum; do
        command -v "$t" >/dev/null || { echo "missing tool: $t"; return; }
    done
    [[ -S /nix/var/nix/daemon-socket/socket ]] || { echo "no nix-daemon on /nix/var/nix/daemon-socket/socket"; return; }
    [[ -n $(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo) ]] || { echo "no cgroup2 hierarchy mounted"; return; }
    unshare --pid --fork --mount --net --uts --ipc --cgroup true 2>/dev/null \
        || { echo "cannot create namespaces here (unshare --pid --mount --net --uts --ipc --cgroup fails)"; return; }
}

if [[ ${1:-} == --check ]]; then
    why=$(cannot)
    [[ -z $why ]] || skip "$why"
    echo "real systemd test can run here"
    exit 0
fi

BIN=$(readlink -f "${1:?usage: real-systemd.sh BINARY | --check}")
[[ -x $BIN ]] || { echo "FAIL no executable $BIN"; exit 1; }
why=$(cannot)
[[ -z $why ]] || skip "$why"
FIX=${NIX_SERVE_SD_FIXTURES:?NIX_SERVE_SD_FIXTURES is not set: run scripts/test, or set it to scripts/setup-nix\'s fixtures}
[[ -f $FIX/paths.tsv ]] || { echo "FAIL no $FIX/paths.tsv: run scripts/setup-nix"; exit 1; }
fixture() { awk -F'\t' -v n="$1" '$1 == n { print $2 }' "$FIX/paths.tsv"; }
hash_of() { basename "$1" | cut -c1-32; }

T0=$(date +%s.%N)
FAILS=0 PASSES=0
pass() { echo "PASS $*"; PASSES=$((PASSES + 1)); }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }
info() { echo "INFO $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
since() { awk -v a="$(date +%s.%N)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }

CG2=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
OWN=$(sed -n 's/^0:://p' /proc/self/cgroup)
CGBASE=$CG2${OWN%/}
STAMP=$(date +%Y%m%dT%H%M%S)-$$
RUN=$(mktemp -d "${TMPDIR:-/tmp}/nix-serve-sd-real-systemd.XXXXXX")
CG=$CGBASE/$CG_PREFIX.$STAMP
mkdir -p "$RUN"/{root,rw,stage/units,stage/repo/target/release}
: >"$RUN/console.log"
info "run directory $RUN; $(/lib/systemd/systemd --version | head -1)"

# Only cgroups of this test, depth first; kills what is left inside.
rm_cgroup() {
    local cg=$1
    [[ -d $cg ]] || return 0
    case ${cg#"$CGBASE"/} in "$CG_PREFIX".*) ;; *) return 1 ;; esac
    [[ -w $cg/cgroup.kill ]] && echo 1 >"$cg/cgroup.kill" 2>/dev/null
    for _ in $(seq 1 20); do
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
        [[ -d $cg ]] || return 0
        sleep 0.2
    done
    return 1
}
# Left over by a run that was killed hard.
for old in "$CGBASE/$CG_PREFIX".*; do
    [[ -d $old ]] || continue
    # Another run may be going on: its PID 1 is in it, or about to be.
    [[ -s $old/cgroup.procs || -z $(find "$old" -maxdepth 0 -mmin +10) ]] && continue
    rm_cgroup "$old" && info "removed leftover cgroup $old"
done

snapshot() {
    {
        for k in fs/file-max fs/nr_open kernel/core_pattern kernel/hostname kernel/domainname \
                 kernel/pid_max kernel/printk kernel/keys/maxkeys kernel/modprobe; do
            [[ -r /proc/sys/$k ]] && printf '%s=%s\n' "$k" "$(cat "/proc/sys/$k")"
        done
        echo "--- mounts"; awk '{ print $5, $9 }' /proc/self/mountinfo | grep -v "^$RUN" | sort
        echo "--- /etc/systemd/system"; find /etc/systemd/system | sort
        echo "--- /run"; ls -A /run
        echo "--- /usr/local/bin"; ls -A /usr/local/bin
        echo "--- /etc/nix"; ls -A /etc/nix
        echo "--- cgroups"; (cd "$CG2" && find . -maxdepth 2 -type d ! -name "$CG_PREFIX.*" | sort)
    } 2>&1
}
snapshot >"$RUN/host-before.txt"

# --- staging: a curated unit set and the files to install ---------------------
U=$RUN/stage/units
printf '[Unit]\nDescription=nix-serve-sd test target\nWants=systemd-journald.service\nAfter=systemd-journald.service\n' \
    >"$U/nss-test.target"
printf '[Unit]\nDescription=System Initialization (test: empty)\nWants=systemd-journald.service\n' >"$U/sysinit.target"
printf '[Unit]\nDescription=Basic System (test: empty)\nRequires=sysinit.target\nAfter=sysinit.target\n' >"$U/basic.target"
for t in sockets timers paths slices local-fs network network-online nss-user-lookup; do
    printf '[Unit]\nDescription=%s.target (test: empty)\n' "$t" >"$U/$t.target"
done
printf '[Unit]\nDescription=Shutdown (test)\nDefaultDependencies=no\n' >"$U/shutdown.target"
for f in systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket; do
    cp "/lib/systemd/system/$f" "$U/$f" || { echo "FAIL no /lib/systemd/system/$f"; exit 1; }
done
S=$RUN/stage
cp "$BIN" "$S/repo/target/release/nix-serve"
cp -r "$REPO/systemd" "$REPO/docs" "$S/repo/"
cp "$HERE/client.py" "$S/"
# The shell blocks of docs/install.md that install the units and the key.
awk '/^```sh$/ { n++; on = 1; next } /^```$/ { on = 0 } on { print > (dir "/doc-block-" n ".sh") }' \
    dir="$S" "$REPO/docs/install.md"
doc_block() { grep -l -- "$1" "$S"/doc-block-*.sh | head -1; }
INSTALL_SH=$(doc_block 'systemctl enable --now nix-serve.socket')
SIGNING_SH=$(doc_block 'generate-binary-cache-key')
RECOVER_SH=$(doc_block 'systemctl reset-failed')
[[ -n $INSTALL_SH && -n $SIGNING_SH && -n $RECOVER_SH ]] \
    || { echo "FAIL docs/install.md: no install, signing or recovery shell block"; exit 1; }
# The test's own settings, in a drop-in as docs/install.md recommends: a short
# idle timeout so that the idle exit happens during the test.
printf '[Service]\nEnvironment=NIX_SERVE_IDLE_TIMEOUT=%ss\n' "$IDLE" >"$S/zz-test.conf"
# The nix-daemon the transient-failure check stops and starts: a forwarder to
# the real one (which the machine shares and which stays up).
cat >"$S/test-nix-daemon.service" <<EOF
[Unit]
Description=a stoppable nix-daemon for the test (forwards to the real one)
[Service]
ExecStart=/usr/bin/python3 $INNER/stage/client.py proxy /run/test-nix-daemon/socket /nix/var/nix/daemon-socket/socket
RuntimeDirectory=test-nix-daemon
RuntimeDirectoryMode=0755
EOF
# A nix-daemon for a store of the test's own, which nothing else opens: the
# idle-database check needs a database that is surely idle, and the host's
# may be held by anything on the host.
IDLE_ROOT=/var/lib/nss-idle-store
IDLE_DB=$IDLE_ROOT/nix/var/nix/db/db.sqlite
IDLE_SOCK=/run/nss-idle-daemon/socket
cat >"$S/nss-idle-daemon.service" <<EOF
[Unit]
Description=a nix-daemon for the test's idle store
[Service]
Environment=NIX_DAEMON_SOCKET_PATH=$IDLE_SOCK
ExecStart=$(command -v nix-daemon) --store local?root=$IDLE_ROOT
RuntimeDirectory=nss-idle-daemon
RuntimeDirectoryMode=0755
EOF

# --- boot ------------------------------------------------------------------------
mkdir "$CG" || { echo "FAIL cannot create cgroup $CG"; exit 1; }
NS_PID=
cleanup() {
    local pid1
    pid1=$(cat "$RUN/pid1" 2>/dev/null)
    # Only if it is still ours: another PID namespace, in this run's cgroup.
    if [[ -n $pid1 && -d /proc/$pid1 && $(readlink "/proc/$pid1/ns/pid") != "$(readlink /proc/self/ns/pid)" ]] \
        && grep -q "$CG_PREFIX.$STAMP" "/proc/$pid1/cgroup" 2>/dev/null; then
        kill -KILL "$pid1" 2>/dev/null
    fi
    [[ -n $NS_PID ]] && wait "$NS_PID" 2>/dev/null
    NS_PID=
    rm_cgroup "$CG" || echo "WARN cgroup $CG not removed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TB=$(date +%s.%N)
timeout -s KILL "$NS_TIMEOUT" unshare --pid --fork --kill-child=SIGKILL --mount --propagation private \
    --uts --ipc --net -- "$SELF" --ns-stage1 "$RUN" "$CG" >"$RUN/ns-stage.log" 2>&1 &
NS_PID=$!
for _ in $(seq 1 100); do [[ -s $RUN/pid1 ]] && break; sleep 0.1; done
PID1=$(cat "$RUN/pid1" 2>/dev/null)
[[ -n $PID1 ]] || { cat "$RUN/ns-stage.log"; echo "FAIL the namespace did not start"; exit 1; }

# A command inside every namespace of our systemd, bounded in time.
ns() {
    SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 LC_ALL=C.UTF-8 \
        timeout -s KILL 60 nsenter -t "$PID1" -m -u -i -n -p -C -- "$@"
}
show() { ns systemctl show "$1" -p "$2" --value 2>/dev/null; }
state() { echo "$(show "$1" ActiveState)/$(show "$1" SubState)"; }
get() { ns curl -sS -m "${2:-15}" "http://127.0.0.1:$PORT/$1" 2>&1; }

STATE=
for _ in $(seq 1 300); do
    kill -0 "$PID1" 2>/dev/null || break
    STATE=$(ns systemctl is-system-running 2>/dev/null)
    [[ $STATE == running || $STATE == degraded ]] && break
    sleep 0.1
done
if [[ $STATE != running && $STATE != degraded ]]; then
    fail "systemd did not come up (state '${STATE:-none}')"
    cat "$RUN/ns-stage.log"; tail -30 "$RUN/console.log"
    exit 1
fi
pass "real systemd is PID 1 of new namespaces: $(ns readlink /proc/1/exe), is-system-running=$STATE ($(since "$TB")s)"
loaded=$(ns systemctl list-units --all --no-legend --plain | grep -Ev '^[^ ]+\.(mount|scope|slice) ' | awk '{ printf "%s ", $1 }')
check "only the test's units are loaded: $loaded" \
    bash -c '! grep -Eq "nix-daemon|getty|udev|sysctl|\.timer|multi-user" <<<"$1"' _ "$loaded"

# --- install as docs/install.md says --------------------------------------------------
# The idle-timeout drop-in first, so that the first start already has it.
ns install -D -m 0644 "$INNER/stage/zz-test.conf" /etc/systemd/system/nix-serve.service.d/zz-test.conf
# The documented block, line by line in the checkout (here: a copy of its
# systemd/ and docs/, and the binary where `cargo build --release` puts it);
# the build itself is the one line left out. Before the block's `curl`, the
# first request, nothing may have started the service.
SERVICE_BEFORE=
while IFS= read -r line; do
    [[ -z $line || $line == cargo\ build* ]] && continue
    if [[ $line == curl* ]]; then
        SERVICE_BEFORE=$(state nix-serve.service)
        SOCKET_BEFORE=$(state nix-serve.socket)
        TA=$(date +%s.%N)
    fi
    out=$(ns bash -c "cd $INNER/stage/repo && $line" 2>"$RUN/doc-stderr.txt")
    rc=$?
    [[ $line == curl* ]] || out+=$(cat "$RUN/doc-stderr.txt")
    [[ $line == curl* ]] && { FIRST=$out; TA=$(since "$TA"); }
    [[ $rc == 0 ]] || fail "docs/install.md: '$line' failed ($rc): $out"
done <"$INSTALL_SH"
check "before the first request: socket $SOCKET_BEFORE, service ${SERVICE_BEFORE:-?}" \
    test "$SOCKET_BEFORE/$SERVICE_BEFORE" = active/listening/inactive/dead
check "first request activates: 'curl' of docs/install.md got '$(head -1 <<<"$FIRST")' in ${TA}s; service $(state nix-serve.service)" \
    bash -c '[[ $1 == "StoreDir: /nix/store"* && $2 == active/running ]]' _ "$FIRST" "$(state nix-serve.service)"

# The signing block: a fresh key pair and the drop-in, as written.
out=$(ns bash -c "cd $INNER/stage/repo && set -e && $(cat "$SIGNING_SH")" 2>&1)
check "docs/install.md signing block (key pair, signing-key.conf, restart): rc $?" test -n "$(ns cat /etc/nix/nix-serve.pub)"
PUB=$(ns cat /etc/nix/nix-serve.pub)
KEYNAME=${PUB%%:*}

# --- READY, STATUS, credential ------------------------------------------------------
get nix-cache-info >/dev/null
MAIN=$(show nix-serve.service MainPID)
STATUS_TEXT=$(show nix-serve.service StatusText)
check "READY=1 accepted (Type=$(show nix-serve.service Type), $(state nix-serve.service)); STATUS='$STATUS_TEXT'" \
    bash -c '[[ $1 == notify && $2 == active/running && $3 == Serving\ store* ]]' _ \
    "$(show nix-serve.service Type)" "$(state nix-serve.service)" "$STATUS_TEXT"
info "backend: ${STATUS_TEXT#Serving store }"
env_key=$(ns cat "/proc/$MAIN/environ" 2>/dev/null | tr '\0' '\n' | grep '^NIX_SECRET_KEY_FILE=')
uid=$(ns awk '/^Uid:/ { print $2 }' "/proc/$MAIN/status")
P_TOP=$(fixture dep-top)
ni=$(get "$(hash_of "$P_TOP").narinfo")
check "credential key: $env_key, read by dynamic user $uid; narinfo signed 'Sig: $KEYNAME:…'" \
    bash -c '[[ $1 == NIX_SECRET_KEY_FILE=/run/credentials/nix-serve.service/nix-serve.key && $2 -ge 61184 ]] && grep -q "^Sig: $3:" <<<"$4"' _ \
    "$env_key" "${uid:-0}" "$KEYNAME" "$ni"

# --- a real Nix client ----------------------------------------------------------------
out=$(ns env XDG_CACHE_HOME=/tmp/nix-cache-1 nix --extra-experimental-features nix-command copy \
    --from "http://127.0.0.1:$PORT" --to /tmp/copy --option trusted-public-keys "$PUB" "$P_TOP" 2>&1)
rc=$?
same=$( [[ $(ns nix-store --store /tmp/copy --dump "$P_TOP" | sha256sum) == $(nix-store --dump "$P_TOP" | sha256sum) ]] && echo yes)
check "nix copy --from the socket-activated cache, signatures checked against $KEYNAME: rc $rc, NAR of $(basename "$P_TOP") identical: ${same:-no}" \
    test "$rc/$same" = 0/yes
[[ $rc == 0 ]] || echo "$out" | tail -3 | sed 's/^/INFO nix: /'

# --- idle exit, the socket stays, the next client is served -----------------------------
TI=$(date +%s.%N)
for _ in $(seq 1 $(( (IDLE + 15) * 5 ))); do
    [[ $(show nix-serve.service ActiveState) == active ]] || break
    sleep 0.2
done
res="$(state nix-serve.service) Result=$(show nix-serve.service Result) ExecMainStatus=$(show nix-serve.service ExecMainStatus)"
check "idle exit after ${IDLE}s: $res (${TI:+$(since "$TI")s after the last request})" \
    test "$res" = "inactive/dead Result=success ExecMainStatus=0"
check "socket still $(state nix-serve.socket) after the idle exit" test "$(state nix-serve.socket)" = active/listening
# --metrics-file in StateDirectory=: written by the dynamic user under the
# sandbox, and carried from one activation to the next (README "Operating it").
prom=$(ns cat /var/lib/nix-serve/metrics.prom 2>&1)
metric() { sed -n "s/^$1 //p" <<<"$prom"; }
check "metrics file after the idle exit: $(metric nix_serve_activations_total) activations, $(metric nix_serve_idle_exits_total) idle exit(s), $(metric 'nix_serve_requests_total{route="nix-cache-info",status="200"}') nix-cache-info" \
    bash -c '[[ $1 -ge 2 && $2 -ge 1 ]]' _ "$(metric nix_serve_activations_total)" "$(metric nix_serve_idle_exits_total)"
ci=$(get nix-cache-info)
check "next client is served: '$(head -1 <<<"$ci")', new MainPID $(show nix-serve.service MainPID) (was $MAIN)" \
    bash -c '[[ $1 == StoreDir:* && $2 -gt 0 && $2 != "$3" ]]' _ "$ci" "$(show nix-serve.service MainPID)" "$MAIN"

# --- systemctl restart while a client loops ----------------------------------------------
P_LEAF=$(fixture dep-leaf)
LOOP_URL="http://127.0.0.1:$PORT/$(hash_of "$P_LEAF").narinfo"
printf '%s\tStorePath: %s\n' "$LOOP_URL" "$P_LEAF" >"$S/loop-leaf.tsv"
ns rm -f /tmp/stop-loop
ns python3 "$INNER/stage/client.py" loop "$INNER/stage/loop-leaf.tsv" /tmp/stop-loop 40 >"$RUN/loop.txt" 2>&1 &
LOOP=$!
sleep 1
RESTARTS=3
ns systemctl reset-failed nix-serve.service
for _ in $(seq 1 $RESTARTS); do
    ns systemctl restart nix-serve.service
    sleep 0.7
done
ns touch /tmp/stop-loop
wait "$LOOP"
loop=$(head -1 "$RUN/loop.txt")
check "systemctl restart ×$RESTARTS while a client loops on narinfo: $loop" \
    bash -c '[[ $1 =~ ^requests\ ([0-9]+)\ failed\ 0$ && ${BASH_REMATCH[1]} -gt 10 ]]' _ "$loop"
grep '^failure' "$RUN/loop.txt" | sed 's/^/INFO /'
echo "FIGURE systemctl restart x$RESTARTS while a client loops on narinfo: $loop"

# --- systemctl stop during a 10 MiB NAR download ------------------------------------------
P_BIG=$(fixture big-10M)
url=$(get "$(hash_of "$P_BIG").narinfo" | sed -n 's/^URL: //p')
ns python3 "$INNER/stage/client.py" download "http://127.0.0.1:$PORT/$url" /tmp/big.nar 2500000 \
    >"$RUN/big.txt" 2>&1 &
DL=$!
TD=$(date +%s.%N)
# Stop once the first MiB has arrived: the server is then surely sending.
for _ in $(seq 1 200); do ns test -e /tmp/big.nar.started && break; sleep 0.1; done
TS=$(date +%s.%N)
stop_out=$(ns systemctl stop nix-serve.service 2>&1 | grep -v 'can still be activated by\|nix-serve.socket$')
TSTOP=$(since "$TS")
wait "$DL"
TD=$(since "$TD")
same=$( [[ $(ns sha256sum /tmp/big.nar | cut -c1-64) == $(nix-store --dump "$P_BIG" | sha256sum | cut -c1-64) ]] && echo yes)
check "systemctl stop during a 10 MiB NAR download (2.5 MB/s, 64 KiB receive buffer): the download finishes ($(cat "$RUN/big.txt"), ${TD}s, NAR identical: ${same:-no}); stop (after the first MiB) returned after ${TSTOP}s${stop_out:+ saying '$stop_out'}, $(state nix-serve.service) Result=$(show nix-serve.service Result)" \
    bash -c '[[ $1 == "HTTP 200 "* && $2 == yes && $3 == inactive/dead && $4 == success ]]' _ \
    "$(cat "$RUN/big.txt")" "$same" "$(state nix-serve.service)" "$(show nix-serve.service Result)"
echo "FIGURE systemctl stop during a 10 MiB download: stop took ${TSTOP}s, the download ${TD}s in all, intact: ${same:-no}"

# --- transient failure: the nix-daemon restarts -------------------------------------------
# The service talks to a nix-daemon that the test stops and starts. Down at
# start-up: the server exits "store unavailable", systemd restarts it, and the
# client waiting in the socket is served once the daemon is back. Down while
# serving: a 503 and an error in the journal; back: served again.
ns install -m 0644 "$INNER/stage/test-nix-daemon.service" /etc/systemd/system/
ns install -D -m 0644 /dev/stdin /etc/systemd/system/nix-serve.service.d/zz-test-daemon.conf \
    <<<$'[Service]\nEnvironment="NIX_SERVE_OPTS=--store unix:///run/test-nix-daemon/socket"'
ns systemctl daemon-reload
ns systemctl stop nix-serve.service 2>/dev/null
ns systemctl reset-failed nix-serve.service nix-serve.socket 2>/dev/null
JSINCE=$(ns date +%s)
TT=$(date +%s.%N)
ns curl -sS -m 30 -o /dev/null -w '%{http_code}' "$LOOP_URL" >"$RUN/transient.txt" 2>&1 &
CL=$!
sleep 3
ns systemctl start test-nix-daemon.service
wait "$CL"
TT=$(since "$TT")
check "nix-daemon down at start-up, up 3 s later: the waiting client got HTTP $(cat "$RUN/transient.txt") after ${TT}s; service $(state nix-serve.service), NRestarts=$(show nix-serve.service NRestarts)" \
    bash -c '[[ $1 == 200 && $2 == active/running && $3 -ge 1 ]]' _ "$(cat "$RUN/transient.txt")" "$(state nix-serve.service)" "$(show nix-serve.service NRestarts)"
# A narinfo this process has not been asked for needs the daemon, so asking
# for it while the daemon is down is a 503.
TOP_URL="http://127.0.0.1:$PORT/$(hash_of "$P_TOP").narinfo"
ns systemctl stop test-nix-daemon.service
cached=$(ns curl -s -m 40 -o /dev/null -w '%{http_code}' "$LOOP_URL")
down=$(ns curl -s -m 40 -o /dev/null -w '%{http_code}' "$TOP_URL")
ns systemctl start test-nix-daemon.service
sleep 0.3
up=$(ns curl -s -m 40 -o /dev/null -w '%{http_code}' "$TOP_URL")
check "nix-daemon restarted while serving: HTTP $down while down, $up once back, no operator" \
    test "$down/$up" = 503/200
# 200 if the worker that answers still remembers it (a per-connection cache).
info "while the daemon was down, a narinfo asked before: HTTP $cached"
# The journal: the store error at priority err, the start-up line only at info.
errs=$(ns journalctl -u nix-serve.service -p err --since "@$JSINCE" -o cat 2>/dev/null)
infos=$(ns journalctl -u nix-serve.service -p info --since "@$JSINCE" -o cat 2>/dev/null)
check "journalctl -p err: the store errors ($(grep -c . <<<"$errs") lines, first: '$(head -1 <<<"$errs")') and no info line" \
    bash -c 'grep -q "test-nix-daemon/socket" <<<"$1" && ! grep -q "Serving store" <<<"$1" && grep -q "Serving store" <<<"$2"' _ "$errs" "$infos"
ns rm /etc/systemd/system/nix-serve.service.d/zz-test-daemon.conf
ns systemctl daemon-reload
ns systemctl stop nix-serve.service test-nix-daemon.service 2>/dev/null

# --- permanent failure: a bad key, a bad flag ----------------------------------------------
# The client waiting in the socket must be turned away (not left to its own
# time-out), later clients refused, and `systemctl status` must say why.
permanent() {
    local what=$1 dropin=$2 expect=$3 t0 out st sock status_text since j said exits
    since=$(date +%s.%N)
    ns install -D -m 0644 /dev/stdin /etc/systemd/system/nix-serve.service.d/zz-test-bad.conf <<<"$dropin"
    ns systemctl daemon-reload
    ns systemctl reset-failed nix-serve.service nix-serve.socket 2>/dev/null
    ns systemctl start nix-serve.socket
    t0=$(date +%s.%N)
    out=$(ns curl -sS -m 30 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/nix-cache-info" 2>&1)
    t0=$(since "$t0")
    sock=$(state nix-serve.socket)
    st=$(ns systemctl status --no-pager -l -n 20 nix-serve.service nix-serve.socket 2>&1)
    echo "$st" >"$RUN/status-$what.txt"
    later=$(ns curl -sS -m 5 -o /dev/null "http://127.0.0.1:$PORT/nix-cache-info" 2>&1)
    check "$what: the waiting client is turned away after ${t0}s ('${out//$'\n'/ }'), the socket is $sock ($(show nix-serve.socket Result)), the next client: '$later'; systemctl status shows '$expect'" \
        bash -c '[[ $1 != 200 && $2 == failed/failed && $3 == *"curl: (7)"* ]] && grep -qF -- "$4" <<<"$5"' _ \
        "$out" "$sock" "$later" "$expect" "$st"
    # Once per start in the journal: stderr and syslog both reach it.
    j=$(ns journalctl -u nix-serve.service --since "@$since" -o cat 2>/dev/null)
    said=$(grep -cF -- "$expect" <<<"$j")
    exits=$(grep -c "Main process exited" <<<"$j")
    check "$what: the journal says '$expect' once per start: $said time(s) for $exits exit(s)" \
        test "$said" = "$exits" -a "$exits" -ge 1
    echo "FIGURE refused after a permanent failure ($what): ${t0}s"
    ns rm /etc/systemd/system/nix-serve.service.d/zz-test-bad.conf
}
ns cp /etc/nix/nix-serve.key /tmp/good.key
ns sh -c "echo '$KEYNAME:not-base64!' >/etc/nix/nix-serve.key"
permanent "bad key" $'[Service]\n' "invalid base64"
ns cp /tmp/good.key /etc/nix/nix-serve.key
permanent "bad flag" $'[Service]\nEnvironment=NIX_SERVE_OPTS=--no-such-flag' "unexpected argument '--no-such-flag'"
permanent "unreadable key" $'[Service]\nEnvironment="NIX_SERVE_OPTS=--sign-key-file /etc/nix/nix-serve.key"' "Permission denied"

# --- Basic authentication: the htpasswd file as a credential ---------------------------------
# As an administrator would: `htpasswd -B`, a root-only file, a drop-in with
# LoadCredential= and --htpasswd under %d (the dynamic user cannot read
# /etc/nix). Then a file with a {SHA} entry must fail the start for good.
ns systemctl reset-failed nix-serve.service nix-serve.socket 2>/dev/null
ns systemctl start nix-serve.socket
ns htpasswd -cbB /etc/nix/nix-serve.htpasswd alice secret 2>/dev/null
ns chmod 600 /etc/nix/nix-serve.htpasswd
ns install -D -m 0644 /dev/stdin /etc/systemd/system/nix-serve.service.d/zz-test-auth.conf \
    <<<$'[Service]\nLoadCredential=nix-serve.htpasswd:/etc/nix/nix-serve.htpasswd\nEnvironment="NIX_SERVE_OPTS=--htpasswd %d/nix-serve.htpasswd"'
ns systemctl daemon-reload
ns systemctl stop nix-serve.service 2>/dev/null
TOP_NI="http://127.0.0.1:$PORT/$(hash_of "$P_TOP").narinfo"
anon=$(ns curl -s -m 15 -o /dev/null -w '%{http_code}' "$TOP_NI")
user=$(ns curl -s -m 15 -o /dev/null -w '%{http_code}' -u alice:secret "$TOP_NI")
wrong=$(ns curl -s -m 15 -o /dev/null -w '%{http_code}' -u alice:wrong "$TOP_NI")
info_code=$(ns curl -s -m 15 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/nix-cache-info")
said=$(ns journalctl -u nix-serve.service -o cat 2>/dev/null | grep -c 'Basic authentication: 1 user(s)')
check "--htpasswd as a credential: narinfo without credentials HTTP $anon, as alice $user, with a wrong password $wrong, /nix-cache-info $info_code; the start-up line names the users ($said)" \
    test "$anon/$user/$wrong/$info_code" = 401/200/401/200 -a "$said" -ge 1
ns sh -c 'echo "bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=" >>/etc/nix/nix-serve.htpasswd'
# The running process read the file at its start; the next one reads this.
ns systemctl stop nix-serve.service
permanent "htpasswd with a {SHA} entry" $'[Service]\n' "line 2: user \"bob\": SHA-1 ({SHA}) hashes are not accepted"
ns rm /etc/systemd/system/nix-serve.service.d/zz-test-auth.conf /etc/nix/nix-serve.htpasswd
# What docs/install.md tells an administrator to do once the cause is fixed.
ns systemctl daemon-reload
out=$(ns bash -c "set -e; $(cat "$RECOVER_SH")" 2>&1)
ci=$(get nix-cache-info)
check "fixed, then docs/install.md's reset-failed block ('${out}'): served again ('$(head -1 <<<"$ci")')" \
    bash -c '[[ $1 == StoreDir:* ]]' _ "$ci"

# --- the store database under a writer ------------------------------------------------------
# The nix-daemon adds paths in a loop (WAL mode; its -wal and -shm files come
# and go, owned by root) while the service, a dynamic user that may only read
# the database, restarts a few times and a client asks for every fixture's
# narinfo: each answer must be right, none a 503 ("database is locked"), each
# freshly added path visible at once, and every start must read the
# database directly, never fall back to the daemon. For the first starts an
# idle nix-daemon connection holds the database open (as on a busy machine);
# then it goes, and the writer's own connections come and go: whenever none
# has it open at a start, the service holds it through a daemon connection of
# its own (the idle database below).
: >"$S/loop-all.tsv"
while IFS=$'\t' read -r _ p; do
    printf 'http://127.0.0.1:%s/%s.narinfo\tStorePath: %s\tNarHash: %s\n' \
        "$PORT" "$(hash_of "$p")" "$p" "$(nix-store -q --hash "$p")" >>"$S/loop-all.tsv"
done <"$FIX/paths.tsv"
cat >"$S/writer.sh" <<'EOF'
# Adds a path through the nix-daemon, then asks the cache for it, until $1 exists.
mkdir -p /tmp/writer
i=0 bad=0
while [ ! -e "$1" ] && [ "$i" -lt 2000 ]; do
    i=$((i + 1))
    echo "nix-serve-sd real-systemd test $2 $i" >/tmp/writer/f
    p=$(NIX_REMOTE=daemon nix-store --add /tmp/writer/f) || { bad=$((bad + 1)); continue; }
    echo "$p" >>/tmp/writer/added
    h=$(basename "$p" | cut -c1-32)
    curl -s -m 20 "http://127.0.0.1:5000/$h.narinfo" | grep -qx "StorePath: $p" \
        || { bad=$((bad + 1)); echo "fresh path $p: not served" >&2; }
done
echo "added $i failed $bad"
EOF
JSINCE=$(ns date +%s)
ns rm -f /tmp/stop-loop /tmp/stop-writer /tmp/stop-hold
ns systemctl stop nix-serve.service 2>/dev/null
ns python3 "$INNER/stage/client.py" hold /nix/var/nix/daemon-socket/socket /tmp/stop-hold 40 >"$RUN/hold.txt" 2>&1 &
HOLD=$!
sleep 0.5
ns bash "$INNER/stage/writer.sh" /tmp/stop-writer "$STAMP" >"$RUN/writer.txt" 2>&1 &
WR=$!
ns python3 "$INNER/stage/client.py" loop "$INNER/stage/loop-all.tsv" /tmp/stop-loop 40 >"$RUN/loop-all.txt" 2>&1 &
LOOP=$!
for i in 1 2 3 4; do
    sleep 1.5
    [[ $i == 3 ]] && ns touch /tmp/stop-hold
    ns systemctl restart nix-serve.service
done
sleep 2
ns touch /tmp/stop-loop /tmp/stop-writer /tmp/stop-hold
wait "$LOOP" "$WR" "$HOLD"
journal() { ns journalctl -u nix-serve.service --since "@$JSINCE" -o cat "$@"; }
starts=$(journal | grep -c '^Serving store')
backends=$(journal | sed -n 's/^Serving store \([a-z]*\) .*/\1/p' | sort | uniq -c | tr -s ' \n' ' ')
fallbacks=$(journal | grep -c "using the daemon")
locked=$(journal | grep -ci "locked")
check "database under a writer: $(head -1 "$RUN/loop-all.txt") (every fixture's StorePath and NarHash); writer: $(tail -1 "$RUN/writer.txt"); $starts starts, backends:${backends}; 'using the daemon' logged $fallbacks times; 'locked' in the log $locked times" \
    bash -c '[[ $1 =~ ^requests\ [1-9][0-9]*\ failed\ 0$ && $2 =~ ^added\ [1-9][0-9]*\ failed\ 0$ && $3 == 0 && $4 -ge 1 && $5 == 0 && $6 == " $4 local " ]]' _ \
    "$(head -1 "$RUN/loop-all.txt")" "$(tail -1 "$RUN/writer.txt")" "$fallbacks" "$starts" "$locked" "$backends"
grep -v '^holding' "$RUN/hold.txt" | sed 's/^/INFO hold: /'
grep -h '^failure\|not served' "$RUN/loop-all.txt" "$RUN/writer.txt" | head -5 | sed 's/^/INFO /'
journal -p warning | sort | uniq -c | head -5 | sed 's/^/INFO log: /'
# The test's paths go again (nothing refers to them).
ns sh -c 'NIX_REMOTE=daemon nix-store --delete $(cat /tmp/writer/added) >/dev/null 2>&1' \
    || info "could not delete the writer's paths"

# --- an idle database: read directly, held open through the nix-daemon -------------------
# On an idle machine no Nix process has the store's database open, so its
# -wal and -shm files do not exist, and the service's dynamic user, which may
# not write the db directory, cannot open it alone. `auto` then opens a
# nix-daemon connection, whose worker holds the database open, reads it
# directly and keeps that connection until it exits. The store here is the
# test's own (nss-idle-daemon.service above), named to the service as `auto`
# names any: NIX_STATE_DIR and NIX_DAEMON_SOCKET_PATH. Then the cold start,
# activation to the first answer, with the database idle, held by another
# connection (no daemon connection of the service's own needed), and through
# the daemon backend (what `auto` used on an idle database before).
ns install -m 0644 "$INNER/stage/nss-idle-daemon.service" /etc/systemd/system/
ns sh -c "mkdir -p /tmp/idle && echo 'nix-serve-sd idle store $STAMP' >/tmp/idle/f"
P_IDLE=$(ns nix-store --store "local?root=$IDLE_ROOT" --add /tmp/idle/f 2>&1)
IDLE_URL="http://127.0.0.1:$PORT/$(hash_of "$P_IDLE").narinfo"
ns install -D -m 0644 /dev/stdin /etc/systemd/system/nix-serve.service.d/zz-test-idle.conf \
    <<<"[Service]"$'\n'"Environment=NIX_STATE_DIR=$IDLE_ROOT/nix/var/nix NIX_DAEMON_SOCKET_PATH=$IDLE_SOCK"
ns systemctl daemon-reload
ns systemctl stop nix-serve.service 2>/dev/null
ns systemctl reset-failed nix-serve.service nix-serve.socket 2>/dev/null
ns systemctl start nss-idle-daemon.service nix-serve.socket
for _ in $(seq 1 100); do ns test -S "$IDLE_SOCK" && break; sleep 0.1; done
IDLE_CG=/sys/fs/cgroup/system.slice/nss-idle-daemon.service/cgroup.procs
# The daemon and one worker per open connection.
daemon_procs() { ns cat "$IDLE_CG" 2>/dev/null | grep -c .; }
shm() { if ns test -e "$IDLE_DB-shm"; then echo present; else echo absent; fi; }
# Waits (at most 10 s) until the database is idle again: no -shm, no worker.
wait_idle() {
    for _ in $(seq 1 100); do
        [[ $(shm) == absent && $(daemon_procs) == 1 ]] && return 0
        sleep 0.1
    done
    return 1
}
# The same, but first removes -wal and -shm left behind: SQLite removes them
# only at a close that finds no other connection and may write the directory,
# so a reader that closes last (the service after the other client's worker,
# or the daemon backend's own reader) leaves them. A daemon connection opened
# and closed alone, its worker then the last, removes them.
make_idle() {
    for _ in $(seq 1 100); do
        [[ $(daemon_procs) == 1 ]] && break
        sleep 0.1
    done
    [[ $(shm) == absent ]] || ns python3 "$INNER/stage/client.py" hold "$IDLE_SOCK" /tmp/no-stop-file 0 >/dev/null 2>&1
    wait_idle
}
wait_idle
before="-shm $(shm), $(daemon_procs) daemon process(es)"
JSINCE=$(ns date +%s)
first=$(ns curl -sS -m 20 "$IDLE_URL" 2>&1)
during="-shm $(shm), $(daemon_procs) daemon process(es)"
said=$(ns journalctl -u nix-serve.service --since "@$JSINCE" -o cat 2>/dev/null)
check "idle database ($P_IDLE; before: $before): the activating request is answered ('$(head -1 <<<"$first")') from the database ('$(grep -o "Serving store [a-z]* [^ ]*" <<<"$said" | head -1)'), held by the service's own nix-daemon connection (while it runs: $during)" \
    bash -c '[[ $1 == "-shm absent, 1 daemon process(es)" && $2 == "StorePath: $3" && $4 == *"Serving store local $5 "* && $4 == *"held open by a connection to the nix-daemon at $6"* && $4 != *"using the daemon"* && $7 == "-shm present, 2 daemon process(es)" ]]' _ \
    "$before" "$(head -1 <<<"$first")" "$P_IDLE" "$said" "$IDLE_DB" "$IDLE_SOCK" "$during"
grep "held open" <<<"$said" | sed 's/^/INFO log: /'
# Idle exit: the connection goes with the process, and Nix's worker, the
# last to close the database, removes -wal and -shm.
for _ in $(seq 1 $(( (IDLE + 15) * 5 ))); do
    [[ $(show nix-serve.service ActiveState) == active ]] || break
    sleep 0.2
done
wait_idle
check "idle database: after the idle exit ($(state nix-serve.service)) -shm is $(shm), $(daemon_procs) daemon process(es) left" \
    test "$(state nix-serve.service)/$(shm)/$(daemon_procs)" = inactive/dead/absent/1

# The cold start, TRIALS activations per case, interleaved: stop the
# service, make the database idle, put it in the case's state, time
# one request that activates (curl's time_total: connect to last byte), and
# count the daemon's processes then (the daemon and a worker per connection).
TRIALS=7
cold() {  # CASE; appends "CASE STATUS SECONDS PROCESSES", or why its state did not hold
    local state=ok hold=
    ns systemctl stop nix-serve.service 2>/dev/null
    make_idle || state="not-idle:-shm-$(shm),$(daemon_procs)-processes"
    case $1 in
        held)
            ns rm -f /tmp/stop-idle-hold
            ns python3 "$INNER/stage/client.py" hold "$IDLE_SOCK" /tmp/stop-idle-hold 30 >/dev/null 2>&1 &
            hold=$!
            for _ in $(seq 1 100); do [[ $(shm) == present && $(daemon_procs) == 2 ]] && break; sleep 0.1; done
            [[ $(shm) == present && $(daemon_procs) == 2 ]] || state="not-held:-shm-$(shm),$(daemon_procs)-processes" ;;
        daemon)
            ns install -D -m 0644 /dev/stdin /etc/systemd/system/nix-serve.service.d/zz-test-idle-daemon.conf \
                <<<"[Service]"$'\n'"Environment=\"NIX_SERVE_OPTS=--store unix://$IDLE_SOCK\""
            ns systemctl daemon-reload ;;
    esac
    if [[ $state == ok ]]; then
        echo "$1 $(ns curl -sS -m 20 -o /dev/null -w '%{http_code} %{time_total}' "$IDLE_URL" 2>&1 | tr -s ' \n' '  ') $(daemon_procs)"
    else
        echo "$1 $state"
    fi >>"$RUN/cold.txt"
    case $1 in
        held) ns touch /tmp/stop-idle-hold; wait "$hold" ;;
        daemon)
            ns rm /etc/systemd/system/nix-serve.service.d/zz-test-idle-daemon.conf
            ns systemctl daemon-reload ;;
    esac
}
median_ms() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) * 1000 }'; }
: >"$RUN/cold.txt"
for _ in $(seq 1 $TRIALS); do
    for c in idle held daemon; do cold "$c"; done
done
ns systemctl stop nix-serve.service 2>/dev/null
# Idle or held, the service runs one daemon connection at most: its own
# holder, or none besides the other client's.
bad=$(awk '$2 != 200 || ($1 != "daemon" && $4 != 2)' "$RUN/cold.txt" | head -3 | tr '\n' ' ')
check "cold starts on the test's store: $(grep -c . "$RUN/cold.txt") activations, each in its case's state, answered 200, idle or held with the daemon and one worker${bad:+ (not: $bad)}" \
    test -z "$bad"
for c in idle held daemon; do
    echo "INFO cold start, $c: $(awk -v c="$c" '$1 == c { printf "%.1f ", $3 * 1000 }' "$RUN/cold.txt")ms"
done
echo "FIGURE cold start to narinfo under systemd, median of $TRIALS: idle database (held through a daemon connection of the service's own) $(awk '$1 == "idle" { print $3 }' "$RUN/cold.txt" | median_ms) ms, database held by another connection $(awk '$1 == "held" { print $3 }' "$RUN/cold.txt" | median_ms) ms, daemon backend $(awk '$1 == "daemon" { print $3 }' "$RUN/cold.txt" | median_ms) ms"
ns rm /etc/systemd/system/nix-serve.service.d/zz-test-idle.conf
ns systemctl stop nss-idle-daemon.service
ns systemctl daemon-reload

# --- who may connect: systemd/allowed-ips.conf on the socket ------------------------------
# The shipped drop-in with its addresses replaced: 127.0.0.1 only. The
# namespace has only loopback, where every 127/8 address is local, so
# 127.0.0.2 is the denied client. It must not be served, and must not even
# start the service: the kernel drops its packets before the socket sees a
# connection. Where systemd cannot attach the filter (no cgroup BPF), the
# check is skipped with systemd's own words, never passed.
sed -e '/^IPAddressAllow=/d' -e 's/^IPAddressDeny=any$/IPAddressAllow=127.0.0.1\n&/' \
    "$S/repo/systemd/allowed-ips.conf" >"$S/allowed-ips-test.conf"
ns install -D -m 0644 "$INNER/stage/allowed-ips-test.conf" /etc/systemd/system/nix-serve.socket.d/allowed-ips.conf
JSINCE=$(ns date +%s)
ns systemctl daemon-reload
ns systemctl stop nix-serve.service nix-serve.socket 2>/dev/null
ns systemctl reset-failed nix-serve.service nix-serve.socket 2>/dev/null
ns systemctl start nix-serve.socket
allow=$(show nix-serve.socket IPAddressAllow)
deny=$(show nix-serve.socket IPAddressDeny)
inv_before=$(show nix-serve.service InvocationID)
svc_before=$(state nix-serve.service)
denied=$(ns curl -sS -m 3 --interface 127.0.0.2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/nix-cache-info" 2>&1)
sleep 0.5
svc_after=$(state nix-serve.service)
inv_after=$(show nix-serve.service InvocationID)
bpf=$(ns journalctl --since "@$JSINCE" -o cat 2>/dev/null | grep -i 'bpf\|firewall' | head -3 | tr '\n' ' ')
if [[ $denied == 200 && -n $bpf ]]; then
    echo "SKIP ip filter: systemd cannot apply IPAddressDeny= here: $bpf"
else
    check "allowed-ips.conf (IPAddressAllow=$allow, IPAddressDeny=$deny): a client from 127.0.0.2 gets '${denied//$'\n'/ }'; the service stays $svc_after (was $svc_before), InvocationID ${inv_after:-none} (was ${inv_before:-none}), NRestarts=$(show nix-serve.service NRestarts)" \
        bash -c '[[ $1 != 200 && $1 == *"timed out"* && $2 == inactive/dead && $3 == "$4" ]]' _ \
        "$denied" "$svc_after" "$inv_after" "$inv_before"
    allowed=$(ns curl -sS -m 15 --interface 127.0.0.1 "http://127.0.0.1:$PORT/nix-cache-info" 2>&1)
    check "allowed-ips.conf: a client from 127.0.0.1 is served ('$(head -1 <<<"$allowed")'), service $(state nix-serve.service)" \
        bash -c '[[ $1 == StoreDir:* && $2 == active/running ]]' _ "$allowed" "$(state nix-serve.service)"
    [[ -n $bpf ]] && info "journal on the filter: $bpf"
fi
ns rm /etc/systemd/system/nix-serve.socket.d/allowed-ips.conf
ns systemctl daemon-reload
ns systemctl restart nix-serve.socket

# --- the live security score ----------------------------------------------------------------
sec=$(ns systemd-analyze security --no-pager nix-serve.service 2>&1)
score=$(grep -o 'Overall exposure level for nix-serve.service: [0-9.]*' <<<"$sec" | grep -o '[0-9.]*$')
doc=$(grep -o 'rates the unit as shipped at [0-9.]*[0-9]' "$REPO/docs/install.md" | grep -o '[0-9.]*$')
check "systemd-analyze security, live: ${score:-?} (docs/install.md says ${doc:-?})" \
    bash -c '[[ -n $1 && $1 == "$2" ]]' _ "$score" "$doc"
echo "FIGURE systemd-analyze security nix-serve.service (live): ${score:-?}"

# --- end: kill the namespace, compare the host ---------------------------------------------
[[ $FAILS == 0 ]] || ns journalctl -b --no-hostname -o short-monotonic >"$RUN/journal.txt" 2>&1
cleanup
trap - EXIT
snapshot >"$RUN/host-after.txt"
if diff -u "$RUN/host-before.txt" "$RUN/host-after.txt" >"$RUN/host-diff.txt"; then
    pass "host unchanged (sysctls, mounts, /etc/systemd/system, /run, /usr/local/bin, /etc/nix, cgroups)"
else
    fail "host changed:"; sed 's/^/    /' "$RUN/host-diff.txt" | head -20
fi
info "total $(since "$T0")s; logs in $RUN"
if [[ $FAILS == 0 ]]; then
    echo "RESULT: PASS ($PASSES checks)"
    rm -rf "$RUN"
    exit 0
fi
echo "RESULT: FAIL ($FAILS of $((PASSES + FAILS)) checks failed)"
exit 1
