#!/usr/bin/env bash
# Soak benchmark (issue 10): many WSS connections echoing through latch for a long time,
# through reloads and a backend kill. A script, not a test: it measures and reports.
#
#   benches/soak/run.sh              # 9,000 connections for 10 minutes (plus ramp and builds)
#   SHORT=1 benches/soak/run.sh      # 1,000 connections for 60 s, to try it
#   PUBLISH=1 benches/soak/run.sh    # also copy the table and chart to benches/soak/
#
# What runs, all on 127.0.0.1:
#   - three backends, `wsload echo-server --name wsN` (benches/load/wsload): each is a WS echo
#     server that names itself in its 101 (X-Backend) and in every echo, and answers plain
#     HTTP GETs with 200 and its name, so the same three processes serve both upstreams;
#   - latch (release build) with one TLS listener: /ws... goes to `ws_pool` (least_conn,
#     ws health check), /http to `http_pool` (round robin, http health check, retry on
#     error and timeout, which is latch's default, written out);
#   - the client, `wsload soak`: CONNS WSS connections, each sending a numbered 64-byte
#     message once a second and checking every echo (its own slot, the next number, the
#     backend its 101 named); a closed connection is recorded and reconnects after
#     0.5-5 s. Beside it, an HTTP GET loop at HTTP_RATE req/s over 5 keep-alive
#     connections through the same listener.
#
# Timeline, t = 0 when all CONNS connections are open (D = DURATION):
#   reload k at k*D/6 (k = 1..5): SIGHUP to latch after the config is rewritten to the
#     next stage below; each reload is confirmed by latch_reloads_total{outcome="ok"}.
#   kill ws1 with SIGKILL at 13/24 D (between reloads 3 and 4); start it again at 15/24 D.
#   stage 0  ws_pool ws1 ws2           http_pool ws1 ws2
#   stage 1  ws_pool ws1(w2) ws2       http_pool ws1 ws2 ws3          (weight; add ws3)
#   stage 2  ws_pool ws1 ws2 ws3       http_pool ws1 ws2(w3) ws3      (add ws3; weight)
#   stage 3  ws_pool ws1 ws2(w2) ws3   http_pool ws1 ws2              (weight; remove ws3)
#   stage 4  ws_pool ws1 ws2(w2)       http_pool ws1(w2) ws2          (remove ws3: its
#            tunnels drain and are closed when [server] grace ends; weight)
#   stage 5  ws_pool ws1 ws2 ws3       http_pool ws1 ws2 ws3          (add ws3 back)
#   With least_conn, the tunnels cut by the kill reconnect mostly to ws3 (empty, in the pool
#   since stage 2); those cut by stage 4's drain reconnect to the restarted ws1.
#
# What it reports (target/soak/results.md; chart.svg; rss.tsv, one line a second):
#   - latch's RSS (VmRSS from /proc/PID/status every second): start, end, max, and the slope;
#   - per backend: messages sent, echoed and lost, split between tunnels cut on purpose (by
#     the kill, or by the drain of a server a reload removed) and all the others, whose loss
#     must be zero; tunnels closed for any other reason are listed as unexpected;
#   - HTTP requests sent and failed (non-2xx, or a transport error), with the failures' times;
#   - the load average, since the 2-core machine is shared.
#
# Environment knobs (defaults in brackets):
#   DURATION [600; SHORT=1: 60]   seconds from all connections open to the end
#   CONNS [9000; SHORT=1: 1000]   WSS connections
#   HTTP_RATE [50]                HTTP requests a second
#   PUBLISH [0]                   1: copy results to benches/soak/results.md and results.svg
#
# Needs: cargo, node (only for the report). Fixed ports on 127.0.0.1, checked free first:
# 16443 (latch TLS), 16090 (latch admin), 16111-16113 (backends). The script stops only the
# processes it started, by PID, on exit. Every wait is bounded.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/benches/soak"
OUT="$ROOT/target/soak"
SHORT="${SHORT:-0}"
if [ "$SHORT" = 1 ]; then
  DURATION="${DURATION:-60}" CONNS="${CONNS:-1000}"
else
  DURATION="${DURATION:-600}" CONNS="${CONNS:-9000}"
