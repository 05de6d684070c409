#!/usr/bin/env bash
# HTTPS over HTTP/2 load (issue 14 §4): latch vs nginx (`http2`) vs HAProxy (`alpn h2`)
# vs direct (the nginx backend itself over h2), all on the same run, with h2load.
#
#   benches/load/h2.sh                 # about 5 minutes, plus the first release build
#
# Every proxy terminates TLS with certs/dev.pem, speaks HTTP/2 to h2load and HTTP/1.1
# (kept alive) to two nginx backends answering a 2-byte body. Two load shapes:
#   - h2_c64_m1:  64 connections, 1 stream each (like wrk's 64 connections over HTTP/1.1);
#   - h2_c16_m16: 16 connections, 16 concurrent streams each (a browser's multiplexing).
# Reported per target and shape: requests/s, the proxy's CPU time per request
# (utime+stime from /proc/PID/stat of the proxy, nginx master plus workers, read just
# before and after each measurement, as benches/load/run.sh does), the share of the
# machine the proxy and h2load used, and failed requests.
#
# Knobs: DURATION [10] seconds per measurement; ROUNDS [3] interleaved rounds (all
# proxies run side by side; each figure is the median of its rounds); TARGETS
# ["direct latch nginx haproxy"]; PUBLISH=1 copies the table to benches/load/results-h2.md.
# Needs: h2load (apt-get install -y nghttp2-client), nginx, haproxy, cargo. The script
# installs missing Debian packages itself when it runs as root. Listens on fixed ports
# of 127.0.0.1 below the ephemeral range (checked free first), none shared with run.sh,
# so both may run in one job; stops only what it started, by PID.
# Output: target/bench/h2/results.md (also printed) and logs under target/bench/h2/logs/.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$ROOT/target/bench/h2"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
TARGETS="${TARGETS:-direct latch nginx haproxy}"
CERT="$ROOT/certs/dev.pem"
KEY="$ROOT/certs/dev-key.pem"
HZ="$(getconf CLK_TCK)"
BE1=19201 BE2=19202
declare -A PORT=([direct]=19243 [latch]=18643 [nginx]=28643 [haproxy]=27643)
SHAPES="h2_c64_m1:64:1 h2_c16_m16:16:16"

