#!/usr/bin/env bash
# Owns: a cached Debian trixie root with RabbitMQ 4.0, and the 4.0 test brokers run from it (a single node, a three-node cluster, an epmd each); never the machine's broker.
#
# Usage (results on stdout, diagnostics on stderr; exit 0 on success):
#   rabbitmq4.sh prepare                build the root if missing or incomplete (debootstrap + apt-get, ~70 s)
#   rabbitmq4.sh start-single           -> "amqp://guest:guest@127.0.0.1:<port>/%2f", "http://127.0.0.1:<mgmt_port>"
#   rabbitmq4.sh start-cluster          -> "<node> <amqp_port> <mgmt_port> <os_pid>" x3 (as cluster.sh start)
#   rabbitmq4.sh stop-single|stop-cluster   kill the nodes and their epmd, remove their data dir; idempotent
#   rabbitmq4.sh status                 -> "<instance> <node> <amqp_port> <mgmt_port> <pid|->" per node,
#                                          "<instance> khepri_db <state>" per running instance
#   rabbitmq4.sh nodes single|cluster   -> "<node> <amqp_port> <mgmt_port> <pid|->" (beam.smp: kill -STOP/-CONT it)
#   rabbitmq4.sh kill9 <node>           -> "<pid>" of the beam.smp that was kill -9'd
#   rabbitmq4.sh leader <queue>         -> "<node>" leading the cluster's quorum queue <queue> (vhost /); exit 1 if none
#   rabbitmq4.sh ctl single|cluster <rabbitmqctl|rabbitmq-queues|rabbitmq-diagnostics|rabbitmq-plugins> <args...>
#                                          (with the instance's cookie; against its first node unless -n is given)
# start-* builds the root if needed, prints the same again for an instance already up, clears a stale one.
# start-cluster joins b and c to a, then enables khepri_db (4.0.5 requires --opt-in; KICKQ_RABBITMQ4_KHEPRI=0 skips).
# Env (defaults), all prefixed KICKQ_RABBITMQ4_: ROOT (${XDG_CACHE_HOME:-$HOME/.cache}/kickq/rabbitmq4-trixie),
#   MIRROR (http://deb.debian.org/debian), PREFIX (kq4: nodes kq4s@localhost; kq4a/b/c@localhost), START_TIMEOUT (180 s)
#   and per instance (node i = 0,1,2 adds i): {SINGLE,CLUSTER}_PORT (AMQP; 5761 / 5771), then, from that port P:
#   _MGMT_PORT (P+10000), _DIST_PORT (P+20000), _EPMD_PORT (P-1000; one per instance).  guest/guest works from
#   127.0.0.1 (the default loopback_users = [guest] keeps guest to loopback, which is all these brokers listen on).
# How: processes run as root via `unshare --mount` + `chroot`, in a private mount namespace with /proc, /dev and /sys
#   bind-mounted in: the host never sees those mounts and they vanish with the namespace's last process, so stopping
#   the nodes unmounts them (stop also sweeps host-visible mounts under the root, as an interrupted debootstrap leaves).
#   Node files (data, logs, config, plugins, pid, a HOME with a fresh cookie) live in <root>/kickq/<prefix>-<instance>;
#   /var/lib/rabbitmq and ~/.erlang.cookie are never used.  RABBITMQ_DIST_PORT pins the distribution port (4.0 sets
#   inet_dist_listen_min = max to it); CLI tools take an ephemeral one.  Everything binds 127.0.0.1.
# epmd: each instance runs its own (the root's epmd, on its EPMD_PORT), not the host's on 4369 that the machine's
#   broker depends on: nothing of ours is ever registered there, neither can disturb the other, and stop can remove
#   an instance's epmd without counting who else still uses it.

