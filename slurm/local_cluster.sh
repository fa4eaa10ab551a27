#!/usr/bin/env bash
# Single-node SLURM cluster on localhost, for tests and local runs of the search controller.
#
#   slurm/local_cluster.sh start    # install (apt) if needed, start munged, slurmctld, slurmd; wait for the node to be idle
#   slurm/local_cluster.sh stop     # cancel remaining jobs, stop the daemons this script started
#   slurm/local_cluster.sh status   # sinfo; exit 0 when up, 3 when down
#   slurm/local_cluster.sh env      # print the `export SLURM_CONF=...` line (use: eval "$(slurm/local_cluster.sh env)")
#
# All files it writes (slurm.conf, plugstack.conf, state, spool, logs, pid files) live in one state directory,
# $FLEXIBERT_SLURM_DIR (default /tmp/flexibert-slurm). Outside it, `start` only touches:
#   * /etc/munge/munge.key (created when missing) and munged's usual /run/munge, /var/lib/munge, /var/log/munge;
#   * /etc/slurm/slurm.conf: a symlink to the state directory's slurm.conf, created only when that path is free
#     or already such a symlink, so plain `sbatch`/`squeue`/... work without SLURM_CONF; `stop` removes it.
# Exporting SLURM_CONF (see `env`) works in every case and is what tests do. See slurm/README.md.
set -euo pipefail

STATE_DIR=${FLEXIBERT_SLURM_DIR:-/tmp/flexibert-slurm}
CONF=$STATE_DIR/slurm.conf
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
CTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid
MUNGED_MARK=$RUN_DIR/munged.started-by-us
CTLD_LOG=$LOG_DIR/slurmctld.log
SLURMD_LOG=$LOG_DIR/slurmd.log
SYSTEM_CONF=/etc/slurm/slurm.conf
MANAGED_TAG="# Managed by flexibert slurm/local_cluster.sh"
START_TIMEOUT=${FLEXIBERT_SLURM_START_TIMEOUT:-60}
PARTITION=debug

export SLURM_CONF=$CONF

log() { printf 'local_cluster: %s\n' "$*"; }
die() {
    printf 'local_cluster: ERROR: %s\n' "$*" >&2
    exit 1
}

tail_logs() {
    local f
    for f in "$CTLD_LOG" "$SLURMD_LOG" /var/log/munge/munged.log; do
        if [[ -s $f ]]; then
            printf -- '----- last lines of %s -----\n' "$f" >&2
            tail -n 25 "$f" >&2
        fi
    done
}

# pid_alive PIDFILE NAME: the pid in PIDFILE is a live process whose command name is NAME.
pid_alive() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(<"/proc/$pid/comm") == "$2"* ]]
}

ctld_responds() {
    command -v scontrol >/dev/null 2>&1 && [[ -f $CONF ]] || return 1
    timeout 15 scontrol ping 2>/dev/null | grep -q 'is UP'
}

node_name() { awk -F'[= ]' '/^NodeName=/{print $2; exit}' "$CONF" 2>/dev/null; }

is_up() {
    pid_alive "$CTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd && ctld_responds
}

print_env_hint() {
    echo "export SLURM_CONF=$CONF"
}

need_root() {
    [[ $(id -u) -eq 0 ]] && return 0
    local missing=""
    command -v slurmctld >/dev/null 2>&1 || missing=" Slurm is not installed either: as root run 'apt-get install -y slurm-wlm munge'."
    die "starting the cluster needs root (slurmd runs jobs as their owner; SlurmUser=root). Re-run as root, e.g. 'sudo $0 start'.$missing"
}

ensure_packages() {
    local need=0 b
    for b in slurmctld slurmd sbatch sinfo scontrol munged munge unmunge; do
        command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || need=1
    done
    ((need)) || return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "slurm/munge binaries are missing and apt-get is not available; install Slurm (slurmctld, slurmd, client tools) and MUNGE by other means."
    log "installing slurm-wlm and munge with apt-get (this takes a minute) ..."
    local apt_log=$STATE_DIR/apt-get.log
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge >"$apt_log" 2>&1 ||
        { apt-get update >>"$apt_log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge >>"$apt_log" 2>&1; }; }; then
        tail -n 20 "$apt_log" >&2
        die "apt-get install slurm-wlm munge failed (full log: $apt_log). Check network access to the Debian mirrors, then retry."
    fi
}

# Write the munge key when missing and start munged unless a working one already answers.
ensure_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    log "starting munged"
    local run_as=(runuser -u munge --)
    command -v runuser >/dev/null 2>&1 || run_as=(setpriv --reuid=munge --regid=munge --init-groups)
    if ! "${run_as[@]}" munged 2>"$LOG_DIR/munged.start.err"; then
        # Containers often trip munged's permission checks on / or /var (not owned by root, group-writable ...).
        log "munged refused to start ($(tr '\n' ' ' <"$LOG_DIR/munged.start.err")); retrying with --force"
        "${run_as[@]}" munged --force 2>>"$LOG_DIR/munged.start.err" ||
            die "munged failed to start: $(cat "$LOG_DIR/munged.start.err")"
    fi
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n | unmunge >/dev/null || die "munged started but 'munge -n | unmunge' fails; see /var/log/munge/munged.log"
    cp /run/munge/munged.pid "$MUNGED_MARK" 2>/dev/null || echo unknown >"$MUNGED_MARK"
}

