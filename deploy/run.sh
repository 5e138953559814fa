#!/usr/bin/env bash
# deploy/run.sh: a Sigil cluster on one machine, without containers.
#
#   redis-server                  127.0.0.1:6390   (the nodes' shared state)
#   sigil serve --node node1..3   127.0.0.1:8081..8083, one data directory
#                                 (signing keys, users file), one Redis
#   haproxy                       127.0.0.1:8080   (deploy/haproxy.cfg)
#
# It prints the URL to give clients, then runs until Ctrl-C (or SIGTERM),
# which stops HAProxy, drains the nodes and stops Redis. Needs bash,
# redis-server, redis-cli and haproxy (Debian: apt-get install -y
# redis-server haproxy), and Go to build sigil unless SIGIL_CLUSTER_BIN
# names a sigil binary.
#
# Settings (environment):
#   SIGIL_CLUSTER_DIR         working directory: data/, logs, pids
#                             (default: a new temporary directory)
#   SIGIL_CLUSTER_LB_PORT     the balancer's port (default 8080)
#   SIGIL_CLUSTER_NODE_PORTS  the three nodes' ports (default "8081 8082 8083")
#   SIGIL_CLUSTER_REDIS_PORT  Redis' port (default 6390)
#   SIGIL_CLUSTER_BIN         the sigil binary (default: built from this tree)
#   SIGIL_*                   any sigil serve setting, for every node
#                             (for example SIGIL_TOKEN_TTL=5m)
#
# If SIGIL_CLUSTER_DIR/data has no users.json, users alice, bob, carol
# (announcer) and admin are created with random passwords, printed once and
# kept in SIGIL_CLUSTER_DIR/passwords (mode 0600).
#
# This is an example on loopback: Redis is reached over plaintext redis://
# because it listens on 127.0.0.1 only. Across machines, use rediss:// (TLS)
# and TLS in front of the nodes (README, "Cluster mode").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
lb_port=${SIGIL_CLUSTER_LB_PORT:-8080}
read -r -a node_ports <<<"${SIGIL_CLUSTER_NODE_PORTS:-8081 8082 8083}"
redis_port=${SIGIL_CLUSTER_REDIS_PORT:-6390}
work=${SIGIL_CLUSTER_DIR:-$(mktemp -d -t sigil-cluster.XXXXXX)}
data=$work/data

die() { echo "deploy/run.sh: $*" >&2; exit 1; }
[ "${#node_ports[@]}" -eq 3 ] || die "SIGIL_CLUSTER_NODE_PORTS must name three ports"
for tool in redis-server redis-cli haproxy; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install -y redis-server haproxy)"
done
mkdir -p "$work" "$data" "$work/redis"

sigil=${SIGIL_CLUSTER_BIN:-}
if [ -z "$sigil" ]; then
  command -v go >/dev/null || die "go is not installed: install Go, or set SIGIL_CLUSTER_BIN"
  (cd "$repo" && go build -o "$work/sigil" ./cmd/sigil)
  sigil=$work/sigil
fi

# The processes started here, in start order; stopped in reverse order.
pids=()
stop_all() {
  trap - EXIT INT TERM
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap stop_all EXIT
trap 'exit 0' INT TERM

# wait_for WHAT LOG CMD...: runs CMD until it succeeds, while the process
# just started runs (at most 60 s); otherwise shows the end of its LOG.
wait_for() {
  local what=$1 log=$2 pid=$! i
  shift 2
  for ((i = 0; i < 600; i++)); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "$what exited at start"; }
    sleep 0.1
  done
  die "$what did not come up within 60 s (logs in $work)"
}

# http_status PORT PATH prints the HTTP status of GET PATH on 127.0.0.1.
http_status() {
  local status
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  read -r _ status _ <&3 || status=
  exec 3>&-
  echo "$status"
}
ready() { [ "$(http_status "$1" /readyz 2>/dev/null)" = 200 ]; }

# The shared data: one signing key and one users file for every node.
if ! ls "$data"/keys/*.jwk >/dev/null 2>&1; then
  "$sigil" keygen --data-dir "$data" >/dev/null
fi
if [ ! -e "$data/users.json" ]; then
  umask 077
  : >"$work/passwords"
  for spec in alice:user bob:user carol:user,announcer admin:admin; do
    name=${spec%%:*}
    pw=$(head -c 12 /dev/urandom | base64 | tr '+/' '-_')
    printf '%s\n' "$pw" | "$sigil" user add --users "$data/users.json" --roles "${spec#*:}" "$name" >/dev/null
    printf '%s %s\n' "$name" "$pw" >>"$work/passwords"
  done
  umask 022
fi

# Redis, with every write fsynced to its append-only file: the replay
# protection is only as durable as Redis' memory (spec.md, cluster
# semantics).
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
  --appendonly yes --appendfsync always --save '' --daemonize no \
  >"$work/redis.log" 2>&1 &
pids+=($!)
echo $! >"$work/redis.pid"
wait_for "redis-server" "$work/redis.log" sh -c "[ \"\$(redis-cli -p $redis_port ping 2>/dev/null)\" = PONG ]"

# The nodes: the same data directory and Redis, each its own port and name.
for i in 1 2 3; do
  port=${node_ports[i - 1]}
  "$sigil" serve --addr "127.0.0.1:$port" --data-dir "$data" \
    --redis "redis://127.0.0.1:$redis_port" --node "node$i" --trust-forwarded-for \
    >"$work/node$i.out" 2>"$work/node$i.log" &
  pids+=($!)
  echo $! >"$work/node$i.pid"
  wait_for "node$i" "$work/node$i.log" grep -q '^SIGIL_READY ' "$work/node$i.out"
done

# The balancer.
export SIGIL_LB_ADDR=127.0.0.1:$lb_port
export SIGIL_NODE1_ADDR=127.0.0.1:${node_ports[0]}
export SIGIL_NODE2_ADDR=127.0.0.1:${node_ports[1]}
export SIGIL_NODE3_ADDR=127.0.0.1:${node_ports[2]}
haproxy -db -f "$here/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
echo $! >"$work/haproxy.pid"
wait_for "haproxy" "$work/haproxy.log" ready "$lb_port"

url=http://127.0.0.1:$lb_port
echo "Sigil cluster: $url"
echo "  haproxy $SIGIL_LB_ADDR -> node1 :${node_ports[0]}, node2 :${node_ports[1]}, node3 :${node_ports[2]}; redis :$redis_port"
echo "  working directory $work (logs: node*.log, redis.log, haproxy.log)"
if [ -s "$work/passwords" ]; then
  echo "  users (passwords also in $work/passwords):"
  sed 's/^/    /' "$work/passwords"
fi
echo "  try: sigil login --server $url --user alice && sigil listen rooms.lobby"
echo "SIGIL_CLUSTER_READY url=$url dir=$work"

# Run until interrupted; a node that dies (or is killed) does not stop the
# others.
while true; do
  wait || true
  sleep 1
done
