#!/usr/bin/env bash
# Load test: wrk against gunicorn (4 workers) on PostgreSQL, the portal beside the minimal app.
#
# Usage:
#   bench/load.sh
#   LOAD_DURATION=30s LOAD_CONNECTIONS=64 bench/load.sh
#
# Needs: wrk (Debian: apt-get install -y wrk), gunicorn (.venv/bin/pip install gunicorn, or
# '.[server]'), the portal installed in .venv (or python3 on PATH), PostgreSQL reachable with
# the URL below (the test creates a private schema there and drops it at the end), optionally
# Redis for the rate-limit storage (memory:// is used when it does not answer).
#
# What it does, everything on 127.0.0.1 with free ports, every process stopped on exit:
#   1. a fresh schema: migrations, LOAD_ACCOUNTS accounts with one invite link each;
#   2. the Nylas emulator (`reauth emulator --seed`, placeholder grants for those accounts),
#      the portal (`gunicorn --config docs/deploy/gunicorn.conf.py wsgi:app`, LOAD_WORKERS
#      workers) and the minimal app of bench/flow_bench.py served the same way;
#   3. landing: GET /r/<token>, a different prepared link per request (bench/load/lines.lua),
#      on the portal, then on the minimal app;
#   4. callback: LOAD_ATTEMPTS sign-ins are driven up to the callback first (GET link, POST
#      Continue with the CSRF token, emulated sign-in), then wrk sends
#      GET /oauth/callback?code=..&state=.. with the cookie reauth_browser=<value> of the browser
#      that started each attempt. The first request of a line does the real code exchange with
#      the emulator; a repeat of a line only shows the stored result (303 to /r/result). The
#      first run is counted apart from a second run made of repeats only. The emulator is one
#      process (werkzeug, threaded): it is the bottleneck of the exchange figures;
#   5. a table: scenario, requests/s, p50, p99, non-2xx, unexpected statuses (not 200 for a
#      landing, not 303 for a callback), socket errors; the ratio portal / minimal landing.
#
# Settings (environment):
#   LOAD_DURATION=10s LOAD_THREADS=2 LOAD_CONNECTIONS=16   wrk, per measured run
#   LOAD_WARMUP=2s                                         wrk warm-up before each landing run
#   LOAD_WORKERS=4                                         gunicorn workers of each app
#   LOAD_ACCOUNTS=10000 LOAD_ATTEMPTS=4000                 prepared links, prepared callbacks
#   LOAD_PREPARE_PARALLEL=8                                clients preparing the callbacks
#   LOAD_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test
#   LOAD_RATELIMIT_STORAGE_URI=redis://127.0.0.1:6379/15
#   LOAD_KEEP=1                                            keep the work folder (logs, files)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${LOAD_DURATION:-10s}
WARMUP=${LOAD_WARMUP:-2s}
THREADS=${LOAD_THREADS:-2}
CONNECTIONS=${LOAD_CONNECTIONS:-16}
WORKERS=${LOAD_WORKERS:-4}
ACCOUNTS=${LOAD_ACCOUNTS:-10000}
ATTEMPTS=${LOAD_ATTEMPTS:-4000}
PARALLEL=${LOAD_PREPARE_PARALLEL:-8}
BASE_DB_URL=${LOAD_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
RATELIMIT_URI=${LOAD_RATELIMIT_STORAGE_URI:-redis://127.0.0.1:6379/15}

# --- tools -------------------------------------------------------------------------------
if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
BIN=$(dirname "$(command -v "$PYTHON")")
GUNICORN=$BIN/gunicorn; [ -x "$GUNICORN" ] || GUNICORN=$(command -v gunicorn || true)
REAUTH=$BIN/reauth; [ -x "$REAUTH" ] || REAUTH=$(command -v reauth || true)
missing=0
if ! command -v wrk >/dev/null; then
    echo "wrk not found. Install it: sudo apt-get install -y wrk (Debian/Ubuntu), brew install wrk (macOS)" >&2
    missing=1
fi
if [ -z "$GUNICORN" ]; then
    echo "gunicorn not found. Install it: $BIN/pip install gunicorn (or pip install '.[server]')" >&2
    missing=1
fi
if [ -z "$REAUTH" ] || ! "$PYTHON" -c 'import portal, psycopg' 2>/dev/null; then
    echo "the portal with psycopg is not installed for $PYTHON: pip install -e '.[server]'" >&2
    missing=1
fi
[ "$missing" = 0 ] || exit 2
PREPARE=("$PYTHON" "$ROOT/bench/load_prepare.py")

# --- work folder, schema, processes, and their cleanup -----------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/reauth-load.XXXXXX")
SCHEMA=load_$(date +%s)_$$
case "$BASE_DB_URL" in *\?*) SEP="&" ;; *) SEP="?" ;; esac
DB_URL="${BASE_DB_URL}${SEP}options=-csearch_path=${SCHEMA}"
PIDS=()
SCHEMA_MADE=0

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$SCHEMA_MADE" = 1 ]; then
        "${PREPARE[@]}" schema drop "$DB_URL" || echo "could not drop schema $SCHEMA" >&2
    fi
    if [ "${LOAD_KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
        echo "work folder kept: $WORK (logs: *.log)" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Only the settings below reach the apps: nothing from the caller's REAUTH_* environment.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^REAUTH_' || true)
