#!/usr/bin/env bash
# Memory and CPU-per-request measurements of one latch binary (issue 9).
#
#   benches/mem/run.sh [idle] [burst] [http]     # default: all three
#
#   idle   KiB of latch RSS per idle WSS connection: client TLS -> latch -> plain WS
#          backend, IDLE_CONNS connections opened, one echo each, then held idle.
#   burst  does RSS come back after a burst: CYCLES times open BURST_CONNS WSS
#          connections, close them all, wait until latch has let go of every socket.
#   http   CPU per keep-alive HTTP request: wrk -t2 -c64 against latch in front of an
#          nginx that answers `return 200 "ok"`; latch's utime+stime (/proc/PID/stat)
#          before/after divided by the requests wrk completed. RUNS repetitions.
#
# Environment knobs [defaults]:
#   LATCH [target/release/latch]  the binary to measure (to compare builds side by side)
#   LABEL [basename of LATCH]      name in the result lines
#   IDLE_CONNS [9500] BURST_CONNS [3000] CYCLES [5] RUNS [3] DURATION [10]
#   SETTLE [15]                    seconds to wait after the last burst for a last RSS sample
#   LATCH_ENV [""]                 extra environment for latch, e.g. MALLOC_ARENA_MAX=2
#
# Needs node with the `ws` package (installed into target/bench-node if missing), nginx
# and wrk for `http`. Everything listens on 127.0.0.1 on random free ports; only the
# processes this script starts are stopped, by PID. Results: one line per measurement
# on stdout and appended to target/mem-bench/results.tsv.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/benches/mem"
OUT="$ROOT/target/mem-bench"
NODE_DIR="$ROOT/target/bench-node"
WSLOAD="$ROOT/target/wsload/release/wsload"
if [ ! -x "$WSLOAD" ]; then
  cargo build --release --manifest-path "$ROOT/benches/load/wsload/Cargo.toml" \
    --target-dir "$ROOT/target/wsload" >&2 || exit 1
fi
LATCH="${LATCH:-$ROOT/target/release/latch}"
LABEL="${LABEL:-$(basename "$LATCH")}"
IDLE_CONNS="${IDLE_CONNS:-9500}"
BURST_CONNS="${BURST_CONNS:-3000}"
CYCLES="${CYCLES:-5}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
SETTLE="${SETTLE:-15}"
LATCH_ENV="${LATCH_ENV:-}"
CERT="$ROOT/certs/dev.pem"
KEY="$ROOT/certs/dev-key.pem"
MODES="${*:-idle burst http}"

