#!/usr/bin/env bash
# Stops what tests/cluster/slurm-up.sh started (jobs are cancelled first).
scancel --user="$(id -un)" >/dev/null 2>&1 || true
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
pkill -x munged 2>/dev/null || true
exit 0