log() { printf '\033[1m[h2 bench]\033[0m %s\n' "$*" >&2; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT/logs" "$OUT/nginx-backend/tmp" "$OUT/nginx-proxy/tmp"
MISSING=()
command -v h2load >/dev/null || MISSING+=(nghttp2-client)
command -v nginx >/dev/null || MISSING+=(nginx)
command -v haproxy >/dev/null || MISSING+=(haproxy)
if ((${#MISSING[@]})) && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing ${MISSING[*]} with apt-get"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${MISSING[@]}"; } >"$OUT/logs/apt.log" 2>&1
fi
for t in h2load nginx haproxy; do
  command -v "$t" >/dev/null || { log "$t is required (apt-get install -y nghttp2-client nginx haproxy)"; exit 1; }
done

TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$TARGET_DIR" ] || TARGET_DIR="$ROOT/target"
log "building latch (release)"
(cd "$ROOT" && cargo build --release --quiet) || { log "cargo build failed"; exit 1; }
LATCH="$TARGET_DIR/release/latch"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local i
  for ((i = 0; i < 200; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  log "nothing listens on 127.0.0.1:$1"; return 1
}
for p in $BE1 $BE2 "${PORT[@]}"; do
  port_free "$p" || { log "port $p is in use; stop whatever listens there"; exit 1; }
done
HOST=127.0.0.1
[ "$(getent ahosts localhost 2>/dev/null | awk 'NR==1 {print $1}')" = 127.0.0.1 ] && HOST=localhost

# ---------------------------------------------------------------- configs
cat >"$OUT/nginx-backend/nginx.conf" <<CONF
worker_processes auto;
pid $OUT/nginx-backend/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  client_body_temp_path $OUT/nginx-backend/tmp;
  proxy_temp_path $OUT/nginx-backend/tmp;
  fastcgi_temp_path $OUT/nginx-backend/tmp;
  uwsgi_temp_path $OUT/nginx-backend/tmp;
  scgi_temp_path $OUT/nginx-backend/tmp;
  server {
    listen 127.0.0.1:$BE1;
    listen 127.0.0.1:$BE2;
    listen 127.0.0.1:${PORT[direct]} ssl http2;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    default_type text/plain;
    location / { return 200 "ok"; }
  }
}
CONF

cat >"$OUT/nginx-proxy/nginx.conf" <<CONF
worker_processes auto;
pid $OUT/nginx-proxy/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  client_body_temp_path $OUT/nginx-proxy/tmp;
  proxy_temp_path $OUT/nginx-proxy/tmp;
  fastcgi_temp_path $OUT/nginx-proxy/tmp;
  uwsgi_temp_path $OUT/nginx-proxy/tmp;
  scgi_temp_path $OUT/nginx-proxy/tmp;
  upstream pool {
    server 127.0.0.1:$BE1;
    server 127.0.0.1:$BE2;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${PORT[nginx]} ssl http2;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$http_host;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme;
    location / { proxy_pass http://pool; }
  }
}
CONF

cat "$CERT" "$KEY" >"$OUT/haproxy-cert.pem"
cat >"$OUT/haproxy.cfg" <<CONF
global
  nbthread 2
  pidfile $OUT/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option forwardfor
frontend fe
  bind 127.0.0.1:${PORT[haproxy]} ssl crt $OUT/haproxy-cert.pem alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend pool
backend pool
  balance roundrobin
  http-reuse always
  server b1 127.0.0.1:$BE1
  server b2 127.0.0.1:$BE2
CONF

cat >"$OUT/latch.toml" <<CONF
# HTTP/2 is on by default on a TLS listener.
[[listener]]
bind = "127.0.0.1:${PORT[latch]}"
upstream = "pool"
tls = { cert = "$CERT", key = "$KEY" }

[upstream.pool]
balance = "round_robin"
servers = [{ addr = "127.0.0.1:$BE1" }, { addr = "127.0.0.1:$BE2" }]
CONF
"$LATCH" check --config "$OUT/latch.toml" >/dev/null || { log "latch rejected $OUT/latch.toml"; exit 1; }
nginx -t -p "$OUT/nginx-proxy" -c "$OUT/nginx-proxy/nginx.conf" -e stderr 2>"$OUT/logs/nginx-t.log" ||
  { cat "$OUT/logs/nginx-t.log"; exit 1; }
haproxy -c -f "$OUT/haproxy.cfg" >"$OUT/logs/haproxy-c.log" 2>&1 || { cat "$OUT/logs/haproxy-c.log"; exit 1; }

# ---------------------------------------------------------------- processes
log "starting the nginx backend"
nginx -p "$OUT/nginx-backend" -c "$OUT/nginx-backend/nginx.conf" -e stderr -g 'daemon off;' 2>"$OUT/logs/backend.log" &
PIDS+=($!)
for p in $BE1 $BE2 "${PORT[direct]}"; do wait_port "$p" || exit 1; done

PROXY_PID=""
start_proxy() {
  case $1 in
    direct) PROXY_PID=""; return 0 ;;
    latch) "$LATCH" run --config "$OUT/latch.toml" >>"$OUT/logs/latch.log" 2>&1 & ;;
    nginx) nginx -p "$OUT/nginx-proxy" -c "$OUT/nginx-proxy/nginx.conf" -e stderr -g 'daemon off;' >>"$OUT/logs/nginx.log" 2>&1 & ;;
    haproxy) haproxy -db -f "$OUT/haproxy.cfg" >>"$OUT/logs/haproxy.log" 2>&1 & ;;
  esac
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "${PORT[$1]}"
}
stop_proxy() {
  [ -n "$PROXY_PID" ] || return 0
  kill "$PROXY_PID" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PROXY_PID" 2>/dev/null
  wait "$PROXY_PID" 2>/dev/null
  PROXY_PID=""
}
proc_tree() {
  local c
  echo "$1"
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do proc_tree "$c"; done
}
cpu_ticks() {
  [ -n "$1" ] || { echo 0; return; }
  local total=0 p
  for p in $(proc_tree "$1"); do
    total=$((total + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
  done
  echo "$total"
}

# ---------------------------------------------------------------- measurements
# All proxies run side by side (each on its own port); in each round every shape is
# measured on every target in turn, the targets' order rotated each round, so the
# figures a ratio compares are taken seconds apart and the machine's drift falls on
# all of them alike. Each figure is the median of its rounds.
declare -A PID_OF US RPS PCT CPCT FAILED
RUNNING=()
for t in $TARGETS; do
  start_proxy "$t" || { log "$t did not start"; stop_proxy; continue; }
  PID_OF[$t]=$PROXY_PID
  RUNNING+=("$t")
  # A first short run: TLS session set-up, connection pools and caches warm.
  h2load -n 2000 -c 16 -m 4 "https://$HOST:${PORT[$t]}/" >"$OUT/logs/warm-$t.txt" 2>&1
done
measure() { # round shape-spec target
  local r=$1 name c m t=$3 f url before after t0 t1 rps done ok failed proto wall client cpu_s
  IFS=: read -r name c m <<<"$2"
  url="https://$HOST:${PORT[$t]}/"
  f="$OUT/logs/$name-$t-r$r.txt"
  before=$(cpu_ticks "${PID_OF[$t]}")
  t0=$(date +%s.%N)
  (h2load -c "$c" -m "$m" -D "$DURATION" "$url" >"$f" 2>&1; times >"$f.times")
  t1=$(date +%s.%N)
  after=$(cpu_ticks "${PID_OF[$t]}")
  rps=$(awk '/^finished in/ { gsub(",", ""); print $4 }' "$f")
  read -r done ok failed < <(awk '/^requests:/ { gsub(",", ""); print $6, $8, $10 }' "$f")
  proto=$(awk '/Application protocol:/ { print $3 }' "$f")
  wall=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
  client=$(awk 'function s(v) { sub(/s$/, "", v); split(v, p, "m"); return p[1] * 60 + p[2] }
    NR == 2 { printf "%.3f", s($1) + s($2) }' "$f.times")
  cpu_s=$(awk -v a="$after" -v b="$before" -v hz="$HZ" 'BEGIN { printf "%.3f", (a - b) / hz }')
  if [ -z "$rps" ] || [ -z "$ok" ] || ((ok == 0)); then
    log "  round $r, $name, $t: h2load measured nothing (see $f)"; return
  fi
  local k="$name|$t"
  RPS[$k]+="${rps%.*} "
  FAILED[$k]=$(( ${FAILED[$k]:-0} + failed ))
  CPCT[$k]+="$(awk -v c="$client" -v w="$wall" 'BEGIN { printf "%.0f", 100 * c / w }') "
  if [ "$t" != direct ]; then
    US[$k]+="$(awk -v c="$cpu_s" -v n="$ok" 'BEGIN { printf "%.2f", 1e6 * c / n }') "
    PCT[$k]+="$(awk -v c="$cpu_s" -v w="$wall" 'BEGIN { printf "%.0f", 100 * c / w }') "
  fi
  log "  round $r, $name, $t: ${rps%.*} req/s ($proto), proxy CPU ${cpu_s}s for $ok requests, failed $failed"
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s–%s", lo, hi }'; }
n=${#RUNNING[@]}
for r in $(seq 1 "$ROUNDS"); do
  log "round $r of $ROUNDS"
  for shape in $SHAPES; do
    for i in $(seq 0 $((n - 1))); do
      measure "$r" "$shape" "${RUNNING[$(((i + r - 1) % n))]}"
    done
  done
done
for t in "${RUNNING[@]}"; do PROXY_PID=${PID_OF[$t]}; stop_proxy; done

ROWS=()
RATIOS=()
for shape in $SHAPES; do
  IFS=: read -r name _ _ <<<"$shape"
  for t in "${RUNNING[@]}"; do
    k="$name|$t"
    [ -n "${RPS[$k]:-}" ] || continue
    us="-"; pct="-"
    if [ -n "${US[$k]:-}" ]; then
      us="$(median <<<"${US[$k]}" | xargs printf '%.1f') ($(range <<<"${US[$k]}"))"
      pct="$(median <<<"${PCT[$k]}")%"
    fi
    ROWS+=("| $name | $t | $(median <<<"${RPS[$k]}" | xargs printf '%.0f') | $us | $pct | $(median <<<"${CPCT[$k]}")% | ${FAILED[$k]} |")
  done
  # latch ÷ the better peer, from the medians, and per round.
  l=$(median <<<"${US[$name|latch]:-}")
  best=""
  for peer in nginx haproxy; do
    p=$(median <<<"${US[$name|$peer]:-}")
    [ -n "$p" ] && { [ -z "$best" ] || awk -v a="$p" -v b="$best" 'BEGIN { exit !(a < b) }'; } && best=$p && bname=$peer
  done
  if [ -n "$l" ] && [ -n "$best" ]; then
    RATIOS+=("- $name: latch ÷ $bname $(awk -v a="$l" -v b="$best" 'BEGIN { printf "%.2f", a / b }') (latch $l µs, $bname $best µs, medians of $ROUNDS rounds)")
  fi
done

{
  echo "# HTTPS over HTTP/2: h2load against latch, nginx and HAProxy"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg);" \
    "h2load -D $DURATION; backends: two nginx ports over HTTP/1.1 keep-alive (direct: the backend itself over h2)."
  echo "$(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | sed -n '1s/ - .*//p'), $(h2load --version | head -1)."
  echo
  echo "Medians of $ROUNDS interleaved rounds (every shape measured on every target in turn, seconds apart); the range of the rounds in brackets."
  echo
  echo "| load | target | req/s | proxy CPU us/req | proxy CPU | h2load CPU | failed |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
  echo
  printf '%s\n' "${RATIOS[@]}"
} >"$OUT/results.md"
cat "$OUT/results.md"
if [ "${PUBLISH:-0}" = 1 ]; then
  cp "$OUT/results.md" "$ROOT/benches/load/results-h2.md"
  log "published to benches/load/results-h2.md"
fi
