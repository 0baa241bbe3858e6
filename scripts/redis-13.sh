#!/usr/bin/env bash
# Run by `make lesson-13` and `make trace-13` (with the make ARGS): makes sure a Redis
# answers where lesson 13 will look for its allowlist (--redis HOST:PORT, default
# 127.0.0.1:6379). If nothing answers on a loopback address, it starts a private
# redis-server there: memory only (no RDB snapshots, no AOF), daemonized, its pid and log
# under target/. Then it prints the redis-cli lines that allow and deny 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

redis=127.0.0.1:6379
while [ $# -gt 0 ]; do
  case "$1" in
    --redis) redis=${2:-$redis}; shift ;;
    --redis=*) redis=${1#--redis=} ;;
  esac
  shift
done
host=${redis%:*}
port=${redis##*:}

answers() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h "$host" -p "$port" ping 2>/dev/null)" = PONG ]
  else
    # No redis-cli: does anything accept a TCP connection there?
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
  fi
}

if answers; then
  echo "redis: using the Redis that answers on $redis" >&2
elif [ "$host" != 127.0.0.1 ] && [ "$host" != localhost ]; then
  echo "redis: nothing answers on $redis; lesson 13 refuses every client (0x01) until it does" >&2
elif ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: nothing answers on $redis and redis-server is not installed" \
    "(make deps installs it); lesson 13 refuses every client (0x01) until a Redis answers" >&2
else
  mkdir -p target
  redis-server --bind "$host" --port "$port" --save '' --appendonly no --daemonize yes \
    --pidfile "$PWD/target/redis-13.pid" --logfile "$PWD/target/redis-13.log"
  for _ in $(seq 50); do
    answers && break
    sleep 0.1
  done
  if answers; then
    echo "redis: started a private redis-server on $redis (memory only; pid in" \
      "target/redis-13.pid, log in target/redis-13.log; stop it: redis-cli -p $port shutdown)" >&2
  else
    echo "redis: could not start redis-server on $redis (see target/redis-13.log);" \
      "lesson 13 refuses every client (0x01) until a Redis answers" >&2
  fi
fi
echo "redis: allow 127.0.0.1: redis-cli -h $host -p $port set allowed:127.0.0.1 1" >&2
echo "redis: deny it again:   redis-cli -h $host -p $port del allowed:127.0.0.1" >&2
