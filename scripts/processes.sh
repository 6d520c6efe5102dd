# shellcheck shell=bash
# Sourced by scripts/airflow.sh (make airflow) and scripts/stack.sh (make stack): how both find the
# processes they started, each of which they start in a session of its own.

# start_time PID: sets START to the process's start time (a pid alone may be reused), empty when it is
# gone. No command substitution and no pipe: bash 5.2 can misparse a trap's action that runs (Ctrl-C,
# SIGTERM) while it is in a command substitution ("trap: unexpected EOF"), and under set -e a pipe's
# reader fails on a process that is gone.
start_time() {
  START=
  local stat fields
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 0
  read -ra fields <<< "${stat##*) }"
  START=${fields[19]}
}

# in_sessions SID...: the pids of those sessions' processes and of all their descendants (task processes
# start process groups, Horovod's ranks sessions, of their own).
in_sessions() {
  [ $# -gt 0 ] || return 0
  ps -e -o pid=,ppid=,sid= | awk -v sessions="$*" '
    BEGIN { n = split(sessions, s, " "); for (i = 1; i <= n; i++) session[s[i]] = 1 }
    { pid[NR] = $1; ppid[NR] = $2; if ($3 in session) member[$1] = 1 }
    END {
      do { more = 0; for (i = 1; i <= NR; i++) if (!(pid[i] in member) && (ppid[i] in member)) { member[pid[i]] = 1; more = 1 } } while (more)
      for (p in member) print p
    }'
}
