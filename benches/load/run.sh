#!/usr/bin/env bash
# Load benchmark: latch vs nginx vs HAProxy vs direct (issues 6 and 9).
#
#   benches/load/run.sh              # whole run: about 17 minutes (3 rounds), plus the first release builds
#   PUBLISH=1 benches/load/run.sh    # also copy the table and chart to benches/load/
#
# What it reports, per target, in one run:
#   - the proxy's CPU time per operation: utime+stime from /proc/PID/stat of the proxy
#     (nginx: master plus workers; HAProxy and latch: their one process), read just
#     before and just after each measurement and divided by the operations completed in
#     between. This is the figure that survives a shared, noisy machine: throughput
#     depends on who else is on the cores, the CPU spent per request much less.
#   - the ratio of latch to the better (lower) of nginx and HAProxy, per row;
#   - throughput (req/s, msg/s), p99, and throughput relative to direct (no proxy);
#   - RSS per idle WSS connection with IDLE_CONNS open (process tree for nginx);
#   - L4 (TCP) mode: latch `mode = "tcp"` vs nginx `stream` vs HAProxy `mode tcp` in front of
#     two `wsload tcp-server` echo backends: CPU per MB of bulk transfer (both directions
#     counted) and per new connection (connect, 1-byte echo, close);
#   - the CPU use of the load generator (and of the proxy) during each measurement, so a
#     reader can see whether the client was the limit.
#
# Load: wrk -t2 for HTTP; for WebSockets `wsload` (benches/load/wsload, a multi-threaded
# tokio + tokio-tungstenite + rustls client, built here with cargo), which replaced a
# single-threaded node client that capped the WS numbers.
# WS backends: also `wsload echo-server`, not the former node `ws` server. Measured on the
# 2-core bench machine with the wsload client, direct, 64 connections: the node backend
# spent 10.7 us (WS) / 14-17 us (WSS) of CPU per echo and sat at 100% of its one core,
# the Rust one 8.8 / 11-12 us and can use both cores, so it leaves more of the machine
# to the proxy and is never the single-threaded cap.
#
# Environment knobs (defaults in brackets):
#   DURATION [10]        seconds per wrk / WebSocket measurement
#   CONNS [64]           concurrent connections for wrk and the WS echo client
#   IDLE_CONNS [9500]    idle WSS connections for the memory test (see the fd note below)
#   TARGETS ["direct latch nginx haproxy"]
#   SUITES ["http tcp"]  http: HTTP/HTTPS/WS/WSS and memory; tcp: the L4 rows
#   TCP_CONNS [16]       concurrent connections for the TCP bulk and new-connection loads
#   ROUNDS [3]           rounds of the CPU measurements; in each, every operation is
#                        measured on each target in turn (all proxies run side by side),
#                        the targets' order rotated each round; the report shows each
#                        figure's median and range (the machine's noise moves single runs
#                        by ±10%); memory is measured once, each proxy alone
#   PUBLISH [0]          1: copy results to benches/load/results.md and results.svg
#
# Needs: wrk, nginx (+ libnginx-mod-stream for nginx `stream`), haproxy (Debian:
# apt-get install -y wrk nginx libnginx-mod-stream haproxy; the script
# tries that itself when it runs as root), node (only to write the report), cargo.
# Everything listens on fixed ports on 127.0.0.1 (checked free first); the script stops
# only the processes it started, by PID.
# Output: target/bench/results.md, target/bench/raw.tsv, target/bench/chart.svg, and logs
# under target/bench/logs/.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/benches/load"
OUT="$ROOT/target/bench"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
IDLE_CONNS="${IDLE_CONNS:-9500}"
TARGETS="${TARGETS:-direct latch nginx haproxy}"
PUBLISH="${PUBLISH:-0}"
SUITES="${SUITES:-http tcp}"
TCP_CONNS="${TCP_CONNS:-16}"
ROUNDS="${ROUNDS:-3}"
CERT="$ROOT/certs/dev.pem"
KEY="$ROOT/certs/dev-key.pem"
HZ="$(getconf CLK_TCK)"

