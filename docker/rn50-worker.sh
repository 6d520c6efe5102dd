#!/usr/bin/env bash
# Entry point of an MPIJob's worker pods: sshd, through which horovodrun starts this node's ranks.
#
# Kubernetes stops a pod with SIGTERM to PID 1 alone. The ranks are children of sshd sessions and
# would never hear it, so the steps since their last checkpoint would be lost. Pass it on to them,
# give them the pod's grace period to save, then stop sshd.
set -uo pipefail

ranks='-m pipeline train'
# shellcheck disable=SC2086  # a command line, split on purpose (tests put a stand-in here)
${RN50_SSHD_COMMAND:-/usr/sbin/sshd -D -e} &
sshd=$!

stop() {
  pkill -TERM -f -- "$ranks" || true
  for _ in $(seq "${RN50_STOP_GRACE_S:-110}"); do
    pgrep -f -- "$ranks" >/dev/null || break
    sleep 1
  done
  kill -TERM "$sshd" 2>/dev/null || true
  exit 143
}
trap stop TERM INT
wait "$sshd"
