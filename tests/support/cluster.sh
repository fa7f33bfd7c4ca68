#!/usr/bin/env bash
# Throwaway three-node RabbitMQ (3.10) cluster on one machine, for integration tests.
#
# Usage:
#   cluster.sh start  <dir> <base_port>          -> "<node> <amqp_port> <mgmt_port> <os_pid>" x3
#   cluster.sh leader <dir> <base_port> <queue>  -> "<node>" leading quorum queue <queue> in vhost /
#   cluster.sh kill9  <dir> <base_port> <node>   -> "<pid>" of the beam.smp that was kill -9'd
#   cluster.sh stop   <dir> <base_port>          -> (nothing) stops all nodes, removes <dir>
#   cluster.sh ctl    <dir> <base_port> <tool> <args...>  -> runs rabbitmqctl (or rabbitmq-queues,
#                     rabbitmq-diagnostics, rabbitmq-plugins) with this cluster's cookie; pass -n <node>
#
# Exit status: 0 on success; leader exits 1 (printing nothing) while the queue has no leader.
#
# Nodes:  kqc<base>a@localhost, kqc<base>b@localhost, kqc<base>c@localhost
# Ports (i = 0,1,2):  AMQP base+i, Erlang distribution base+100+i, management HTTP base+200+i,
#                     all bound to 127.0.0.1.  CLI (rabbitmqctl) distribution uses an ephemeral port.
# Clusters running side by side need base ports whose [base,base+2], [base+100,base+102] and
# [base+200,base+202] ranges do not overlap (e.g. 5701 and 5711 are fine, 5701 and 5801 are not).
#
# Everything a node needs lives under <dir>: its own env file (RABBITMQ_CONF_ENV_FILE, so the
# machine's /etc/rabbitmq/rabbitmq-env.conf is never read), config file (plus an empty conf.d and a
# non-existent advanced.config, so nothing under /etc/rabbitmq is read), enabled_plugins file,
# mnesia and log dirs, pid file, and a private HOME holding a freshly generated Erlang cookie that is
# shared by the three nodes and by this script's rabbitmqctl calls (and by nothing else).
# The nodes run as the invoking user (the /usr/sbin wrappers, which su to "rabbitmq" and write to
# /var/log/rabbitmq, are bypassed), so <dir> is always writable by them.
#
# Only stdout lines listed above are printed on stdout; all diagnostics go to stderr.
# Environment knobs: KQC_RABBITMQ_BIN (default /usr/lib/rabbitmq/bin), KQC_START_TIMEOUT (s, default 180).

set -u -o pipefail