set -u -o pipefail
ROOT=${KICKQ_RABBITMQ4_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/kickq/rabbitmq4-trixie}; ROOT=${ROOT%/}
MIRROR=${KICKQ_RABBITMQ4_MIRROR:-http://deb.debian.org/debian}; PFX=${KICKQ_RABBITMQ4_PREFIX:-kq4}
START_TIMEOUT=${KICKQ_RABBITMQ4_START_TIMEOUT:-180}; KHEPRI=${KICKQ_RABBITMQ4_KHEPRI:-1}
RMQ=/usr/lib/rabbitmq/bin READY=.kickq-rabbitmq4-ready MARKER=.kq4-instance T0=${EPOCHREALTIME/[.,]/}
# "${IN_ROOT[@]}" VAR=value... cmd args...: run inside the root (clean environment, private mounts)
# shellcheck disable=SC2016
IN_ROOT=(unshare --mount --propagation private -- /bin/sh -c 'r=$1; shift
    for d in proc dev sys; do mount --rbind "/$d" "$r/$d" || exit 125; done
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8 "$@"' sh "$ROOT")

log() { local us=$(( ${EPOCHREALTIME/[.,]/} - T0 )); printf 'rabbitmq4.sh [%3d.%01ds]: %s\n' $((us / 1000000)) $((us / 100000 % 10)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '4,15s/^# \{0,1\}//p' "$0" >&2; exit 2; }
(( EUID == 0 )) || die "needs root (chroot, mount namespaces)"

setup() { # setup single|cluster: names, ports and dirs of that instance
    local i b m d e v=KICKQ_RABBITMQ4_${1^^}; INST=$1
    case $INST in single) SFX=(s) b=5761 ;; cluster) SFX=(a b c) b=5771 ;; *) usage ;; esac
    m=${v}_MGMT_PORT d=${v}_DIST_PORT e=${v}_EPMD_PORT v+=_PORT; b=${!v:-$b}
    m=${!m:-$((b + 10000))} d=${!d:-$((b + 20000))} EPMD_PORT=${!e:-$((b - 1000))}
    for i in "$b" "$m" "$d" "$EPMD_PORT"; do [[ $i =~ ^[0-9]+$ ]] && (( i >= 1024 && i <= 65533 )) && continue; die "bad port $i"; done
    IDIR=/kickq/$PFX-$INST HDIR=$ROOT/kickq/$PFX-$INST IDX=() NODES=() AMQP=() MGMT=() DIST=()
    for i in "${!SFX[@]}"; do
        IDX+=("$i") NODES[i]="$PFX${SFX[i]}@localhost" AMQP[i]=$((b + i)) MGMT[i]=$((m + i)) DIST[i]=$((d + i))
    done
}