write_config() {
    local host cpus mem_kb mem_mb c_line c_cpus c_mem topo real_mem headroom def_mem
    host=$(hostname -s 2>/dev/null || hostname)
    [[ -n $host ]] || host=localhost
    cpus=$(nproc)
    mem_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)
    mem_mb=$((mem_kb / 1024))
    c_line=$(slurmd -C 2>/dev/null | head -n 1 || true)
    c_cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$c_line")
    c_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$c_line")
    if [[ -n $c_mem && $c_mem -lt $mem_mb ]]; then mem_mb=$c_mem; fi
    # Socket/core/thread layout from slurmd -C when it agrees with nproc (avoids "configuration differs" warnings);
    # a bare CPU count otherwise (e.g. a container limited to fewer CPUs than the host has).
    if [[ $c_cpus == "$cpus" ]]; then
        topo=$(grep -o 'CPUs=[0-9]* Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$c_line" ||
            echo "CPUs=$cpus")
    else
        topo="CPUs=$cpus"
    fi
    headroom=$((mem_mb / 20))
    ((headroom >= 256)) || headroom=256
    real_mem=$((mem_mb - headroom))
    ((real_mem >= 256)) || real_mem=$((mem_mb * 9 / 10))
    def_mem=$((real_mem / cpus))

    mkdir -p "$STATE_DIR/state" "$STATE_DIR/spool/slurmd" "$RUN_DIR" "$LOG_DIR"
    : >"$STATE_DIR/plugstack.conf"
    cat >"$CONF" <<EOF
$MANAGED_TAG -- regenerated on every start, edits are lost.
# Detected: nproc=$cpus, MemTotal=${mem_kb} kB, slurmd -C: ${c_line:-n/a}
ClusterName=flexibert-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
# Requeued jobs wait cred_expire seconds before they may start again (default 120).
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$STATE_DIR/plugstack.conf
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
# No cgroup delegation in containers: plain /proc based process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# No accounting storage, so nothing would keep gathered usage data (sstat does not work either).
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: sacct does not work; scontrol show job knows finished jobs for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
JobRequeue=1
# Reject at submission what can never run (e.g. more CPUs than the node has) instead of pending forever.
EnforcePartLimits=ALL
OverTimeLimit=0
KillWait=5
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmctldTimeout=60
SlurmdTimeout=60
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host $topo RealMemory=$real_mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    log "wrote $CONF (node $host: $topo RealMemory=${real_mem}MB, DefMemPerCPU=${def_mem}MB)"
}

# Ports 6817/6818 are fixed: a slurmctld/slurmd not started from this state directory means another cluster.
refuse_foreign_daemons() {
    local name pid
    for name in slurmctld slurmd; do
        for pid in $(pidof "$name" 2>/dev/null || true); do
            # our own pid files were cleared just before; anything left belongs to someone else
            die "another $name is running (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)); stop it first (e.g. FLEXIBERT_SLURM_DIR=<its state dir> $0 stop)"
        done
    done
}

# /etc/slurm/slurm.conf -> our conf, so plain commands work without SLURM_CONF; never replaces a foreign file.
link_system_conf() {
    if [[ -L $SYSTEM_CONF ]] || [[ ! -e $SYSTEM_CONF ]]; then
        if [[ -L $SYSTEM_CONF ]] && ! grep -qF "$MANAGED_TAG" "$SYSTEM_CONF" 2>/dev/null &&
            [[ -e $SYSTEM_CONF ]]; then
            log "note: $SYSTEM_CONF is a symlink to a foreign config; left alone (export SLURM_CONF)"
            return 0
        fi
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -sfn "$CONF" "$SYSTEM_CONF"
    else
        log "note: $SYSTEM_CONF exists and is not ours; left alone, so commands need SLURM_CONF=$CONF"
    fi
}

unlink_system_conf() {
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
}