RMQ_BIN=${KQC_RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
START_TIMEOUT=${KQC_START_TIMEOUT:-180}
SUFFIXES=(a b c)
MARKER=.kqc-cluster
T0=${EPOCHREALTIME/[.,]/}

log() {
    local us=$(( ${EPOCHREALTIME/[.,]/} - T0 ))
    printf 'cluster.sh [%3d.%01ds]: %s\n' $((us / 1000000)) $((us / 100000 % 10)) "$*" >&2
}
die() { log "ERROR: $*"; exit 1; }

usage() {
    cat >&2 <<'EOF'
usage: cluster.sh start  <dir> <base_port>
       cluster.sh leader <dir> <base_port> <queue>
       cluster.sh kill9  <dir> <base_port> <nodename>
       cluster.sh stop   <dir> <base_port>
       cluster.sh ctl    <dir> <base_port> <rabbitmqctl|rabbitmq-queues|...> <args...>
EOF
    exit 2
}

# ---------------------------------------------------------------- naming / layout

setup_names() {
    local dir=$1 base=$2
    [[ $base =~ ^[0-9]+$ ]] && (( base >= 1024 && base <= 65535 - 202 )) \
        || die "base_port must be an integer in 1024..$((65535 - 202)), got '$base'"
    [[ -n $dir ]] || die "dir must not be empty"
    case $dir in /*) ;; *) dir="$PWD/$dir" ;; esac
    dir=${dir%/}
    [[ -n $dir && $dir != / ]] || die "refusing to use '/' as cluster dir"
    DIR=$dir
    BASE=$base
    NODES=() AMQP=() DIST=() MGMT=()
    local i
    for i in 0 1 2; do
        NODES[i]="kqc${base}${SUFFIXES[i]}@localhost"
        AMQP[i]=$((base + i))
        DIST[i]=$((base + 100 + i))
        MGMT[i]=$((base + 200 + i))
    done
}

node_dir() { echo "$DIR/${SUFFIXES[$1]}"; }

node_index() { # nodename -> index, or failure
    local i
    for i in 0 1 2; do [[ ${NODES[i]} == "$1" ]] && { echo "$i"; return 0; }; done
    return 1
}

# rabbitmqctl & friends with this cluster's cookie, never the machine's.
cli() { # cli <tool> <args...>; stdout of the tool is kept, timeout 60s
    local tool=$1; shift
    HOME="$DIR/home" RABBITMQ_CONF_ENV_FILE="$DIR/cli-env.conf" \
        RABBITMQ_CTL_DIST_PORT_MIN=0 RABBITMQ_CTL_DIST_PORT_MAX=0 \
        timeout "${CLI_TIMEOUT:-60}" "$RMQ_BIN/$tool" "$@"
}
ctl() { cli rabbitmqctl "$@"; }

# ---------------------------------------------------------------- process discovery

# Does process $1 belong to node $2?  (exact RABBITMQ_NODENAME in its environment, which every
# process of the node inherits: wrapper sh, beam.smp, erl_child_setup, inet_gethost, sh -c ...)
pid_is_node() {
    local pid=$1 node=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    grep -qzxF -- "RABBITMQ_NODENAME=$node" "/proc/$pid/environ" 2>/dev/null
}

pid_is_node_beam() {
    local pid=$1 node=$2
    pid_is_node "$pid" "$node" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == beam.smp ]]
}

# All pids belonging to node $1: by environment, by the "-kqc_node <node>" marker in the command
# line, and the recorded pid files (verified the same way).  Never matches rabbit@localhost.
node_pids() {
    local node=$1 idx=$2 p f
    {
        grep -lzxF -- "RABBITMQ_NODENAME=$node" /proc/[0-9]*/environ 2>/dev/null
        grep -laP -- "\\x00-kqc_node\\x00\\Q$node\\E\\x00" /proc/[0-9]*/cmdline 2>/dev/null
        for f in "$(node_dir "$idx")/rabbit.pid" "$(node_dir "$idx")/wrapper.pid"; do
            [[ -f $f ]] || continue
            p=$(tr -dc '0-9' < "$f")
            [[ -n $p ]] && pid_is_node "$p" "$node" && echo "/proc/$p/"
        done
    } | sed -n 's#^/proc/\([0-9]*\)/.*#\1#p' | grep -vx -- "$$" | sort -un
}

cluster_pids() { # all pids of the three nodes, space separated
    local i
    for i in 0 1 2; do node_pids "${NODES[i]}" "$i"; done | tr '\n' ' ' | sed 's/ *$//'
}

