#!/usr/bin/env bash
# Runs K `earnserve serve` replicas on loopback ports behind one unprivileged nginx
# (deploy/nginx), and stops them. Documented in docs/replicas.md.
#
#   tools/replicas.sh start --model DIR [--ports 8001,8002] [--listen 127.0.0.1:8000] \
#       [-- SERVE_OPTIONS]          # e.g. -- --threads 1 --kv-cache-memory 256MiB
#   tools/replicas.sh status            # each replica's pid, /health and requests served; nginx
#   tools/replicas.sh add PORT          # one more replica (same model and options), nginx reloaded
#   tools/replicas.sh remove PORT       # out of nginx first, then SIGTERM: it drains and exits
#   tools/replicas.sh stop              # nginx finishes open requests and quits; replicas drain
#
# State (options, pids, logs, the nginx prefix) lives in --dir (default
# ${TMPDIR:-/tmp}/earnserve-replicas-$UID); --dir goes before or after the command.
# Environment: EARNSERVE_BIN (default build/api/earnserve), NGINX_BIN (default nginx on PATH or
# /usr/sbin/nginx), PYTHON (default python3, for deploy/nginx/make_conf.py). Needs curl.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${EARNSERVE_BIN:-$root/build/api/earnserve}"
python="${PYTHON:-python3}"
nginx="${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}"
dir="${TMPDIR:-/tmp}/earnserve-replicas-$(id -u)"

die() { echo "replicas: $*" >&2; exit 1; }
usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

