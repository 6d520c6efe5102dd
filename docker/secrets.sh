#!/bin/sh
# The compose stack's secrets. A default in compose.yaml would be the same password on every server
# that runs this stack, and published with it; so compose.yaml has none (it refuses to start while one
# is unset: ${VAR:?}), and they live in docker/.env, generated on first start, readable only by you.
#
#   docker/secrets.sh init [ENV_FILE]  create ENV_FILE (docker/.env) or add the secrets it lacks, then check it
#   docker/secrets.sh check            check the secrets in the environment; compose's one-shot
#                                      `secrets-check` runs this before any service that holds one starts
#
# POSIX sh: `check` runs inside an image, with no bash guaranteed.
set -eu

SECRETS="POSTGRES_PASSWORD MINIO_ROOT_PASSWORD AIRFLOW_JWT_SECRET AIRFLOW_FERNET_KEY"
# Published defaults: what earlier versions of compose.yaml shipped, and the usual ones (MinIO's own).
KNOWN_DEFAULTS="airflow admin minioadmin postgres rn50-minio-secret rn50-change-this-jwt-secret"
MIN_LENGTH=16

generate() {  # a new value for secret $1
  case $1 in
    # Airflow's Fernet key: 32 random bytes, URL-safe base64.
    AIRFLOW_FERNET_KEY) head -c 32 /dev/urandom | base64 | tr '+/' '-_' ;;
    # Hex: safe in the URLs and the JSON that compose.yaml puts these into.
    *) od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; echo ;;
  esac
}

weakness() {  # why value $2 of secret $1 is no secret; nothing if it is one
  [ -n "$2" ] || { echo "is empty"; return; }
  for known in $KNOWN_DEFAULTS; do
    [ "$2" != "$known" ] || { echo "is \"$known\", a published default"; return; }
  done
  if [ "$1" = AIRFLOW_FERNET_KEY ]; then
    printf '%s' "$2" | grep -Eq '^[A-Za-z0-9_-]{43}=$' \
      || echo "is not a Fernet key (32 bytes, URL-safe base64)"
  elif [ "${#2}" -lt "$MIN_LENGTH" ]; then
    echo "is shorter than $MIN_LENGTH characters"
  fi
}

check() {  # $1: where the values come from, for the messages; the values: in the environment
  bad=0
  for name in $SECRETS; do
    eval "value=\${$name-}"
    why=$(weakness "$name" "$value")
    if [ -n "$why" ]; then
      echo "$1: $name $why; delete its line from docker/.env and run docker/secrets.sh init to generate one" >&2
      bad=1
    fi
  done
  return "$bad"
}

init() {  # $1: the env file
  umask 077
  if [ -e "$1" ]; then
    case $(ls -ld -- "$1") in
      -rw-------*|-r--------*) ;;
      *) echo "$1: other users can read these secrets; chmod 600 $1" >&2; return 1 ;;
    esac
  fi
  # Appending to a last line without its newline would corrupt it.
  if [ -s "$1" ] && [ -n "$(tail -c 1 -- "$1")" ]; then echo >> "$1"; fi
  added=""
  for name in $SECRETS; do
    if ! grep -q "^$name=" "$1" 2>/dev/null; then
      echo "$name=$(generate "$name")" >> "$1"
      added="$added $name"
    fi
  done
  [ -z "$added" ] || echo "$1: generated$added" >&2
  for name in $SECRETS; do  # compose's .env syntax, as far as a secret's line needs it
    value=$(sed -n "s/^$name=//p" "$1" | tail -n 1)
    case $value in \"*\"|\'*\') value=${value#?}; value=${value%?} ;; esac
    export "$name=$value"
  done
  check "$1"
}

case ${1-} in
  init) init "${2:-$(dirname -- "$0")/.env}" ;;
  check) check secrets-check ;;
  *) echo "usage: $0 init [ENV_FILE] | check" >&2; exit 2 ;;
esac
