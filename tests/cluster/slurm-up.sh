#!/usr/bin/env bash
# A one-node Slurm on this machine for the launcher tests: installs slurm-wlm and munge if missing
# (Debian; needs root), writes a minimal slurm.conf (the node line from `slurmd -C`, no cgroups, no
# accounting database), starts munged, slurmctld and slurmd, and waits until sinfo shows the node idle.
# tests/cluster/slurm-down.sh stops them. Exit status 0 when the node is idle, else non-zero with why.
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "slurm-up: slurm-wlm is not installed and this is not root" >&2; exit 2; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
[ "$(id -u)" = 0 ] || { echo "slurm-up: the daemons need root" >&2; exit 2; }
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
chown -R munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge 2>/dev/null || true
[ -s /etc/munge/munge.key ] || { mungekey --create --force >/dev/null 2>&1 || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
NODE=$(slurmd -C | head -1 | sed 's/ UpTime=.*//')
cat > $CONF <<CONF
ClusterName=growbench
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=10
$NODE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then echo "slurm-up: node $HOST idle"; exit 0; fi
  scontrol update nodename=$HOST state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm-up: the node did not become idle: $(sinfo -h -o '%T %E' 2>&1 | head -1)" >&2
exit 1