log() { printf '[mem] %s\n' "$*" >&2; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT/logs"
[ -x "$LATCH" ] || { log "no latch binary at $LATCH (cargo build --release)"; exit 1; }
if [ ! -f "$NODE_DIR/node_modules/ws/package.json" ]; then
  npm install --prefix "$NODE_DIR" --no-audit --no-fund ws@8 >"$OUT/logs/npm.log" 2>&1 ||
    { log "npm install ws@8 failed"; exit 1; }
fi
export NODE_PATH="$NODE_DIR/node_modules"
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && ((IDLE_CONNS * 2 + 200 > NOFILE)); then
  IDLE_CONNS=$(((NOFILE - 200) / 2))
  log "fd limit $NOFILE: using $IDLE_CONNS idle connections"
fi
HOST=127.0.0.1
[ "$(getent ahosts localhost 2>/dev/null | awk 'NR==1 {print $1}')" = 127.0.0.1 ] && HOST=localhost

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && ! ss -Htan "sport = :$1" | grep -q .; }
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    port_free "$p" && { echo "$p"; return; }
  done
}
wait_port() {
  local i
  for ((i = 0; i < 200; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  log "nothing listens on 127.0.0.1:$1"; return 1
}
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
result() { # mode key value
  printf '%s\t%s\t%s\t%s\n' "$LABEL" "$1" "$2" "$3" | tee -a "$OUT/results.tsv"
}

WS_PORT=$(free_port)
TLS_PORT=$(free_port)
HTTP_PORT=$(free_port)
NGX_PORT=$(free_port)
CONF="$OUT/latch-$$.toml"
cat >"$CONF" <<CONF
[server]
workers = 0

[[listener]]
bind = "127.0.0.1:$TLS_PORT"
upstream = "ws"
tls = { cert = "$CERT", key = "$KEY" }

[[listener]]
bind = "127.0.0.1:$HTTP_PORT"
upstream = "http"

[upstream.ws]
balance = "least_conn"
servers = [{ addr = "127.0.0.1:$WS_PORT", max_conns = 100000 }]

[upstream.ws.timeouts]
tunnel_idle = "1h"

[upstream.http]
balance = "round_robin"
servers = [{ addr = "127.0.0.1:$NGX_PORT" }]
CONF

LATCH_PID=""
start_latch() {
  env $LATCH_ENV "$LATCH" run --config "$CONF" >>"$OUT/logs/latch-$LABEL.log" 2>&1 &
  LATCH_PID=$!
  PIDS+=("$LATCH_PID")
  wait_port "$TLS_PORT" && wait_port "$HTTP_PORT" && sleep 1
}
stop_latch() {
  kill "$LATCH_PID" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$LATCH_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$LATCH_PID" 2>/dev/null
  wait "$LATCH_PID" 2>/dev/null
}
start_ws_backend() {
  [ -n "${WS_PID:-}" ] && return 0
  # The load bench's Rust echo server (benches/load/wsload), built there.
  "$WSLOAD" echo-server "$WS_PORT" >"$OUT/logs/ws-backend.log" 2>&1 &
  WS_PID=$!
  PIDS+=("$WS_PID")
  wait_port "$WS_PORT"
}
# The client runs as a coprocess: write "open"/"close", read its answer line.
start_client() { # conns
  coproc CLIENT { exec node --max-old-space-size=4096 "$HERE/client.js" "wss://$HOST:$TLS_PORT/ws" "$1" 2>>"$OUT/logs/client.err"; }
  PIDS+=("$CLIENT_PID")
}
ask() { # command -> answer line
  local line
  echo "$1" >&"${CLIENT[1]}"
  read -r -t 600 line <&"${CLIENT[0]}" || line="timeout"
  echo "$line"
}
stop_client() {
  exec {CLIENT[1]}>&-
  wait "$CLIENT_PID" 2>/dev/null
}
# Waits until latch holds no more descriptors than `base` (every tunnel is gone).
wait_fds() { # base
  for _ in $(seq 1 300); do (($(fds "$LATCH_PID") <= $1)) && return 0; sleep 0.1; done
  log "latch still holds $(fds "$LATCH_PID") fds (base $1)"
}

mode_idle() {
  start_ws_backend || return 1
  start_latch || return 1
  local before after answer opened
  before=$(rss "$LATCH_PID")
  start_client "$IDLE_CONNS"
  answer=$(ask open)
  sleep 3
  after=$(rss "$LATCH_PID")
  read -r _ opened _ <<<"$answer"
  log "idle: $answer; RSS $before -> $after KiB"
  result idle rss_before_kib "$before"
  result idle rss_after_kib "$after"
  result idle conns "$opened"
  ((opened > 0)) && result idle kib_per_conn "$(awk -v a="$after" -v b="$before" -v n="$opened" 'BEGIN {printf "%.2f", (a - b) / n}')"
  stop_client
  stop_latch
}

mode_burst() {
  start_ws_backend || return 1
  start_latch || return 1
  local base_fds answer line="" c
  base_fds=$(fds "$LATCH_PID")
  line="start $(rss "$LATCH_PID")"
  start_client "$BURST_CONNS"
  for ((c = 1; c <= CYCLES; c++)); do
    answer=$(ask open)
    sleep 1
    local open_rss=$(rss "$LATCH_PID")
    ask close >/dev/null
    wait_fds "$base_fds"
    sleep 2
    local closed_rss=$(rss "$LATCH_PID")
    log "burst $c: $answer; RSS open $open_rss, closed $closed_rss KiB"
    line="$line | $c: open $open_rss closed $closed_rss"
    result burst "cycle${c}_open_kib" "$open_rss"
    result burst "cycle${c}_closed_kib" "$closed_rss"
  done
  # Allocators that return memory on a timer (jemalloc's 10 s decay) get a while longer.
  sleep "$SETTLE"
  local settled=$(rss "$LATCH_PID")
  result burst "settled_kib" "$settled"
  log "burst: $line | ${SETTLE}s later $settled"
  stop_client
  stop_latch
}

mode_http() {
  command -v wrk >/dev/null && command -v nginx >/dev/null || { log "http needs wrk and nginx"; return 1; }
  mkdir -p "$OUT/nginx/tmp"
  cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $OUT/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $OUT/nginx/tmp;
  proxy_temp_path $OUT/nginx/tmp;
  fastcgi_temp_path $OUT/nginx/tmp;
  uwsgi_temp_path $OUT/nginx/tmp;
  scgi_temp_path $OUT/nginx/tmp;
  server {
    listen 127.0.0.1:$NGX_PORT;
    default_type text/plain;
    location / { return 200 "ok"; }
  }
}
CONF
  nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e stderr -g 'daemon off;' 2>"$OUT/logs/nginx.log" &
  PIDS+=($!)
  wait_port "$NGX_PORT" || return 1
  start_latch || return 1
  local r t0 t1 f reqs hz
  hz=$(getconf CLK_TCK)
  wrk -t2 -c64 -d2s "http://127.0.0.1:$HTTP_PORT/" >/dev/null 2>&1 # warm-up
  for ((r = 1; r <= RUNS; r++)); do
    f="$OUT/logs/wrk-$LABEL-$r.txt"
    t0=$(cpu_ticks "$LATCH_PID")
    wrk -t2 -c64 -d"${DURATION}s" "http://127.0.0.1:$HTTP_PORT/" >"$f" 2>&1
    t1=$(cpu_ticks "$LATCH_PID")
    reqs=$(awk '/requests in/ {print $1}' "$f")
    local rps=$(awk '/Requests\/sec:/ {print $2}' "$f")
    local us=$(awk -v a="$t0" -v b="$t1" -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz * 1e6 / n}')
    log "http run $r: $reqs requests, $rps req/s, latch CPU $(((t1 - t0)))/$hz s, $us us/request"
    result http "run${r}_rps" "$rps"
    result http "run${r}_cpu_us_per_req" "$us"
  done
  result http rss_after_kib "$(rss "$LATCH_PID")"
  stop_latch
}

log "$LABEL: $LATCH ${LATCH_ENV:+(env $LATCH_ENV)}; ports ws $WS_PORT tls $TLS_PORT http $HTTP_PORT nginx $NGX_PORT"
for m in $MODES; do
  case $m in
    idle) mode_idle ;;
    burst) mode_burst ;;
    http) mode_http ;;
    *) log "unknown mode $m (idle, burst, http)"; exit 2 ;;
  esac
done
rm -f "$CONF"