# Ports, all below Linux's default ephemeral range (32768-60999): a listener port inside it
# can be taken as the source port of one of the run's own outgoing connections, and then
# the next proxy cannot bind it (HAProxy used to listen on 38080 and sometimes failed so).
# Backends: nginx HTTP 19101/19102 (+19443 TLS for the direct HTTPS baseline),
# wsload WS echo 19111/19112 (+19444 WSS for the direct WSS baseline).
BE_HTTP1=19101 BE_HTTP2=19102 BE_HTTPS=19443 BE_WS1=19111 BE_WS2=19112 BE_WSS=19444
# TCP echo backends (`wsload tcp-server`) for the L4 rows.
BE_TCP1=19121 BE_TCP2=19122
declare -A TCP_PORT=([direct]=$BE_TCP1 [latch]=18090 [nginx]=28090 [haproxy]=27090)
declare -A HTTP_PORT=([direct]=$BE_HTTP1 [latch]=18080 [nginx]=28080 [haproxy]=27080)
declare -A HTTPS_PORT=([direct]=$BE_HTTPS [latch]=18443 [nginx]=28443 [haproxy]=27443)
declare -A WS_PORT=([direct]=$BE_WS1 [latch]=18080 [nginx]=28080 [haproxy]=27080)
declare -A WSS_PORT=([direct]=$BE_WSS [latch]=18443 [nginx]=28443 [haproxy]=27443)