check_port() {
  if ! [[ "$1" =~ ^[0-9]+$ ]] || ((10#$1 < 1 || 10#$1 > 65535)); then die "bad port '$1'"; fi
}

# The pid in FILE if that process is still an earnserve (or nginx) we started, else nothing.
live_pid() {
  local file="$1" want="$2" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$want"; then
    echo "$pid"
  fi
}

ports() { if [ -f "$dir/ports" ]; then cat "$dir/ports"; fi; }

# Waits until URL/health answers 200 while PID lives; LOG is shown when it does not.
wait_healthy() {
  local url="$1" pid="$2" log="$3" deadline=$((SECONDS + 120))
  while ((SECONDS < deadline)); do
    curl -sf -o /dev/null "$url/health" && return 0
    kill -0 "$pid" 2>/dev/null || { tail -n 5 "$log" >&2; die "$url exited before it was healthy"; }
    sleep 0.2
  done
  die "$url was not healthy after 120 s (log: $log)"
}

start_replica() {
  local port="$1" log pid
  log="$dir/logs/replica-$port.log"
  [ -z "$(live_pid "$dir/replica-$port.pid" serve)" ] || die "a replica already runs on port $port"
  mapfile -t serve_args <"$dir/serve_args"
  nohup "$bin" serve --model "$(cat "$dir/model")" --host 127.0.0.1 --port "$port" \
    "${serve_args[@]}" >"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/replica-$port.pid"
  wait_healthy "http://127.0.0.1:$port" "$pid" "$log"
  echo "replicas: replica on 127.0.0.1:$port (pid $pid, log $log)"
}

stop_replica() {
  local port="$1" pid i
  pid="$(live_pid "$dir/replica-$port.pid" serve)"
  rm -f "$dir/replica-$port.pid"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid"
  # earnserve drains in-flight requests for up to --drain-timeout-s (60 s by default).
  for ((i = 0; i < 700; i++)); do
    kill -0 "$pid" 2>/dev/null || { echo "replicas: replica on port $port stopped"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  echo "replicas: replica on port $port killed after 70 s"
}

nginx_cmd() {
  "$nginx" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/logs/error.log" "$@"
}

write_nginx_conf() {
  local replica_args=() port
  for port in $(ports); do replica_args+=(--replica "127.0.0.1:$port"); done
  "$python" "$root/deploy/nginx/make_conf.py" --prefix "$dir/nginx" \
    --listen "$(cat "$dir/listen")" "${replica_args[@]}" >/dev/null
  nginx_cmd -t -q || die "nginx rejected $dir/nginx/nginx.conf"
}

cmd_start() {
  local model="" port_list="8001,8002" listen="127.0.0.1:8000" port i
  while (($#)); do
    case "$1" in
      --model) model="${2:?--model needs a directory}"; shift 2 ;;
      --ports) port_list="${2:?--ports needs a list}"; shift 2 ;;
      --listen) listen="${2:?--listen needs HOST:PORT}"; shift 2 ;;
      --) shift; break ;;
      *) die "start: unknown option '$1' (serve options go after --)" ;;
    esac
  done
  [ -n "$model" ] || die "start: --model DIR is required"
  [ -d "$model" ] || die "start: $model is not a directory"
  [ -x "$bin" ] || die "no earnserve binary at $bin (set EARNSERVE_BIN)"
  [ -x "$nginx" ] || die "nginx not found (apt-get install nginx-light, or set NGINX_BIN)"
  command -v curl >/dev/null || die "curl not found"
  [ -z "$(live_pid "$dir/nginx/nginx.pid" nginx)" ] || die "already running in $dir (stop first)"
  mkdir -p "$dir/logs"
  (cd "$model" && pwd) >"$dir/model"
  if (($#)); then printf '%s\n' "$@" >"$dir/serve_args"; else : >"$dir/serve_args"; fi
  echo "$listen" >"$dir/listen"
  : >"$dir/ports"
  for port in ${port_list//,/ }; do
    check_port "$port"
    start_replica "$port"
    echo "$port" >>"$dir/ports"
  done
  [ -s "$dir/ports" ] || die "start: --ports names no port"
  write_nginx_conf
  nginx_cmd  # daemonizes; the master writes its pid file
  for ((i = 0; i < 50; i++)); do
    [ -s "$dir/nginx/nginx.pid" ] && break
    sleep 0.1
  done
  [ -s "$dir/nginx/nginx.pid" ] || die "nginx did not start: see $dir/nginx/logs/error.log"
  wait_healthy "http://$listen" "$(cat "$dir/nginx/nginx.pid")" "$dir/nginx/logs/error.log"
  echo "replicas: nginx on http://$listen -> $(ports | tr '\n' ' ')(state in $dir)"
}

cmd_stop() {
  local pid port i
  pid="$(live_pid "$dir/nginx/nginx.pid" nginx)"
  if [ -n "$pid" ]; then
    nginx_cmd -s quit  # stops listening, lets open requests (streams too) finish
    for ((i = 0; i < 700; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    echo "replicas: nginx stopped"
  fi
  for port in $(ports); do stop_replica "$port"; done
  : >"$dir/ports"
}

cmd_status() {
  local port pid health served listen
  [ -f "$dir/listen" ] || die "nothing started in $dir"
  for port in $(ports); do
    pid="$(live_pid "$dir/replica-$port.pid" serve)"
    health="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)"
    served="$(curl -s "http://127.0.0.1:$port/metrics" 2>/dev/null |
      sed -n 's/^earnserve:request_success_total{[^}]*} //p')"
    echo "replica 127.0.0.1:$port  pid ${pid:-none}  /health ${health:-000}  served ${served:--}"
  done
  listen="$(cat "$dir/listen")"
  pid="$(live_pid "$dir/nginx/nginx.pid" nginx)"
  health="$(curl -s -o /dev/null -w '%{http_code}' "http://$listen/health" || true)"
  echo "nginx   $listen  pid ${pid:-none}  /health ${health:-000}  log $dir/nginx/logs/access.log"
}

cmd_add() {
  local port="${1:?add needs a PORT}"
  check_port "$port"
  [ -n "$(live_pid "$dir/nginx/nginx.pid" nginx)" ] || die "nginx is not running (start first)"
  ! ports | grep -qx "$port" || die "port $port is already a replica"
  start_replica "$port"
  echo "$port" >>"$dir/ports"
  write_nginx_conf
  nginx_cmd -s reload
  echo "replicas: nginx reloaded with $(ports | tr '\n' ' ')"
}

cmd_remove() {
  local port="${1:?remove needs a PORT}"
  ports | grep -qx "$port" || die "port $port is not a replica"
  [ "$(ports | wc -l)" -gt 1 ] || die "port $port is the last replica (use stop)"
  ports | grep -vx "$port" >"$dir/ports.new"
  mv "$dir/ports.new" "$dir/ports"
  write_nginx_conf
  nginx_cmd -s reload  # new requests go elsewhere; old workers finish theirs
  stop_replica "$port"
}

args=()
while (($#)); do
  case "$1" in
    --dir) dir="${2:?--dir needs a directory}"; shift 2 ;;
    -h|--help) usage ;;
    --) args+=("$@"); break ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"
(($#)) || usage
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
command="$1"
shift
case "$command" in
  start) cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  add) cmd_add "$@" ;;
  remove) cmd_remove "$@" ;;
  *) usage ;;
esac