read -r PORTAL_PORT MINIMAL_PORT EMULATOR_PORT < <("${PREPARE[@]}" free-ports 3)
PORTAL=http://127.0.0.1:$PORTAL_PORT
MINIMAL=http://127.0.0.1:$MINIMAL_PORT
EMULATOR=http://127.0.0.1:$EMULATOR_PORT
if ! "$PYTHON" -c "import redis, sys; redis.Redis.from_url(sys.argv[1]).ping()" "$RATELIMIT_URI" \
    2>/dev/null; then
    echo "note: $RATELIMIT_URI does not answer; rate limits use memory:// (per worker)"
    RATELIMIT_URI=memory://
fi
export REAUTH_ENV=testing
export REAUTH_SECRET_KEY="$("${PREPARE[@]}" secret)"  # the minimal app's key: same links work
export REAUTH_DATABASE_URL=$DB_URL
export REAUTH_BASE_URL=$PORTAL
export REAUTH_NYLAS_API_URI=$EMULATOR
export REAUTH_NYLAS_API_KEY=load-api-key
export REAUTH_NYLAS_CLIENT_ID=load-client-id
export REAUTH_RATELIMIT_STORAGE_URI=$RATELIMIT_URI
export REAUTH_MAIL_BACKEND=file
export REAUTH_MAIL_FILE_DIR=$WORK/mail
export REAUTH_INSTANCE_PATH=$WORK/instance
export REAUTH_CONFIG_FILE=$WORK/instance/no-config.toml
export LOAD_DATABASE_URL=$DB_URL

echo "== preparing: schema $SCHEMA, $ACCOUNTS accounts with one link each"
"${PREPARE[@]}" schema create "$DB_URL"
SCHEMA_MADE=1
"${PREPARE[@]}" links --accounts "$ACCOUNTS" --links "$WORK/links.txt" --seed "$WORK/seed.json"

echo "== starting the emulator, the portal and the minimal app ($WORKERS gunicorn workers each)"
"$REAUTH" emulator --host 127.0.0.1 --port "$EMULATOR_PORT" --seed "$WORK/seed.json" \
    >"$WORK/emulator.log" 2>&1 &
PIDS+=($!)
(cd "$ROOT" && REAUTH_BIND=127.0.0.1:$PORTAL_PORT REAUTH_WEB_WORKERS=$WORKERS \
    exec "$GUNICORN" --config docs/deploy/gunicorn.conf.py wsgi:app) >"$WORK/portal.log" 2>&1 &
PIDS+=($!)
(cd "$ROOT" && REAUTH_BIND=127.0.0.1:$MINIMAL_PORT REAUTH_WEB_WORKERS=$WORKERS \
    exec "$GUNICORN" --config docs/deploy/gunicorn.conf.py --pythonpath bench \
    'load_prepare:minimal_wsgi()') >"$WORK/minimal.log" 2>&1 &
PIDS+=($!)
"${PREPARE[@]}" wait "$EMULATOR/v3/grants"
"${PREPARE[@]}" wait "$PORTAL/healthz"
"${PREPARE[@]}" wait "$MINIMAL/"

RESULTS=$WORK/results.txt
: >"$RESULTS"
# run_wrk SCENARIO URL FILE EXPECTED_STATUS DURATION [USED_OUT]
run_wrk() {
    local scenario=$1 url=$2 file=$3 expected=$4 duration=$5 used=${6:-}
    local output
    output=$(wrk --latency -t "$THREADS" -c "$CONNECTIONS" -d "$duration" --timeout 30s \
        -s "$ROOT/bench/load/lines.lua" "$url" -- "$file" "$THREADS" "$expected" $used)
    echo "$output" >>"$WORK/wrk.log"
    if [ "$scenario" != warmup ]; then
        echo "$output" | grep '^RESULT' | sed "s/^RESULT/RESULT scenario=${scenario// /_}/" \
            >>"$RESULTS"
    fi
}

echo "== landing GET /r/<token>: $DURATION, $THREADS threads, $CONNECTIONS connections"
run_wrk warmup "$PORTAL" "$WORK/links.txt" 200 "$WARMUP"
run_wrk "landing portal" "$PORTAL" "$WORK/links.txt" 200 "$DURATION"
run_wrk warmup "$MINIMAL" "$WORK/links.txt" 200 "$WARMUP"
run_wrk "landing minimal app" "$MINIMAL" "$WORK/links.txt" 200 "$DURATION"

echo "== callback: driving $ATTEMPTS sign-ins up to the callback ($PARALLEL clients)"
"${PREPARE[@]}" attempts --portal "$PORTAL" --links "$WORK/links.txt" --count "$ATTEMPTS" \
    --out "$WORK/callbacks.txt" --parallel "$PARALLEL"
echo "== callback GET /oauth/callback: $DURATION, $THREADS threads, $CONNECTIONS connections"
run_wrk "callback first use (exchange)" "$PORTAL" "$WORK/callbacks.txt" 303 "$DURATION" \
    "$WORK/used.txt"
run_wrk "callback repeat (stored result)" "$PORTAL" "$WORK/used.txt" 303 "$DURATION"
"${PREPARE[@]}" outcomes

echo
"${PREPARE[@]}" table "$RESULTS"
cat <<EOF

Notes: gunicorn with $WORKERS workers (docs/deploy/gunicorn.conf.py: gthread, 2 threads, access
log on) on PostgreSQL, wrk with $THREADS threads and $CONNECTIONS connections for $DURATION per
run, all on one machine ($(nproc 2>/dev/null || echo '?') CPUs shared by wrk, the apps,
PostgreSQL and the emulator). "callback first use" spends each code at the emulator: one
single-process werkzeug server, the bottleneck of that figure, not the portal. A line used
again (after the prepared lines ran out, and in the "repeat" run) does no exchange: the portal
finds the attempt finished and redirects to the stored result. 303 is the expected answer of
both callback runs (non-2xx counts it; "unexpected" does not).
EOF