fi
HTTP_RATE="${HTTP_RATE:-50}"
PUBLISH="${PUBLISH:-0}"
CERT="$ROOT/certs/dev.pem"
KEY="$ROOT/certs/dev-key.pem"
PORT_TLS=16443 PORT_ADMIN=16090
declare -A WS_PORT=([ws1]=16111 [ws2]=16112 [ws3]=16113)
# Drain time of a removed server's tunnels: long enough to see them live on, short
# enough that their reconnections happen well inside the run.
GRACE=$((DURATION / 30 < 2 ? 2 : DURATION / 30))

log() { printf '\033[1m[soak]\033[0m %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$OUT"
mkdir -p "$OUT/logs" "$OUT/client"
NOTES=()
command -v node >/dev/null || { log "node is required to write the report (apt-get install nodejs)"; exit 1; }
command -v curl >/dev/null || { log "curl is required to read latch's admin metrics"; exit 1; }

# ---------------------------------------------------------------- build
TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
[ -n "$TARGET_DIR" ] || TARGET_DIR="$ROOT/target"
log "building latch (release)"
(cd "$ROOT" && cargo build --release --quiet) || { log "cargo build failed"; exit 1; }
LATCH="$TARGET_DIR/release/latch"
log "building wsload (release)"
cargo build --release --quiet --manifest-path "$ROOT/benches/load/wsload/Cargo.toml" --target-dir "$TARGET_DIR/wsload" ||
  { log "cargo build of benches/load/wsload failed"; exit 1; }
WSLOAD="$TARGET_DIR/wsload/release/wsload"

# Each proxied connection costs latch two descriptors (client + backend).
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE="$(ulimit -n)"
if [ "$NOFILE" != unlimited ] && ((CONNS * 2 + 500 > NOFILE)); then
  new=$(((NOFILE - 500) / 2))
  NOTES+=("$new connections instead of $CONNS: the hard fd limit is $NOFILE and each proxied connection needs 2 fds in latch.")
  CONNS=$new
fi

HOST=127.0.0.1
[ "$(getent ahosts localhost 2>/dev/null | awk 'NR==1 {print $1}')" = 127.0.0.1 ] && HOST=localhost

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port [seconds]
  local i
  for ((i = 0; i < ${2:-10} * 20; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  log "nothing listens on 127.0.0.1:$1"; return 1
}
for p in $PORT_TLS $PORT_ADMIN "${WS_PORT[@]}"; do
  port_free "$p" || { log "port $p is already in use; stop whatever listens there"; exit 1; }
done

# ---------------------------------------------------------------- config stages
server() { # name [weight]
  printf '{ id = "%s", addr = "127.0.0.1:%s", weight = %s }' "$1" "${WS_PORT[$1]}" "${2:-1}"
}
list() { # "name[:weight]"... -> a TOML array of servers
  local s out="" n w
  for s in "$@"; do
    n=${s%%:*} w=1
    [[ $s == *:* ]] && w=${s#*:}
    out+="${out:+, }$(server "$n" "$w")"
  done
  echo "[$out]"
}
declare -a WS_STAGE=("ws1 ws2" "ws1:2 ws2" "ws1 ws2 ws3" "ws1 ws2:2 ws3" "ws1 ws2:2" "ws1 ws2 ws3")
declare -a HTTP_STAGE=("ws1 ws2" "ws1 ws2 ws3" "ws1 ws2:3 ws3" "ws1 ws2" "ws1:2 ws2" "ws1 ws2 ws3")
write_config() { # stage
  local s=$1 f="$OUT/latch.toml"
  # shellcheck disable=SC2086
  cat >"$f.tmp" <<CONF
# soak stage $s: ws_pool ${WS_STAGE[$s]}; http_pool ${HTTP_STAGE[$s]}
[server]
workers = 0
grace = "${GRACE}s"

[admin]
bind = "127.0.0.1:$PORT_ADMIN"

[[listener]]
bind = "127.0.0.1:$PORT_TLS"
upstream = "ws_pool"
tls = { cert = "$CERT", key = "$KEY" }
[[listener.route]]
path_prefix = "/http"
upstream = "http_pool"

[upstream.ws_pool]
balance = "least_conn"
servers = $(list ${WS_STAGE[$s]})
max_fails = 1
fail_timeout = "10s"

[upstream.ws_pool.check]
type = "ws"
path = "/health"
interval = "1s"
timeout = "1s"
rise = 2
fall = 2

[upstream.ws_pool.timeouts]
connect = "2s"
tunnel_idle = "1h"

[upstream.http_pool]
balance = "round_robin"
servers = $(list ${HTTP_STAGE[$s]})
max_fails = 1
fail_timeout = "10s"

[upstream.http_pool.check]
type = "http"
path = "/health"
interval = "1s"
timeout = "1s"
rise = 2
fall = 2

[upstream.http_pool.retry]
on = ["error", "timeout"]

[upstream.http_pool.timeouts]
connect = "2s"
read = "10s"
CONF
  "$LATCH" check --config "$f.tmp" >"$OUT/logs/check-$s.log" 2>&1 || { cat "$OUT/logs/check-$s.log" >&2; return 1; }
  mv "$f.tmp" "$f"
}
# Servers of ws_pool that stage $1 drops compared with stage $1 - 1.
removed_ws() {
  local s=$1 a out=""
  for a in ${WS_STAGE[$((s - 1))]}; do
    a=${a%%:*}
    [[ " ${WS_STAGE[$s]//:[0-9]/} " == *" $a "* ]] || out+="${out:+,}$a"
  done
  echo "${out:--}"
}
write_config 0 || { log "latch rejected the stage-0 config"; exit 1; }

# ---------------------------------------------------------------- processes
declare -A BE_PID
start_backend() { # name
  WSLOAD_MAX_SECS=$((DURATION + 900)) "$WSLOAD" echo-server "${WS_PORT[$1]}" --name "$1" >>"$OUT/logs/backend-$1.log" 2>&1 &
  BE_PID[$1]=$!
  PIDS+=($!)
  wait_port "${WS_PORT[$1]}"
}
metric() { # name{labels} -> value, empty if absent
  curl -s --max-time 2 "http://127.0.0.1:$PORT_ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2; exit}'
}
status_snapshot() { # label
  curl -s --max-time 2 "http://127.0.0.1:$PORT_ADMIN/status" >"$OUT/logs/status-$1.json" 2>/dev/null
}
EVENTS="$OUT/events.tsv"
printf 'epoch_ms\tkind\tlabel\tcuts\tdetail\tload1\n' >"$EVENTS"
event() { # kind label cuts detail [epoch_ms, default now]
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${5:-$(now_ms)}" "$1" "$2" "$3" "$4" "$(cut -d' ' -f1 /proc/loadavg)" >>"$EVENTS"
  log "event: $1 $2 ($4)"
}
# CPU time (utime + stime, clock ticks) of one process, 0 if it is gone.
ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0; }
CPU="$OUT/cpu.tsv"
printf 'label\tepoch_ms\tlatch\tclient\tws1\tws2\tws3\tmachine_busy\tmachine_total\n' >"$CPU"
cpu_snapshot() { # label: CPU ticks of latch, the client, each backend, and the whole machine
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$(now_ms)" "$(ticks "$LATCH_PID")" "$(ticks "$CLIENT_PID")" \
    "$(ticks "${BE_PID[ws1]}")" "$(ticks "${BE_PID[ws2]}")" "$(ticks "${BE_PID[ws3]}")" \
    "$(awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9 "\t" $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat)" >>"$CPU"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "starting backends ws1 ws2 ws3"
for b in ws1 ws2 ws3; do start_backend "$b" || exit 1; done
log "starting latch"
"$LATCH" run --config "$OUT/latch.toml" >"$OUT/logs/latch.log" 2>&1 &
LATCH_PID=$!
PIDS+=($LATCH_PID)
wait_port $PORT_TLS && wait_port $PORT_ADMIN || { log "latch did not start; see $OUT/logs/latch.log"; exit 1; }

# RSS, descriptors, CPU ticks and threads of latch, and the load average, once a second,
# on the second, until latch exits or the hard end.
RSS_RAW="$OUT/rss.raw.tsv"
sample() { # pid until_epoch_s
  local pid=$1 until=$2 t next rss thr fds cpu
  printf 'epoch_ms\trss_kib\tfds\tcpu_ticks\tthreads\tload1\n' >"$RSS_RAW"
  next=$(now_ms)
  while kill -0 "$pid" 2>/dev/null; do
    t=$(now_ms)
    ((t / 1000 > until)) && break
    read -r rss thr < <(awk '/^VmRSS:/ {r = $2} /^Threads:/ {n = $2} END {print r, n}' "/proc/$pid/status" 2>/dev/null)
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    cpu=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${rss:-}" "$fds" "${cpu:-}" "${thr:-}" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RSS_RAW"
    next=$((next + 1000))
    t=$(now_ms)
    ((next > t)) && sleep "$(awk -v d=$((next - t)) 'BEGIN { printf "%.3f", d / 1000 }')"
    ((next < t - 1000)) && next=$t # fell behind (machine busy): do not catch up in a burst
  done
}
RAMP_MAX=330
HARD_END=$(($(date +%s) + RAMP_MAX + DURATION + 120))
sample "$LATCH_PID" "$HARD_END" &
SAMPLER_PID=$!
PIDS+=($SAMPLER_PID)
sleep 2 # a baseline of RSS with no connection

log "client: $CONNS WSS connections for ${DURATION}s, HTTP at $HTTP_RATE req/s (grace ${GRACE}s)"
CLIENT_DIR="$OUT/client"
"$WSLOAD" soak "wss://$HOST:$PORT_TLS/ws" "$CONNS" "$DURATION" "$CLIENT_DIR" "https://$HOST:$PORT_TLS/http" "$HTTP_RATE" \
  >"$CLIENT_DIR/stdout.json" 2>"$OUT/logs/client.err" &
CLIENT_PID=$!
PIDS+=($CLIENT_PID)
for ((i = 0; i < RAMP_MAX * 10; i++)); do
  [ -s "$CLIENT_DIR/ready.json" ] && break
  kill -0 "$CLIENT_PID" 2>/dev/null || break
  sleep 0.1
done
[ -s "$CLIENT_DIR/ready.json" ] || { log "the client never got its connections open: $(head -c 500 "$OUT/logs/client.err")"; exit 1; }
T0=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).t0_ms)' "$CLIENT_DIR/ready.json")
log "ready: $(cat "$CLIENT_DIR/ready.json")"
status_snapshot start
cpu_snapshot start

# ---------------------------------------------------------------- timeline
at() { # offset_ms: sleep until T0 + offset
  local d=$((T0 + $1 - $(now_ms)))
  ((d > 0)) && sleep "$(awk -v d="$d" 'BEGIN { printf "%.3f", d / 1000 }')"
  return 0
}
reload() { # stage
  local s=$1 before after i t
  write_config "$s" || { event reload "R$s" - "config rejected by latch check"; return; }
  before=$(metric 'latch_reloads_total{outcome="ok"}')
  t=$(now_ms)
  kill -HUP "$LATCH_PID"
  for ((i = 0; i < 100; i++)); do
    after=$(metric 'latch_reloads_total{outcome="ok"}')
    [ "${after:-0}" != "${before:-0}" ] && break
    sleep 0.1
  done
  if [ "${after:-0}" != "${before:-0}" ]; then
    event reload "R$s" "$(removed_ws "$s")" "stage $s, confirmed in $(($(now_ms) - t)) ms: ws_pool ${WS_STAGE[$s]}; http_pool ${HTTP_STAGE[$s]}" "$t"
  else
    event reload "R$s" - "stage $s NOT confirmed within 10 s (latch_reloads_total ok $before -> $after)" "$t"
    NOTES+=("Reload $s was not confirmed by latch_reloads_total; see target/soak/logs/latch.log.")
  fi
  status_snapshot "R$s"
}
PLAN=()
for k in 1 2 3 4 5; do PLAN+=("$((DURATION * 1000 * k / 6)) reload $k"); done
PLAN+=("$((DURATION * 1000 * 13 / 24)) kill ws1" "$((DURATION * 1000 * 15 / 24)) restart ws1")
PLAN+=("$((DURATION * 1000 - 1000)) cpu end")
while read -r off what arg; do
  at "$off"
  kill -0 "$CLIENT_PID" 2>/dev/null || { NOTES+=("The client exited early, before $what $arg."); break; }
  case $what in
    reload) reload "$arg" ;;
    kill)
      cpu_snapshot "kill $arg"
      t=$(now_ms) # the event's time is when the signal goes, not when the process is reaped
      kill -KILL "${BE_PID[$arg]}"
      wait "${BE_PID[$arg]}" 2>/dev/null
      event kill "kill $arg" "$arg" "SIGKILL to pid ${BE_PID[$arg]}; reaped after $(($(now_ms) - t)) ms" "$t"
      status_snapshot "kill" ;;
    cpu) cpu_snapshot "$arg" ;;
    restart)
      if start_backend "$arg"; then event restart "restart $arg" - "pid ${BE_PID[$arg]}"
      else event restart "restart $arg" - "FAILED to listen again"; fi
      status_snapshot "restart" ;;
  esac
