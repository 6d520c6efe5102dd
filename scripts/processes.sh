# shellcheck shell=bash
# Sourced by scripts/airflow.sh (make airflow) and scripts/stack.sh (make stack): how both find the
# processes they started, each of which they start in a session of its own, and recorded as
# "pid start-time boot-id" (a pid names one process only together with its start time, and those two
# only within one boot).

# The boot this runs in.
BOOT_ID=
{ read -r BOOT_ID < /proc/sys/kernel/random/boot_id; } 2>/dev/null || true

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

# recorded_session PID START BOOT [WATCHED]: whether a record "PID START BOOT" still names the session
# the caller started. Sets SESSION to PID if so, else to nothing and STALE to why not. A session outlives
# its leader, but its id is a pid: once the session is empty the kernel gives that pid to new processes,
# and a daemon's session (its leader exits at once) then has that id. So a session whose leader exited
# is the caller's only if the caller has watched it since it started it (WATCHED: it notices the exit
# within seconds); for anyone else the record is stale, as it is once its pid runs another process, or
# when it is of another boot. (A record without BOOT, as they were written before, is the caller's only
# while its leader runs with the same start time.)
recorded_session() {
  SESSION= STALE=
  if ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then STALE="not \"pid start-time boot-id\""; return 0; fi
  start_time "$1"
  if [ -n "$3" ] && [ "$3" != "$BOOT_ID" ]; then STALE="written in another boot"
  elif [ -n "$START" ] && [ "$START" = "$2" ]; then SESSION=$1
  elif [ -n "$START" ]; then STALE="pid $1 is another process now"
  elif [ -n "${4-}" ]; then SESSION=$1
  else STALE="pid $1 has exited"
  fi
}

# in_sessions SID...: the pids of those sessions' processes and of all their descendants (task processes
# start process groups, Horovod's ranks sessions, of their own). Not zombies: they have exited, and
# wait only for a parent (often init, which may reap late) to collect them.
in_sessions() {
  [ $# -gt 0 ] || return 0
  ps -e -o pid=,ppid=,sid=,stat= | awk -v sessions="$*" '
    BEGIN { n = split(sessions, s, " "); for (i = 1; i <= n; i++) session[s[i]] = 1 }
    $4 ~ /^Z/ { next }
    { k++; pid[k] = $1; ppid[k] = $2; if ($3 in session) member[$1] = 1 }
    END {
      do { more = 0; for (i = 1; i <= k; i++) if (!(pid[i] in member) && (ppid[i] in member)) { member[pid[i]] = 1; more = 1 } } while (more)
      for (p in member) print p
    }'
}