log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
mkdir -p "$OUT/logs" "$OUT/nginx-backend" "$OUT/nginx-proxy"
MISSING=()
for t in wrk nginx haproxy; do command -v "$t" >/dev/null 2>&1 || MISSING+=("$t"); done
# nginx `stream` is a dynamic module in Debian's nginx.
NGX_STREAM=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f "$NGX_STREAM" ] || MISSING+=(libnginx-mod-stream)
if ((${#MISSING[@]})) && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing ${MISSING[*]} with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${MISSING[@]}" >"$OUT/logs/apt.log" 2>&1 ||
    { apt-get update >>"$OUT/logs/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${MISSING[@]}" >>"$OUT/logs/apt.log" 2>&1; }
fi
NOTES=()
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"
command -v wrk >/dev/null || { log "wrk is required (apt-get install wrk)"; exit 1; }
command -v nginx >/dev/null || { log "nginx is required: it is the HTTP backend (apt-get install nginx)"; exit 1; }
command -v node >/dev/null || { log "node is required to write the report (apt-get install nodejs)"; exit 1; }
if ! command -v haproxy >/dev/null; then
  NOTES+=("HAProxy skipped: not installed and could not be installed (apt-get install haproxy).")
  TARGETS="${TARGETS//haproxy/}"
fi
# Prints one or more fields of a JSON file, space separated (empty on any error).
jget() { node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1]));console.log(process.argv.slice(2).map((k)=>JSON.stringify(r[k])).join(" "))' "$@" 2>/dev/null; }

TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
[ -n "$TARGET_DIR" ] || TARGET_DIR="$ROOT/target"
log "building latch (release)"
(cd "$ROOT" && cargo build --release --quiet) || { log "cargo build failed"; exit 1; }
LATCH="$TARGET_DIR/release/latch"
log "building wsload (release)"
cargo build --release --quiet --manifest-path "$HERE/wsload/Cargo.toml" --target-dir "$TARGET_DIR/wsload" ||
  { log "cargo build of benches/load/wsload failed"; exit 1; }
WSLOAD="$TARGET_DIR/wsload/release/wsload"

# Every proxied idle connection costs the proxy two descriptors (client + backend).
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE="$(ulimit -n)"
if [ "$NOFILE" != unlimited ] && ((IDLE_CONNS * 2 + 200 > NOFILE)); then
  new=$(((NOFILE - 200) / 2))
  NOTES+=("Memory test uses $new idle WSS connections instead of $IDLE_CONNS: the hard fd limit is $NOFILE and each proxied connection needs 2 fds in the proxy.")
  IDLE_CONNS=$new
fi
[ "$NOFILE" = unlimited ] && NOFILE=1048576

# Clients use "localhost" so TLS clients send a valid SNI that matches certs/dev.pem (an IP
# as SNI is illegal; rustls logs a warning for each such handshake). Fall back to the IP
# when localhost does not resolve to 127.0.0.1 first.
HOST=127.0.0.1
[ "$(getent ahosts localhost 2>/dev/null | awk 'NR==1 {print $1}')" = 127.0.0.1 ] && HOST=localhost

wait_port() { # port [seconds]
  local i
  for ((i = 0; i < ${2:-10} * 20; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  log "nothing listens on 127.0.0.1:$1"; return 1
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPH_LO=32768 EPH_HI=60999
for p in $BE_HTTP1 $BE_HTTP2 $BE_HTTPS $BE_WS1 $BE_WS2 $BE_WSS "${HTTP_PORT[@]}" "${HTTPS_PORT[@]}" "${TCP_PORT[@]}"; do
  port_free "$p" || { log "port $p is already in use; stop whatever listens there"; exit 1; }
  ((p >= EPH_LO && p <= EPH_HI)) && NOTES+=("Port $p lies in the ephemeral range $EPH_LO-$EPH_HI; a listener there may fail to bind.")
done

# ---------------------------------------------------------------- configs
cat >"$OUT/nginx-backend/nginx.conf" <<CONF
# HTTP backend pool: two ports answering a 2-byte body, plus TLS for the direct baseline.
worker_processes auto;
worker_rlimit_nofile $NOFILE;
pid $OUT/nginx-backend/nginx.pid;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $OUT/nginx-backend/tmp;
  proxy_temp_path $OUT/nginx-backend/tmp;
  fastcgi_temp_path $OUT/nginx-backend/tmp;
  uwsgi_temp_path $OUT/nginx-backend/tmp;
  scgi_temp_path $OUT/nginx-backend/tmp;
  server {
    listen 127.0.0.1:$BE_HTTP1;
    listen 127.0.0.1:$BE_HTTP2;
    listen 127.0.0.1:$BE_HTTPS ssl;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    default_type text/plain;
    location / { return 200 "ok"; }
  }
}
CONF

NGX_LOAD=""
[ -f "$NGX_STREAM" ] && NGX_LOAD="load_module $NGX_STREAM;"
cat >"$OUT/nginx-proxy/nginx.conf" <<CONF
$NGX_LOAD
worker_processes auto;
worker_rlimit_nofile $NOFILE;
pid $OUT/nginx-proxy/nginx.pid;
events { worker_connections $((NOFILE - 100)); }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $OUT/nginx-proxy/tmp;
  proxy_temp_path $OUT/nginx-proxy/tmp;
  fastcgi_temp_path $OUT/nginx-proxy/tmp;
  uwsgi_temp_path $OUT/nginx-proxy/tmp;
  scgi_temp_path $OUT/nginx-proxy/tmp;
  upstream http_pool {
    server 127.0.0.1:$BE_HTTP1;
    server 127.0.0.1:$BE_HTTP2;
    keepalive 64;
    keepalive_requests 1000000;
  }
  upstream ws_pool {
    server 127.0.0.1:$BE_WS1;
    server 127.0.0.1:$BE_WS2;
  }
  server {
    listen 127.0.0.1:${HTTP_PORT[nginx]};
    listen 127.0.0.1:${HTTPS_PORT[nginx]} ssl;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    # the same forwarded headers latch sets
    proxy_set_header Host \$http_host;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header X-Forwarded-Host \$http_host;
    proxy_http_version 1.1;
    location / {
      proxy_set_header Connection "";
      proxy_pass http://http_pool;
    }
    location /ws {
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
      proxy_pass http://ws_pool;
    }
  }
}
CONF
# L4: nginx stream, round robin over the two TCP echo backends.
[ -f "$NGX_STREAM" ] && cat >>"$OUT/nginx-proxy/nginx.conf" <<CONF
stream {
  upstream tcp_pool {
    server 127.0.0.1:$BE_TCP1;
    server 127.0.0.1:$BE_TCP2;
  }
  server {
    listen 127.0.0.1:${TCP_PORT[nginx]};
    proxy_pass tcp_pool;
    proxy_timeout 1h;
  }
}
CONF

cat "$CERT" "$KEY" >"$OUT/haproxy-cert.pem"
cat >"$OUT/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn $(((NOFILE - 200) / 2))
  pidfile $OUT/haproxy.pid
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 30s
  timeout http-keep-alive 60s
  timeout tunnel 1h
  option forwardfor
frontend fe
  bind 127.0.0.1:${HTTP_PORT[haproxy]}
  bind 127.0.0.1:${HTTPS_PORT[haproxy]} ssl crt $OUT/haproxy-cert.pem alpn http/1.1
  maxconn $(((NOFILE - 200) / 2))
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  use_backend ws_pool if { path_beg /ws }
  default_backend http_pool
backend http_pool
  balance roundrobin
  server h1 127.0.0.1:$BE_HTTP1
  server h2 127.0.0.1:$BE_HTTP2
backend ws_pool
  balance roundrobin
  server w1 127.0.0.1:$BE_WS1
  server w2 127.0.0.1:$BE_WS2
frontend tcp_fe
  mode tcp
  bind 127.0.0.1:${TCP_PORT[haproxy]}
  default_backend tcp_pool
backend tcp_pool
  mode tcp
  balance roundrobin
  server t1 127.0.0.1:$BE_TCP1
  server t2 127.0.0.1:$BE_TCP2
CONF

cat >"$OUT/latch.toml" <<CONF
[server]
workers = 0

[[listener]]
bind = "127.0.0.1:${HTTP_PORT[latch]}"
upstream = "http_pool"
[[listener.route]]
path_prefix = "/ws"
upstream = "ws_pool"

[[listener]]
bind = "127.0.0.1:${HTTPS_PORT[latch]}"
upstream = "http_pool"
tls = { cert = "$CERT", key = "$KEY" }
[[listener.route]]
path_prefix = "/ws"
upstream = "ws_pool"

[upstream.http_pool]
balance = "round_robin"
servers = [{ addr = "127.0.0.1:$BE_HTTP1" }, { addr = "127.0.0.1:$BE_HTTP2" }]

[upstream.ws_pool]
balance = "round_robin"
servers = [{ addr = "127.0.0.1:$BE_WS1" }, { addr = "127.0.0.1:$BE_WS2" }]

[upstream.ws_pool.timeouts]
tunnel_idle = "1h"

# L4: the TCP echo backends, round robin.
[[listener]]
bind = "127.0.0.1:${TCP_PORT[latch]}"
mode = "tcp"
upstream = "tcp_pool"

[upstream.tcp_pool]
balance = "round_robin"
servers = [{ addr = "127.0.0.1:$BE_TCP1" }, { addr = "127.0.0.1:$BE_TCP2" }]

[upstream.tcp_pool.timeouts]
tunnel_idle = "1h"
CONF

"$LATCH" check --config "$OUT/latch.toml" >/dev/null || { log "latch rejected $OUT/latch.toml"; exit 1; }
if [[ " $TARGETS " == *" nginx "* ]]; then
  nginx -t -p "$OUT/nginx-proxy" -c "$OUT/nginx-proxy/nginx.conf" -e stderr 2>"$OUT/logs/nginx-t.log" ||
    { cat "$OUT/logs/nginx-t.log"; exit 1; }
fi
if [[ " $TARGETS " == *" haproxy "* ]]; then
  haproxy -c -f "$OUT/haproxy.cfg" >"$OUT/logs/haproxy-c.log" 2>&1 || { cat "$OUT/logs/haproxy-c.log"; exit 1; }
fi
mkdir -p "$OUT/nginx-backend/tmp" "$OUT/nginx-proxy/tmp"

# ---------------------------------------------------------------- backends
log "starting backends"
nginx -p "$OUT/nginx-backend" -c "$OUT/nginx-backend/nginx.conf" -e stderr -g 'daemon off;' 2>"$OUT/logs/backend-nginx.log" &
PIDS+=($!)
# Backends live at most an hour even if this script is killed with SIGKILL.
export WSLOAD_MAX_SECS=3600
"$WSLOAD" echo-server $BE_WS1 >"$OUT/logs/backend-ws1.log" 2>&1 &
PIDS+=($!)
"$WSLOAD" echo-server $BE_WS2 >"$OUT/logs/backend-ws2.log" 2>&1 &
PIDS+=($!)
"$WSLOAD" echo-server $BE_WSS "$CERT" "$KEY" >"$OUT/logs/backend-wss.log" 2>&1 &
PIDS+=($!)
"$WSLOAD" tcp-server $BE_TCP1 >"$OUT/logs/backend-tcp1.log" 2>&1 &
PIDS+=($!)
"$WSLOAD" tcp-server $BE_TCP2 >"$OUT/logs/backend-tcp2.log" 2>&1 &
PIDS+=($!)
for p in $BE_HTTP1 $BE_HTTP2 $BE_HTTPS $BE_WS1 $BE_WS2 $BE_WSS $BE_TCP1 $BE_TCP2; do wait_port "$p" || exit 1; done

# ---------------------------------------------------------------- proxies
PROXY_PID=""
start_proxy() { # target -> sets PROXY_PID
  local t=$1
  case $t in
    direct) PROXY_PID=""; return 0 ;;
    latch) "$LATCH" run --config "$OUT/latch.toml" >>"$OUT/logs/latch.log" 2>&1 & ;;
    nginx) nginx -p "$OUT/nginx-proxy" -c "$OUT/nginx-proxy/nginx.conf" -e stderr -g 'daemon off;' >>"$OUT/logs/nginx.log" 2>&1 & ;;
    haproxy) haproxy -db -f "$OUT/haproxy.cfg" >>"$OUT/logs/haproxy.log" 2>&1 & ;;
  esac
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "${HTTP_PORT[$t]}" && wait_port "${HTTPS_PORT[$t]}" && wait_port "${TCP_PORT[$t]}"
}
stop_proxy() {
  [ -n "$PROXY_PID" ] || return 0
  kill "$PROXY_PID" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PROXY_PID" 2>/dev/null
  wait "$PROXY_PID" 2>/dev/null
  PROXY_PID=""
}
# A process and all its descendants (nginx: master and workers), one PID a line.
proc_tree() {
  local c
  echo "$1"
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do proc_tree "$c"; done
}
# Resident memory in KiB of a process tree.
rss_tree() {
  local total=0 p
  for p in $(proc_tree "$1"); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
# CPU time (utime + stime, clock ticks) of a process tree; 0 for no PID (direct).
cpu_ticks() {
  [ -n "$1" ] || { echo 0; return; }
  local total=0 p
  for p in $(proc_tree "$1"); do
    # Fields after "(comm) ": state is 1, utime 12, stime 13.
    total=$((total + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
  done
  echo "$total"
}

RAW="$OUT/raw.tsv"
: >"$RAW"
: >"$OUT/logs/latch.log"; : >"$OUT/logs/nginx.log"; : >"$OUT/logs/haproxy.log"
put() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RAW"; }

# measure NAME TARGET OUTFILE CMD... : runs one load client with the proxy's CPU time read
# just before and just after it, and the client's own CPU time from the shell's `times`
# (user and system time of the subshell's waited-for children). Sets PROXY_CPU_S, WALL_S,
# CLIENT_CPU_S and returns the client's exit status.
measure() {
  local name=$1 t=$2 out=$3; shift 3
  local tf="$OUT/logs/times-$name-$t" before after t0 t1 rc
  before=$(cpu_ticks "$PROXY_PID")
  t0=$(date +%s.%N)
  ("$@" >"$out" 2>"${out%.*}.err"; rc=$?; times >"$tf"; exit $rc)
  rc=$?
  t1=$(date +%s.%N)
  after=$(cpu_ticks "$PROXY_PID")
  PROXY_CPU_S=$(awk -v a="$after" -v b="$before" -v hz="$HZ" 'BEGIN { printf "%.3f", (a - b) / hz }')
  WALL_S=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
  CLIENT_CPU_S=$(awk 'function s(v) { sub(/s$/, "", v); split(v, p, "m"); return p[1] * 60 + p[2] }
    NR == 2 { printf "%.3f", s($1) + s($2) }' "$tf")
  return $rc
}
# put_cpu NAME TARGET OPS: per-operation proxy CPU and the CPU use of proxy and client.
put_cpu() {
  local name=$1 t=$2 ops=$3
  put "${name}_ops" "$t" "$ops"
  put "${name}_client_cpu_pct" "$t" "$(awk -v c="$CLIENT_CPU_S" -v w="$WALL_S" 'BEGIN { printf "%.0f", 100 * c / w }')"
  [ "$t" = direct ] && return
  put "${name}_proxy_cpu_pct" "$t" "$(awk -v c="$PROXY_CPU_S" -v w="$WALL_S" 'BEGIN { printf "%.0f", 100 * c / w }')"
  ((ops > 0)) && put "${name}_cpu_us" "$t" "$(awk -v c="$PROXY_CPU_S" -v n="$ops" 'BEGIN { printf "%.2f", 1e6 * c / n }')"
}

# wrk output -> "rps p99_ms errors requests"
parse_wrk() {
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec:/ { rps = $2 }
    / requests in / { n = $1 }
    $1 == "99%" { p99 = ms($2) }
    /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx/ { err += $5 }
    END { printf "%s %s %d %d\n", rps, p99, err, n }'
}
run_wrk() { # name target url [extra wrk args...]
  local name=$1 t=$2 url=$3; shift 3
  local f="$OUT/logs/wrk-$name-$t.txt" rps p99 err n
  measure "$name" "$t" "$f" wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url"
  read -r rps p99 err n < <(parse_wrk <"$f")
  if [ -z "$rps" ] || ((n == 0)); then
    NOTES+=("$t, $name: wrk measured nothing (see target/bench/logs/wrk-$name-$t.txt).")
    log "  $name: failed"; return
  fi
  put "${name}_rate" "$t" "$rps"; put "${name}_p99" "$t" "$p99"
  put_cpu "$name" "$t" "$n"
  ((err > 0)) && NOTES+=("$t, $name: wrk reported $err errors (see target/bench/logs/wrk-$name-$t.txt).")
  log "  $name: $rps req/s, p99 ${p99} ms, proxy CPU ${PROXY_CPU_S}s for $n requests, client CPU ${CLIENT_CPU_S}s in ${WALL_S}s, errors $err"
}
run_ws() { # name target url
  local name=$1 t=$2 url=$3 f="$OUT/logs/ws-$1-$2.json" r mps p99 errs total
  measure "$name" "$t" "$f" "$WSLOAD" echo "$url" "$CONNS" "$DURATION"
  r=$(jget "$f" msgs_per_s p99_ms errors msgs_total)
  if [ -z "$r" ]; then
    NOTES+=("$t, $name: the WS client failed: $(head -c 300 "${f%.*}.err" | tr '\n' ' ')")
    log "  $name: failed"; return
  fi
  read -r mps p99 errs total <<<"$r"
  put "${name}_rate" "$t" "$mps"; put "${name}_p99" "$t" "$p99"
  put_cpu "$name" "$t" "$total"
  ((errs > 0)) && NOTES+=("$t, $name: $errs WebSocket errors (first: $(jget "$f" first_error)).")
  log "  $name: ${mps%.*} msg/s, p99 $p99 ms, proxy CPU ${PROXY_CPU_S}s for $total messages, client CPU ${CLIENT_CPU_S}s in ${WALL_S}s"
}
run_tcp() { # name target mode(tcp-bulk|tcp-conn)
  local name=$1 t=$2 mode=$3 f="$OUT/logs/tcp-$1-$2.json" r rate p99 errs ops
  measure "$name" "$t" "$f" "$WSLOAD" "$mode" "127.0.0.1:${TCP_PORT[$t]}" "$TCP_CONNS" "$DURATION"
  if [ "$mode" = tcp-bulk ]; then r=$(jget "$f" mb_per_s errors mb) p99=""; else r=$(jget "$f" conns_per_s errors conns); fi
  if [ -z "$r" ]; then
    NOTES+=("$t, $name: the TCP client failed: $(head -c 300 "${f%.*}.err" | tr '\n' ' ')")
    log "  $name: failed"; return
  fi
  read -r rate errs ops <<<"$r"
  put "${name}_rate" "$t" "$rate"
  [ "$mode" = tcp-conn ] && put "${name}_p99" "$t" "$(jget "$f" p99_ms)"
  put_cpu "$name" "$t" "$ops"
  ((errs > 0)) && NOTES+=("$t, $name: $errs TCP errors (first: $(jget "$f" first_error)).")
  log "  $name: ${rate%.*}/s, proxy CPU ${PROXY_CPU_S}s for $ops, client CPU ${CLIENT_CPU_S}s in ${WALL_S}s"
}
run_mem() { # target (proxy freshly started, PROXY_PID set)
  local t=$1 ready="$OUT/logs/idle-$1.json" before after cpid opened failed
  rm -f "$ready"
  sleep 1
  before=$(rss_tree "$PROXY_PID")
  WSLOAD_MAX_SECS=600 "$WSLOAD" idle "wss://$HOST:${WSS_PORT[$t]}/ws" "$IDLE_CONNS" "$ready" >"$OUT/logs/idle-$t.out" 2>&1 &
  cpid=$!
  PIDS+=("$cpid")
  for _ in $(seq 1 1800); do [ -s "$ready" ] && break; kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
  sleep 2
  after=$(rss_tree "$PROXY_PID")
  read -r opened failed < <(jget "$ready" opened failed)
  opened=${opened:-0}
  kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
  if ((opened > 0)); then
    put mem_kib "$t" "$(awk -v a="$after" -v b="$before" -v n="$opened" 'BEGIN { printf "%.2f", (a - b) / n }')"
    log "  memory: RSS $before -> $after KiB with $opened idle WSS connections (failed: ${failed:-?})"
    ((opened < IDLE_CONNS)) && NOTES+=("$t, memory: only $opened of $IDLE_CONNS WSS connections opened (failed: ${failed:-?}, $(jget "$ready" errors)).")
  else
    NOTES+=("$t, memory: no WSS connection could be opened ($(head -c 300 "$OUT/logs/idle-$t.out" | tr '\n' ' ') $(jget "$ready" errors)).")
  fi
  put mem_before_kib "$t" "$before"; put mem_after_kib "$t" "$after"; put mem_conns "$t" "$opened"
}

# ---------------------------------------------------------------- measurements
# All proxies run side by side (each on its own ports; an idle one costs nothing), and
# every operation is measured on each target in turn before the next operation, the
# targets' order rotated each round: the figures a ratio compares are taken seconds
# apart, not minutes, so the machine's drift (which moved a proxy's figure by up to a
# third between rounds when each target ran all operations in one block) falls on all
# of them alike. ROUNDS rounds; the report shows medians and ranges.
read -ra TLIST <<<"$TARGETS"
declare -A PID=()
for t in "${TLIST[@]}"; do
  start_proxy "$t" || { NOTES+=("$t did not start; see target/bench/logs/$t.log"); stop_proxy; continue; }
  PID[$t]=$PROXY_PID
  [ "$t" = direct ] && PID[$t]=none
done
OPS=()
[[ " $SUITES " == *" tcp "* ]] && OPS+=(tcpbulk tcpnew)
[[ " $SUITES " == *" http "* ]] && OPS+=(http https tlsnew ws wss)
run_op() { # op target
  local t=$2
  case $1 in
    tcpbulk) run_tcp tcpbulk "$t" tcp-bulk ;;
    tcpnew) run_tcp tcpnew "$t" tcp-conn ;;
    http) run_wrk http "$t" "http://$HOST:${HTTP_PORT[$t]}/" ;;
    https) run_wrk https "$t" "https://$HOST:${HTTPS_PORT[$t]}/" ;;
    tlsnew) run_wrk tlsnew "$t" "https://$HOST:${HTTPS_PORT[$t]}/" -H "Connection: close" ;;
    ws) run_ws ws "$t" "ws://$HOST:${WS_PORT[$t]}/ws" ;;
    wss) run_ws wss "$t" "wss://$HOST:${WSS_PORT[$t]}/ws" ;;
  esac
}
for ((round = 0; round < ROUNDS; round++)); do
  for op in "${OPS[@]}"; do
    log "== $op (round $((round + 1)) of $ROUNDS)"
    for ((i = 0; i < ${#TLIST[@]}; i++)); do
      t=${TLIST[$(((i + round) % ${#TLIST[@]}))]}
      [ -n "${PID[$t]:-}" ] || continue
      PROXY_PID=${PID[$t]}
      [ "$PROXY_PID" = none ] && PROXY_PID=""
      log " $t"
      run_op "$op" "$t"
    done
  done
done
for t in "${TLIST[@]}"; do
  PROXY_PID=${PID[$t]:-}
  [ "$PROXY_PID" = none ] && PROXY_PID=""
  stop_proxy
done
sleep 1
# Memory: each proxy freshly started, alone.
if [[ " $SUITES " == *" http "* ]]; then
  for t in "${TLIST[@]}"; do
    [ "$t" != direct ] || continue
    log "== memory: $t"
    start_proxy "$t" && run_mem "$t"
    stop_proxy
    sleep 1
  done
fi

# ---------------------------------------------------------------- report
HDR="$OUT/header.md"
{
  echo "# latch load benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) CPUs, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr); load average (1/5/15 min) before the run $LOADAVG, after it $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- versions: $("$LATCH" --version 2>/dev/null || echo latch) ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "?")), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v 2>/dev/null | head -1 | awk '{print "HAProxy " $3}'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "- load: HTTP with wrk -t2 -c$CONNS -d${DURATION}s --latency (new TLS connections: the same with \`Connection: close\`, one connection per request); WS with wsload (benches/load/wsload: tokio multi-thread, tokio-tungstenite, rustls), $CONNS connections each ping-ponging a 64-byte message for ${DURATION}s after 1 s of warm-up; memory: $IDLE_CONNS idle WSS connections, each proved by one echo"
  echo "- backends: 2 HTTP (one nginx, ports $BE_HTTP1/$BE_HTTP2, \`return 200 \"ok\"\`), 2 WS echo (\`wsload echo-server\`, ports $BE_WS1/$BE_WS2), round robin; direct = the client talks to one backend port (HTTPS/WSS direct: the backend's own TLS)"
  echo "- proxies: latch workers = 0, nginx worker_processes auto, HAProxy nbthread 2; all on one $(nproc)-core machine together with the backends and the load generator"
  echo "- TCP (L4) mode: latch \`mode = \"tcp\"\`, nginx \`stream\`, HAProxy \`mode tcp\`, round robin over two \`wsload tcp-server\` echo backends (ports $BE_TCP1/$BE_TCP2); bulk: $TCP_CONNS connections each writing 64 KiB chunks for ${DURATION}s and reading the echo, CPU per MB of both directions; new connections: $TCP_CONNS loops of connect, 1-byte echo, close (SO_LINGER 0)"
  echo "- CPU per operation: utime + stime of the proxy (nginx: master + workers) from /proc/PID/stat, read before and after each measurement, divided by the operations completed in it (WS: every round trip, warm-up included; new TLS: connections = requests); $ROUNDS rounds, each operation measured on every target in turn (seconds apart) before the next, the targets' order rotated each round, each figure the median of its rounds"
} >"$HDR"
errs=$(grep -cE '(ERROR|WARN)' "$OUT/logs/latch.log" 2>/dev/null)
[ "${errs:-0}" -gt 0 ] && NOTES+=("latch logged $errs WARN/ERROR lines (target/bench/logs/latch.log).")
NOTES_FILE="$OUT/notes.md"
: >"$NOTES_FILE"
for n in "${NOTES[@]}"; do echo "- $n" >>"$NOTES_FILE"; done
node "$HERE/report.js" "$RAW" "$HDR" "$NOTES_FILE" "$OUT/chart.svg" >"$OUT/results.md" ||
  { log "report.js failed"; exit 1; }
if [ "$PUBLISH" = 1 ]; then
  sed 's/](chart\.svg)/](results.svg)/' "$OUT/results.md" >"$HERE/results.md"
  cp "$OUT/chart.svg" "$HERE/results.svg"
  log "published benches/load/results.md and benches/load/results.svg"
fi
cat "$OUT/results.md"
log "written to $OUT/results.md, $OUT/raw.tsv and $OUT/chart.svg"