# stop_pid PIDFILE NAME: TERM, wait up to 15 s, then KILL.
stop_pid() {
    local pid
    pid_alive "$1" "$2" || {
        rm -f "$1"
        return 0
    }
    pid=$(<"$1")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 75); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$2 ($pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

node_state() { timeout 15 sinfo -h -N -n "$1" -o '%T' 2>/dev/null | head -n 1; }

wait_for_idle() {
    local node=$1 deadline state resumed=0
    deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        pid_alive "$CTLD_PID" slurmctld || { tail_logs; die "slurmctld exited during startup (logs above)"; }
        pid_alive "$SLURMD_PID" slurmd || { tail_logs; die "slurmd exited during startup (logs above)"; }
        state=$(node_state "$node" || true)
        case $state in
        idle | mixed | allocated | completing) return 0 ;;
        down* | drain* | fail* | inval*)
            if ((resumed < 3)) && ((SECONDS > deadline - START_TIMEOUT + 3)); then
                log "node $node is $state; scontrol update state=resume"
                scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
                resumed=$((resumed + 1))
            fi
            ;;
        esac
        sleep 0.5
    done
    sinfo -N -l >&2 || true
    scontrol show node "$node" >&2 || true
    tail_logs
    die "node $node not idle after ${START_TIMEOUT}s (last state: '${state:-unknown}'); logs above"
}

cmd_start() {
    if is_up; then
        log "already up (state dir $STATE_DIR)"
        print_env_hint
        return 0
    fi
    need_root
    mkdir -p "$STATE_DIR" "$RUN_DIR" "$LOG_DIR"
    ensure_packages
    # Half-up (one daemon died): restart both from scratch.
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
    refuse_foreign_daemons
    write_config
    ensure_munge
    link_system_conf
    local node
    node=$(node_name)

    log "starting slurmctld ($(slurmctld -V))"
    slurmctld -f "$CONF" 2>>"$LOG_DIR/slurmctld.stderr" || { tail_logs; die "slurmctld failed to start"; }
    for _ in $(seq 100); do
        ctld_responds && break
        sleep 0.3
    done
    ctld_responds || {
        tail_logs
        die "slurmctld does not answer 'scontrol ping' (logs above)"
    }
    log "starting slurmd"
    slurmd -f "$CONF" 2>>"$LOG_DIR/slurmd.stderr" || { tail_logs; die "slurmd failed to start"; }
    for _ in $(seq 50); do
        [[ -s $SLURMD_PID ]] && break
        sleep 0.1
    done
    wait_for_idle "$node"
    sinfo
    log "up: cluster flexibert-local, partition $PARTITION, node $node; logs in $LOG_DIR"
    print_env_hint
}

cmd_stop() {
    if [[ $(id -u) -ne 0 ]] && { pid_alive "$CTLD_PID" slurmctld || pid_alive "$SLURMD_PID" slurmd; }; then
        die "stopping the cluster needs root (its daemons run as root). Re-run as root, e.g. 'sudo $0 stop'."
    fi
    if [[ -f $CONF ]] && pid_alive "$CTLD_PID" slurmctld && ctld_responds; then
        local jobs
        jobs=$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')
        if [[ -n ${jobs// /} ]]; then
            log "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 40); do
                [[ -z $(squeue -h -o '%i' 2>/dev/null) ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
    if [[ -s $MUNGED_MARK ]]; then
        local mpid
        mpid=$(<"$MUNGED_MARK")
        if [[ $mpid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$mpid/comm" 2>/dev/null) == munged ]]; then
            kill -TERM "$mpid" 2>/dev/null || true
        fi
        rm -f "$MUNGED_MARK"
    fi
    unlink_system_conf
    log "stopped (state kept in $STATE_DIR)"
}

cmd_status() {
    local up=0
    if pid_alive "$CTLD_PID" slurmctld; then echo "slurmctld: running (pid $(<"$CTLD_PID"))"; else echo "slurmctld: not running"; fi
    if pid_alive "$SLURMD_PID" slurmd; then echo "slurmd:    running (pid $(<"$SLURMD_PID"))"; else echo "slurmd:    not running"; fi
    if is_up; then
        up=1
        sinfo
        sinfo -N -o '%N %T %c %m %e'
        print_env_hint
    fi
    if ((up)); then
        echo "local_cluster: up"
        return 0
    fi
    echo "local_cluster: down (state dir $STATE_DIR)"
    return 3
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
restart)
    cmd_stop
    cmd_start
    ;;
env) print_env_hint ;;
*)
    echo "usage: $0 start|stop|status|restart|env   (state dir: \$FLEXIBERT_SLURM_DIR, default /tmp/flexibert-slurm)" >&2
    exit 2
    ;;
esac