done < <(printf '%s\n' "${PLAN[@]}" | sort -n)

# ---------------------------------------------------------------- end
for ((i = 0; i < 900; i++)); do
  kill -0 "$CLIENT_PID" 2>/dev/null || break
  (($(now_ms) > T0 + DURATION * 1000 + 60000)) && { NOTES+=("The client did not finish within 60 s of the end and was killed."); break; }
  sleep 0.1
done
kill "$CLIENT_PID" 2>/dev/null
wait "$CLIENT_PID" 2>/dev/null
status_snapshot end
sleep 5 # RSS once every connection is closed
kill "$SAMPLER_PID" 2>/dev/null
wait "$SAMPLER_PID" 2>/dev/null
log "stopping latch"
STOP0=$(now_ms)
kill -TERM "$LATCH_PID"
for ((i = 0; i < 600; i++)); do kill -0 "$LATCH_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$LATCH_PID" 2>/dev/null; then
  NOTES+=("latch did not stop within 60 s of SIGTERM.")
else
  NOTES+=("latch stopped $(($(now_ms) - STOP0)) ms after SIGTERM, with every connection already closed.")
fi
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
[ -s "$CLIENT_DIR/summary.json" ] || { log "the client wrote no summary: $(head -c 500 "$OUT/logs/client.err")"; exit 1; }

