#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/test_slurm.py (CI calls it before pytest).
# Installs Debian's slurm-wlm + munge if missing, writes /etc/slurm/slurm.conf for this host (all its CPUs and
# memory in one partition, no accounting), starts munged, slurmctld and slurmd in that order (no systemd needed),
# and waits until the node takes jobs. Idempotent: if the cluster already answers with this config, it does
# nothing. Needs root. Exit 0 = cluster up; otherwise one line on stderr saying why.
# Stop it with `scripts/slurm_local.sh stop`.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
LOGS=/var/log/slurm
SPOOL=/var/spool

die() { echo "slurm_local: $*" >&2; exit 1; }

stop() {
    # only the daemons this script started, by the pid files it gave them
    local pidfile pid
    for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$pidfile"
    done
}

if [[ ${1:-} == stop ]]; then stop; exit 0; fi
[[ $(id -u) == 0 ]] || die "needs root (it installs packages and starts the slurm daemons)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1; }
    apt_install || { apt-get update -qq >/dev/null 2>&1 && apt_install; } || die "apt-get could not install slurm-wlm munge"
fi

host=$(hostname -s)
# nproc reads OMP_NUM_THREADS (a 1-thread setting would make a 1-CPU node that can never run a 2-task job): count
# the CPUs this process may use, without it
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024) - 1024}' /proc/meminfo)   # leave 1 GiB to the system
config="# written by scripts/slurm_local.sh: one node, one partition, no accounting
ClusterName=saeeval-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$SPOOL/slurmctld
SlurmdSpoolDir=$SPOOL/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SchedulerParameters=sched_interval=1
MessageTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP"

running() { local pid; pid=$(cat "$1" 2>/dev/null) && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }
# sinfo waits for an absent controller (MessageTimeout), so ask it only when the daemons run
node_ready() {
    running /run/munge/munged.pid && running /run/slurmctld.pid && running /run/slurmd.pid \
        && timeout 10 sinfo -h -n "$host" -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'
}

if [[ -f $CONF && $(cat "$CONF") == "$config" ]] && node_ready; then
    exit 0
fi

if [[ -f $CONF ]] && ! head -1 "$CONF" | grep -q 'written by scripts/slurm_local.sh'; then
    die "$CONF exists and was not written by this script: this host has its own SLURM setup; not touching it"
fi
stop
mkdir -p /etc/slurm "$LOGS" "$SPOOL/slurmctld" "$SPOOL/slurmd" /run/munge /var/lib/munge /var/log/munge
printf '%s\n' "$config" > "$CONF"

if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid || die "munged did not start (see /var/log/munge/munged.log)"
munge -n | unmunge >/dev/null 2>&1 || die "munge does not authenticate (see /var/log/munge/munged.log)"

/usr/sbin/slurmctld || die "slurmctld did not start (see $LOGS/slurmctld.log)"
/usr/sbin/slurmd || die "slurmd did not start (see $LOGS/slurmd.log)"

for _ in $(seq 60); do
    if node_ready; then exit 0; fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 0.5
done
die "node $host did not come up: $(sinfo -h -N -o '%N %T %E' 2>&1 | tr '\n' ' ') (see $LOGS/)"