cli() { # cli <tool> <args...>: a RabbitMQ CLI tool with this instance's cookie and epmd
    local tool=$1; shift
    timeout "${CLI_TIMEOUT:-60}" "${IN_ROOT[@]}" HOME="$IDIR/home" RABBITMQ_CONF_ENV_FILE="$IDIR/cli-env.conf" \
        ERL_EPMD_PORT="$EPMD_PORT" RABBITMQ_CTL_DIST_PORT_MIN=0 RABBITMQ_CTL_DIST_PORT_MAX=0 \
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" "$RMQ/$tool" "$@"
}
ctl() { cli rabbitmqctl "$@"; }
epmd_q() { chroot "$ROOT" /usr/bin/epmd -port "$EPMD_PORT" "$@" 2>/dev/null; }
epmd_has() { epmd_q -names | grep -q "^name ${1%@*} at port"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
env_pids() { # pids whose environment holds exactly $1 (every process of a node has RABBITMQ_NODENAME=<node>)
    grep -lzxF -- "$1" /proc/[0-9]*/environ 2>/dev/null | sed -n 's#^/proc/\([0-9]*\)/.*#\1#p' | grep -vx -- "$$" | sort -un
}
node_pids() { local i; for i in "${IDX[@]}"; do env_pids "RABBITMQ_NODENAME=${NODES[i]}"; done | tr '\n' ' ' | sed 's/ *$//'; }
beam_pid() { # index -> pid of the node's beam.smp, or failure
    local p; p=$(tr -dc '0-9' 2>/dev/null < "$HDIR/${SFX[$1]}/rabbit.pid")
    [[ -n $p && $(cat "/proc/$p/comm" 2>/dev/null) == beam.smp ]] \
        && grep -qzxF -- "RABBITMQ_NODENAME=${NODES[$1]}" "/proc/$p/environ" 2>/dev/null && echo "$p"
}
sweep_mounts() { # host-visible mounts under the root, deepest first
    awk -v r="$ROOT/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
        log "unmounting $m"; umount -l "$m" || log "WARNING: could not unmount $m"
    done
}

do_prepare() {
    [[ -f $ROOT/$READY ]] && return 0
    command -v debootstrap >/dev/null || die "debootstrap is not installed"
    { mkdir -p "${ROOT%/*}" && exec 9>"$ROOT.lock" && flock 9; } || die "cannot lock $ROOT.lock"   # one builder at a time
    [[ -f $ROOT/$READY ]] && { exec 9>&-; return 0; }
    local t=$SECONDS ver; sweep_mounts
    if [[ -e $ROOT ]]; then log "removing incomplete $ROOT"; rm -rf --one-file-system -- "$ROOT" || die "rm failed"; fi
    log "debootstrap --variant=minbase trixie $ROOT $MIRROR"
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >&2 || { sweep_mounts; die "debootstrap failed"; }
    # no postinst may start a service: it would be rabbit@<host> on 5672, the machine's broker's ports
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d" && chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
    log "apt-get install rabbitmq-server in the root"
    { "${IN_ROOT[@]}" apt-get -q update && "${IN_ROOT[@]}" DEBIAN_FRONTEND=noninteractive \
        apt-get -q install -y --no-install-recommends rabbitmq-server; } >&2 || die "apt-get install rabbitmq-server failed"
    "${IN_ROOT[@]}" apt-get clean
    [[ -x $ROOT$RMQ/rabbitmq-server && -x $ROOT/usr/bin/epmd ]] || die "no rabbitmq-server/epmd in the root"
    # shellcheck disable=SC2016
    ver=$(chroot "$ROOT" dpkg-query -W -f '${Version}' rabbitmq-server) || die "dpkg-query failed"
    echo "rabbitmq-server $ver" > "$ROOT/$READY"; exec 9>&-
    log "root ready in $((SECONDS - t)) s: rabbitmq-server $ver"
}

do_stop() { # SIGCONT + SIGTERM (orderly init:stop) to each beam.smp, kill -9 after 10 s ("fast": at once)
    local p left i deadline=$((SECONDS + 10))
    [[ ${1:-} == fast ]] && deadline=$SECONDS
    for i in "${IDX[@]}"; do p=$(beam_pid "$i") && kill -CONT "$p" && kill -TERM "$p"; done 2>/dev/null
    until left=$(node_pids); [[ -z $left ]] || (( SECONDS >= deadline )); do sleep 0.2; done
    [[ -n $left ]] && log "kill -9 $left"
    # shellcheck disable=SC2046,SC2086 # word-split on purpose; the instance's epmd goes too (it holds no state)
    kill -9 $left $(env_pids "KQ4_EPMD=$EPMD_PORT") 2>/dev/null
    deadline=$((SECONDS + 10))
    until left=$(node_pids; env_pids "KQ4_EPMD=$EPMD_PORT"); [[ -z $left ]]; do
        (( SECONDS >= deadline )) && { log "WARNING: still present after stop: ${left//$'\n'/ }"; break; }
        sleep 0.2
    done
    if [[ -f $HDIR/$MARKER ]]; then rm -rf --one-file-system -- "$HDIR"
    elif [[ -e $HDIR ]]; then log "WARNING: no $MARKER in $HDIR, not removing it"; fi
    rmdir "$ROOT/kickq" 2>/dev/null; sweep_mounts; log "$INST stopped"
    [[ -z $left ]]
}

print_nodes() { local i p; for i in "${IDX[@]}"; do p=$(beam_pid "$i") || p=-; echo "${NODES[i]} ${AMQP[i]} ${MGMT[i]} $p"; done; }
print_start() { [[ $INST == cluster ]] && { print_nodes; return; }
    printf 'amqp://guest:guest@127.0.0.1:%s/%%2f\nhttp://127.0.0.1:%s\n' "${AMQP[0]}" "${MGMT[0]}"; }

launch_node() {
    local i=$1 nd=$IDIR/${SFX[$1]} hd=$HDIR/${SFX[$1]}
    mkdir -p "$hd/mnesia" "$hd/log" "$hd/conf.d"; : > "$hd/rabbitmq-env.conf"
    printf '%s\n' "listeners.tcp.1 = 127.0.0.1:${AMQP[i]}" "management.tcp.ip = 127.0.0.1" \
        "management.tcp.port = ${MGMT[i]}" "cluster_name = $PFX-$INST" "log.console = false" \
        "cluster_partition_handling = pause_minority" > "$hd/rabbitmq.conf"
    # b and c boot without plugins: they are reset at once (as in cluster.sh); start_app re-reads the file
    if (( i == 0 )); then echo '[rabbitmq_management].' ; else echo '[].'; fi > "$hd/enabled_plugins"
    ( cd / && exec setsid "${IN_ROOT[@]}" HOME="$IDIR/home" ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_NODENAME="${NODES[i]}" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="${AMQP[i]}" \
        RABBITMQ_DIST_PORT="${DIST[i]}" RABBITMQ_CONF_ENV_FILE="$nd/rabbitmq-env.conf" \
        RABBITMQ_MNESIA_BASE="$nd/mnesia" RABBITMQ_LOG_BASE="$nd/log" RABBITMQ_CONFIG_FILE="$nd/rabbitmq.conf" \
        RABBITMQ_CONFIG_FILES="$nd/conf.d" RABBITMQ_ADVANCED_CONFIG_FILE="$nd/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$nd/enabled_plugins" RABBITMQ_PID_FILE="$nd/rabbit.pid" \
        RABBITMQ_MOTD_FILE="$nd/motd" RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$RMQ/rabbitmq-server" ) > "$hd/stdout.log" 2>&1 < /dev/null &
    echo $! > "$hd/wrapper.pid"; disown $!
}

wait_booted() { # index deadline: until the node logged its startup and listens for AMQP; fail early if it died
    local i=$1 hd=$HDIR/${SFX[$1]} wpid; wpid=$(<"$hd/wrapper.pid")
    until grep -q 'Server startup complete' "$hd/log/${NODES[i]}.log" 2>/dev/null && port_busy "${AMQP[i]}"; do
        { kill -0 "$wpid" 2>/dev/null && (( SECONDS < $2 )); } || {
            log "node ${NODES[i]} did not boot; last lines of its logs:"
            tail -n 20 "$hd/stdout.log" "$hd/log/${NODES[i]}.log" 2>/dev/null | sed 's/^/    /' >&2
            start_fail "node ${NODES[i]} did not come up"; }
        sleep 0.2
    done
}
start_fail() { log "ERROR: $*"; log "cleaning up"; do_stop fast; exit 1; }

join_cluster() { # deadline: b and c join a, then all three must be running
    local i j jobs=() want running
    for i in 1 2; do ( ctl -n "${NODES[i]}" stop_app && ctl -n "${NODES[i]}" reset ) >&2 & jobs+=($!); done
    for j in "${jobs[@]}"; do wait "$j" || start_fail "stop_app/reset failed"; done
    for i in 1 2; do
        ctl -n "${NODES[i]}" join_cluster "${NODES[0]}" >&2 || start_fail "join_cluster of ${NODES[i]} failed"
        echo '[rabbitmq_management].' > "$HDIR/${SFX[i]}/enabled_plugins"
    done
    jobs=(); for i in 1 2; do ctl -n "${NODES[i]}" start_app >&2 & jobs+=($!); done
    for j in "${jobs[@]}"; do wait "$j" || start_fail "start_app failed"; done
    want=$(printf '%s\n' "${NODES[@]}" | sort | tr '\n' ' ')
    until running=$(ctl -n "${NODES[0]}" cluster_status --formatter json 2>/dev/null \
              | grep -o '"running_nodes":\[[^]]*\]' | grep -o "${PFX}[abc]@[^\"]*" | sort | tr '\n' ' ')
          [[ $running == "$want" ]]; do
        (( SECONDS < $1 )) || start_fail "cluster did not converge (running: '$running')"; sleep 0.5
    done
    log "cluster of ${NODES[*]} running"
}

enable_khepri() { # 4.0 ships khepri_db as experimental: a plain enable is refused, --opt-in is required
    local out
    [[ $KHEPRI == 0 ]] && { log "khepri_db left disabled (KICKQ_RABBITMQ4_KHEPRI=0)"; return 0; }
    if out=$(ctl -n "${NODES[0]}" enable_feature_flag khepri_db 2>&1); then log "khepri_db enabled"; return 0; fi
    log "plain enable_feature_flag khepri_db refused: $(tr '\n' ' ' <<<"$out")"
    [[ $out == *opt-in* ]] || start_fail "enabling khepri_db failed"
    out=$(ctl -n "${NODES[0]}" enable_feature_flag --opt-in khepri_db 2>&1) || start_fail "--opt-in failed too: $out"
    log "khepri_db enabled with --opt-in"
}

do_start() {
    local i p deadline up=1
    do_prepare
    if [[ -f $HDIR/$MARKER ]]; then
        for i in "${IDX[@]}"; do { beam_pid "$i" && port_busy "${AMQP[i]}"; } >/dev/null || up=0; done
        (( up )) && { log "$INST already running"; print_start; return 0; }
        log "removing stale $INST state"; do_stop fast || die "could not clean up stale $INST"
    fi
    for p in "${AMQP[@]}" "${MGMT[@]}" "${DIST[@]}" "$EPMD_PORT"; do port_busy "$p" && die "port $p on 127.0.0.1 is in use"; done
    trap 'start_fail interrupted' INT TERM
    { mkdir -p "$HDIR/home" && : > "$HDIR/$MARKER" && chmod 700 "$HDIR/home"; } || die "cannot create $HDIR"
    ( umask 077; LC_ALL=C tr -dc '[:upper:]' < /dev/urandom | head -c 32 > "$HDIR/home/.erlang.cookie" )
    chmod 400 "$HDIR/home/.erlang.cookie"; : > "$HDIR/cli-env.conf"
    deadline=$((SECONDS + START_TIMEOUT))
    setsid "${IN_ROOT[@]}" KQ4_EPMD="$EPMD_PORT" /usr/bin/epmd -daemon -port "$EPMD_PORT" -address 127.0.0.1 &>/dev/null </dev/null
    until epmd_q -names >/dev/null; do (( SECONDS < deadline )) || start_fail "epmd did not start"; sleep 0.1; done
    log "epmd on 127.0.0.1:$EPMD_PORT; launching ${NODES[*]}"
    for i in "${IDX[@]}"; do launch_node "$i"; done
    for i in "${IDX[@]}"; do wait_booted "$i" "$deadline"; done
    log "${NODES[*]} booted"
    [[ $INST == cluster ]] && { join_cluster "$deadline"; enable_khepri; }
    for i in "${IDX[@]}"; do
        beam_pid "$i" >/dev/null || start_fail "no beam.smp for ${NODES[i]}"
        until port_busy "${MGMT[i]}"; do (( SECONDS < deadline )) || start_fail "no management on ${MGMT[i]}"; sleep 0.2; done
    done
    trap - INT TERM; log "$INST up"; print_start
}

do_status() {
    local inst; for inst in single cluster; do
        setup "$inst"; print_nodes | sed "s/^/$inst /"; beam_pid 0 >/dev/null || continue
        CLI_TIMEOUT=30 ctl -n "${NODES[0]}" list_feature_flags name state -q --no-table-headers 2>/dev/null \
            | awk -v i="$inst" '$1 == "khepri_db" { s = $2 } END { print i, "khepri_db", s ? s : "unknown" }'
    done
}

do_leader() { # quorum_status asks the Ra members themselves, so it follows elections at once
    local q=$1 i out leader
    for i in "${IDX[@]}"; do
        beam_pid "$i" >/dev/null || continue
        out=$(CLI_TIMEOUT=30 cli rabbitmq-queues -n "${NODES[i]}" quorum_status "$q" --vhost / --formatter json) || continue
        leader=$(tr '{' '\n' <<<"$out" | grep -i '"raft state":"leader"' | grep -io '"node name":"[^"]*"' | head -n1 | cut -d'"' -f4)
        [[ -n $leader ]] && { echo "$leader"; return 0; }
        log "no leader for quorum queue '$q' (yet), as seen by ${NODES[i]}"; return 1
    done
    die "no node of the cluster could report on quorum queue '$q'"
}

do_kill9() {
    local node=$1 i pid deadline
    setup single; [[ $node == "${NODES[0]}" ]] || setup cluster
    for i in "${IDX[@]}" x; do [[ ${NODES[i]:-} == "$node" ]] && break; done
    [[ $i != x ]] || die "'$node' is not one of our nodes"
    pid=$(beam_pid "$i") || die "no live beam.smp for $node"
    kill -9 "$pid" || die "kill -9 $pid failed"
    deadline=$((SECONDS + 5))   # wait until reaped and gone from epmd; a lingering zombie is dead enough
    while { [[ -e /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || epmd_has "$node"; } \
          && (( SECONDS < deadline )); do sleep 0.02; done
    echo "$pid"
}

case ${1:-} in
    prepare)  [[ $# -eq 1 ]] || usage; do_prepare; log "root: $ROOT ($(cat "$ROOT/$READY"))" ;;
    start-single|start-cluster) [[ $# -eq 1 ]] || usage; setup "${1#start-}"; do_start ;;
    stop-single|stop-cluster)   [[ $# -eq 1 ]] || usage; setup "${1#stop-}"; do_stop ;;
    status)   [[ $# -eq 1 ]] || usage; do_status ;;
    nodes)    [[ $# -eq 2 ]] || usage; setup "$2"; print_nodes ;;
    kill9)    [[ $# -eq 2 ]] || usage; do_kill9 "$2" ;;
    leader)   [[ $# -eq 2 ]] || usage; setup cluster; do_leader "$2" ;;
    ctl)      [[ $# -ge 4 ]] || usage; setup "$2"
              case $3 in rabbitmqctl|rabbitmq-queues|rabbitmq-diagnostics|rabbitmq-plugins) ;; *) usage ;; esac
              [[ -f $HDIR/home/.erlang.cookie ]] || die "$INST is not running"; shift 2
              if [[ " $* " == *" -n "* || " $* " == *" --node "* ]]; then cli "$@"; else cli "$1" -n "${NODES[0]}" "${@:2}"; fi ;;
    *) usage ;;
esac