# ---------------------------------------------------------------- report
# latch colours its log even into a file (issue 10, item 6): strip the codes first.
sed -E 's/\x1b\[[0-9;]*m//g' "$OUT/logs/latch.log" >"$OUT/logs/latch.txt"
warns=$(grep -cE ' (WARN|ERROR) ' "$OUT/logs/latch.txt")
if [ "${warns:-0}" -gt 0 ]; then
  NOTES+=("latch logged $warns WARN/ERROR lines (target/soak/logs/latch.txt); by message: $(grep -E ' (WARN|ERROR) ' "$OUT/logs/latch.txt" |
    sed -E 's/^[^ ]+ +//; s/ peer=[^ ]+//; s/ tunnels=[0-9]+//; s/ reason=.*//' | sort | uniq -c | sort -rn | head -8 |
    awk '{c = $1; $1 = ""; printf "%s× \"%s\"; ", c, substr($0, 2)}' | sed 's/; $//')")
fi
{
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) CPUs, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr); shared with other engineers' builds and tests"
  echo "- load average (1/5/15 min): before $LOAD_BEFORE, after $LOAD_AFTER"
  # The commit that last changed what latch is built from (src/, Cargo.*), and whether
  # those files differ from it: commits to benches/ do not change the binary measured.
  SRC_AT="$(git -C "$ROOT" log -1 --format=%h -- src Cargo.toml Cargo.lock 2>/dev/null || echo "?")"
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || SRC_AT="$SRC_AT with uncommitted changes"
  echo "- latch: $("$LATCH" --version 2>/dev/null || echo latch), built from src/ as of commit $SRC_AT (bench scripts at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "?")), \`workers = 0\` (one per core), \`grace = \"${GRACE}s\"\`"
  echo "- run: $CONNS WSS connections for ${DURATION}s after all were open, one 64-byte message a second each; HTTP GET at $HTTP_RATE req/s; 5 reloads and one backend kill (SIGKILL) and restart"
} >"$OUT/header.md"
: >"$OUT/notes.md"
for n in "${NOTES[@]}"; do echo "- $n" >>"$OUT/notes.md"; done
node "$HERE/report.js" "$OUT" "$(getconf CLK_TCK)" "$GRACE" "$HTTP_RATE" >"$OUT/results.md" || { log "report.js failed"; exit 1; }
if [ "$PUBLISH" = 1 ]; then
  sed 's/](chart\.svg)/](results.svg)/' "$OUT/results.md" >"$HERE/results.md"
  cp "$OUT/chart.svg" "$HERE/results.svg"
  log "published benches/soak/results.md and benches/soak/results.svg"
fi
cat "$OUT/results.md"
log "written to $OUT/results.md, $OUT/rss.tsv and $OUT/chart.svg (raw data in $OUT/client, logs in $OUT/logs)"