epmd_has() { epmd -names 2>/dev/null | grep -q "^name ${1%@*} at port"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- stop

do_stop() { # do_stop [fast]   (fast: no graceful rabbitmqctl stop, straight to kill -9)
    local mode=${1:-graceful} i node pids jobs=()
    # 1. graceful stop of every node that still answers, in parallel
    local stopping=0
    if [[ $mode != fast && -f $DIR/home/.erlang.cookie ]]; then
        for i in 0 1 2; do
            node=${NODES[i]}
            pids=$(node_pids "$node" "$i")
            [[ -n $pids ]] || continue
            if epmd_has "$node"; then
                log "stopping $node"
                stopping=1
                ( CLI_TIMEOUT=40 ctl -n "$node" stop >/dev/null 2>&1 || log "rabbitmqctl stop $node failed (will kill -9)" ) &
                jobs+=($!)
            fi
        done
        (( ${#jobs[@]} )) && wait "${jobs[@]}"
        (( stopping )) && log "rabbitmqctl stop returned"
    fi
    # 2. wait a little for them to exit, then kill -9 whatever is left of these nodes
    local deadline=$((SECONDS + 10)) left p
    [[ $mode == fast ]] && deadline=$SECONDS
    until left=$(cluster_pids); [[ -z $left ]] || (( SECONDS >= deadline )); do sleep 0.3; done
    for i in 0 1 2; do
        for p in $(node_pids "${NODES[i]}" "$i"); do
            log "kill -9 leftover pid $p ($(cat "/proc/$p/comm" 2>/dev/null)) of ${NODES[i]}"
            kill -9 "$p" 2>/dev/null
        done
    done
    # wait until the processes are gone and epmd has forgotten the names
    deadline=$((SECONDS + 10))
    until left=$(cluster_pids)
          for i in 0 1 2; do epmd_has "${NODES[i]}" && left+=" epmd:${NODES[i]}"; done
          [[ -z ${left// /} ]]; do
        (( SECONDS >= deadline )) && { log "WARNING: still present after stop: $left"; break; }
        sleep 0.2
    done
    left=${left// /}
    # 3. remove the dir, but only if it is ours (marker) or empty
    if [[ -d $DIR ]]; then
        if [[ -f $DIR/$MARKER ]] || [[ -z $(ls -A "$DIR") ]]; then
            rm -rf -- "$DIR" || log "WARNING: could not remove $DIR"
        else
            log "WARNING: $DIR has no $MARKER marker, not removing it"
        fi
    fi
    [[ -z $left ]]
}

# ---------------------------------------------------------------- start

write_node_files() {
    local i=$1 nd
    nd=$(node_dir "$i")
    mkdir -p "$nd/mnesia" "$nd/log" "$nd/conf.d"   # conf.d stays empty (not /etc/rabbitmq/conf.d)
    cat > "$nd/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:${AMQP[i]}
management.tcp.ip = 127.0.0.1
management.tcp.port = ${MGMT[i]}
log.console = false
log.file.level = info
cluster_partition_handling = pause_minority
EOF
    # b and c boot first without plugins: they are reset right away, and stopping the rabbit app
    # with the management plugin loaded costs an extra ~5 s.  start_app re-reads this file, so they
    # get the management plugin when they start again after join_cluster.
    if (( i == 0 )); then
        echo '[rabbitmq_management].' > "$nd/enabled_plugins"
    else
        echo '[].' > "$nd/enabled_plugins"
    fi
    # Own env file: replaces /etc/rabbitmq/rabbitmq-env.conf for this node (the same values are also
    # exported as RABBITMQ_* variables, which take precedence anyway).
    cat > "$nd/rabbitmq-env.conf" <<EOF
NODENAME="${NODES[i]}"
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=${AMQP[i]}
DIST_PORT=${DIST[i]}
MNESIA_BASE="$nd/mnesia"
LOG_BASE="$nd/log"
CONFIG_FILE="$nd/rabbitmq.conf"
CONFIG_FILES="$nd/conf.d"
ADVANCED_CONFIG_FILE="$nd/advanced.config"
ENABLED_PLUGINS_FILE="$nd/enabled_plugins"
PID_FILE="$nd/rabbit.pid"
MOTD_FILE="$nd/motd"
EOF
}

launch_node() {
    local i=$1 nd
    nd=$(node_dir "$i")
    (
        cd "$nd" || exit 1
        exec env HOME="$DIR/home" \
            RABBITMQ_CONF_ENV_FILE="$nd/rabbitmq-env.conf" \
            RABBITMQ_NODENAME="${NODES[i]}" \
            RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
            RABBITMQ_NODE_PORT="${AMQP[i]}" \
            RABBITMQ_DIST_PORT="${DIST[i]}" \
            RABBITMQ_MNESIA_BASE="$nd/mnesia" \
            RABBITMQ_LOG_BASE="$nd/log" \
            RABBITMQ_CONFIG_FILE="$nd/rabbitmq.conf" \
            RABBITMQ_CONFIG_FILES="$nd/conf.d" \
            RABBITMQ_ADVANCED_CONFIG_FILE="$nd/advanced.config" \
            RABBITMQ_MOTD_FILE="$nd/motd" \
            RABBITMQ_ENABLED_PLUGINS_FILE="$nd/enabled_plugins" \
            RABBITMQ_PID_FILE="$nd/rabbit.pid" \
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} -kqc_node ${NODES[i]}" \
            ERL_EPMD_ADDRESS=127.0.0.1 \
            setsid "$RMQ_BIN/rabbitmq-server"
    ) > "$nd/stdout.log" 2>&1 < /dev/null &
    echo $! > "$nd/wrapper.pid"
    disown $!   # no job-control chatter when it is killed
}

# Wait until node i is registered in epmd and has written its pid file; fail early if it died.
wait_registered() {
    local i=$1 deadline=$2 nd wpid
    nd=$(node_dir "$i")
    wpid=$(cat "$nd/wrapper.pid")
    until epmd_has "${NODES[i]}" && [[ -s $nd/rabbit.pid ]]; do
        kill -0 "$wpid" 2>/dev/null || return 1
        (( SECONDS >= deadline )) && return 1
        sleep 0.2
    done
}

wait_booted() {
    local i=$1 deadline=$2 nd wpid
    nd=$(node_dir "$i")
    wpid=$(cat "$nd/wrapper.pid")
    until grep -q 'Server startup complete' "$nd/log/${NODES[i]}.log" 2>/dev/null \
          && port_busy "${AMQP[i]}"; do
        kill -0 "$wpid" 2>/dev/null || return 1
        (( SECONDS >= deadline )) && return 1
        sleep 0.2
    done
}

node_failed() {
    local i=$1 nd
    nd=$(node_dir "$i")
    log "node ${NODES[i]} failed to start; last lines of its logs:"
    tail -n 20 "$nd/stdout.log" "$nd/log/${NODES[i]}.log" 2>/dev/null | sed 's/^/    /' >&2
}

start_fail() {
    log "ERROR: $*"
    log "cleaning up"
    do_stop fast || true
    exit 1
}

do_start() {
    local i deadline
    if [[ -e $DIR ]] && [[ -n $(ls -A "$DIR" 2>/dev/null) ]]; then
        die "$DIR exists and is not empty (stale cluster? run: cluster.sh stop $DIR $BASE)"
    fi
    for i in 0 1 2; do
        epmd_has "${NODES[i]}" && die "node ${NODES[i]} is already registered in epmd (run stop first)"
        local p
        for p in "${AMQP[i]}" "${DIST[i]}" "${MGMT[i]}"; do
            port_busy "$p" && die "port $p on 127.0.0.1 is already in use"
        done
    done
    [[ -x $RMQ_BIN/rabbitmq-server && -x $RMQ_BIN/rabbitmqctl ]] || die "RabbitMQ scripts not found in $RMQ_BIN"
    command -v epmd >/dev/null || die "epmd not found in PATH"

    trap 'start_fail "interrupted"' INT TERM
    mkdir -p "$DIR" || die "cannot create $DIR"
    : > "$DIR/$MARKER"
    mkdir -p "$DIR/home" && chmod 700 "$DIR/home"
    # cookie: 32 random upper-case letters, private to this cluster
    ( umask 077; LC_ALL=C tr -dc 'A-Z' < /dev/urandom | head -c 32 > "$DIR/home/.erlang.cookie" )
    chmod 400 "$DIR/home/.erlang.cookie"
    echo '# cluster.sh CLI env file (replaces /etc/rabbitmq/rabbitmq-env.conf for rabbitmqctl)' > "$DIR/cli-env.conf"

    for i in 0 1 2; do write_node_files "$i"; done
    log "launching ${NODES[*]} in $DIR"
    for i in 0 1 2; do launch_node "$i"; done

    deadline=$((SECONDS + START_TIMEOUT))
    for i in 0 1 2; do
        wait_registered "$i" "$deadline" || { node_failed "$i"; start_fail "node ${NODES[i]} did not come up"; }
    done
    log "all nodes registered in epmd, waiting for boot to complete"
    # (rabbitmqctl await_startup only re-checks every 10 s, so watch the node logs instead; the
    # rabbitmqctl commands below then verify the nodes for real)
    for i in 0 1 2; do
        wait_booted "$i" "$deadline" || { node_failed "$i"; start_fail "node ${NODES[i]} did not finish booting"; }
    done
    log "all nodes booted; joining b and c to ${NODES[0]}"

    local jobs=() j
    for i in 1 2; do
        ( ctl -n "${NODES[i]}" stop_app >&2 && ctl -n "${NODES[i]}" reset >&2 ) &
        jobs+=($!)
    done
    for j in "${jobs[@]}"; do wait "$j" || start_fail "stop_app/reset failed"; done
    log "b and c reset"
    for i in 1 2; do
        ctl -n "${NODES[i]}" join_cluster "${NODES[0]}" >&2 || start_fail "join_cluster of ${NODES[i]} failed"
    done
    log "b and c joined"
    for i in 1 2; do echo '[rabbitmq_management].' > "$(node_dir "$i")/enabled_plugins"; done
    jobs=()
    for i in 1 2; do ctl -n "${NODES[i]}" start_app >&2 & jobs+=($!); done
    for j in "${jobs[@]}"; do wait "$j" || start_fail "start_app failed"; done

    log "waiting for cluster_status to report 3 running nodes"
    local want running
    want=$(printf '%s\n' "${NODES[@]}" | sort | tr '\n' ' ')
    until :; running=$(ctl -n "${NODES[0]}" cluster_status --formatter json 2>/dev/null \
              | grep -o '"running_nodes":\[[^]]*\]' | grep -o 'kqc[^"]*' | sort | tr '\n' ' ');
          [[ $running == "$want" ]]; do
        (( SECONDS >= deadline )) && start_fail "cluster did not converge (running: '$running')"
        sleep 0.5
    done

    trap - INT TERM
    local out="" pid
    for i in 0 1 2; do
        pid=$(tr -dc '0-9' < "$(node_dir "$i")/rabbit.pid")
        pid_is_node_beam "$pid" "${NODES[i]}" || start_fail "pid file of ${NODES[i]} does not point at its beam.smp"
        port_busy "${AMQP[i]}" || start_fail "${NODES[i]} does not listen on AMQP port ${AMQP[i]}"
        port_busy "${MGMT[i]}" || start_fail "${NODES[i]} does not listen on management port ${MGMT[i]}"
        out+="${NODES[i]} ${AMQP[i]} ${MGMT[i]} $pid"$'\n'
    done
    printf '%s' "$out" > "$DIR/nodes.txt"
    log "cluster up"
    printf '%s' "$out"
}

# ---------------------------------------------------------------- leader / kill9

node_up() { # index
    local pid
    pid=$(tr -dc '0-9' < "$(node_dir "$1")/rabbit.pid" 2>/dev/null)
    [[ -n $pid ]] && pid_is_node_beam "$pid" "${NODES[$1]}"
}

do_leader() {
    local q=$1 i out err="" leader
    [[ -f $DIR/$MARKER ]] || die "no cluster in $DIR"
    for i in 0 1 2; do
        node_up "$i" || continue
        # quorum_status asks the Ra members themselves, so it reflects the current Raft state
        # (list_queues' "leader" column comes from the queue record and lags behind elections).
        if ! out=$(CLI_TIMEOUT=30 cli rabbitmq-queues -n "${NODES[i]}" quorum_status "$q" --vhost / \
                     --formatter json 2>"$DIR/.leader.err"); then
            err=$(tail -n 3 "$DIR/.leader.err" 2>/dev/null | tr '\n' ' ')
            continue
        fi
        leader=$(printf '%s' "$out" | tr '{' '\n' | grep -i '"raft state":"leader"' \
                   | grep -io '"node name":"[^"]*"' | head -n1 | cut -d'"' -f4)
        if [[ -n $leader ]]; then echo "$leader"; return 0; fi
        log "no leader for quorum queue '$q' (yet), as seen by ${NODES[i]}"
        return 1
    done
    die "no node of the cluster could report on quorum queue '$q': ${err:-no node is up}"
}

do_ctl() { # run a RabbitMQ CLI tool against this cluster, with its cookie
    local tool=$1; shift
    case $tool in
        rabbitmqctl|rabbitmq-queues|rabbitmq-diagnostics|rabbitmq-plugins) ;;
        *) die "ctl: tool must be rabbitmqctl, rabbitmq-queues, rabbitmq-diagnostics or rabbitmq-plugins" ;;
    esac
    [[ -f $DIR/home/.erlang.cookie ]] || die "no cluster in $DIR"
    cli "$tool" "$@"
}

do_kill9() {
    local node=$1 i pid
    i=$(node_index "$node") || die "'$node' is not a node of this cluster (${NODES[*]})"
    pid=$(tr -dc '0-9' < "$(node_dir "$i")/rabbit.pid" 2>/dev/null)
    [[ -n $pid ]] || die "no recorded pid for $node"
    pid_is_node_beam "$pid" "$node" || die "pid $pid is not the beam.smp of $node (already dead?)"
    kill -9 "$pid" || die "kill -9 $pid failed"
    # wait until it is reaped (its parent, the rabbitmq-server wrapper, does that at once) and
    # epmd has dropped the name; a zombie that lingers is dead enough after 5 s.
    local deadline=$((SECONDS + 5))
    while [[ -e /proc/$pid ]] || epmd_has "$node"; do
        if (( SECONDS >= deadline )); then
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z || ! -e /proc/$pid ]] \
                || die "pid $pid still alive after kill -9"
            break
        fi
        sleep 0.02
    done
    echo "$pid"
}

# ---------------------------------------------------------------- main

cmd=${1:-}
case $cmd in
    start)  [[ $# -eq 3 ]] || usage; setup_names "$2" "$3"; do_start ;;
    stop)   [[ $# -eq 3 ]] || usage; setup_names "$2" "$3"; do_stop ;;
    leader) [[ $# -eq 4 ]] || usage; setup_names "$2" "$3"; do_leader "$4" ;;
    kill9)  [[ $# -eq 4 ]] || usage; setup_names "$2" "$3"; do_kill9 "$4" ;;
    ctl)    [[ $# -ge 4 ]] || usage; setup_names "$2" "$3"; shift 3; do_ctl "$@" ;;
    *) usage ;;
esac
