#!/usr/bin/env bash
# The demo: a local four-province federation (Shanghai, Jiangsu, Zhejiang, Anhui) doing a real
# exchange end to end. Zhejiang publishes its business licences; Shanghai fetches them under a
# direct grant and runs a record query; Anhui asks for three fields, is approved and fetches the
# projection; Zhejiang revokes Shanghai's grant and Shanghai's next fetch is refused; both sides
# show and verify their provenance. Everything runs in a temp dir on 127.0.0.1 and is removed on
# exit (DEMO_KEEP=1 keeps it). Every wait polls with a deadline; the demo ends with `demo: OK`.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/deltafed-target}"
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;; esac
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

MEMBERS=(shanghai jiangsu zhejiang anhui)
TIMEOUT="${DEMO_TIMEOUT:-30}" # seconds, for each wait
DATASET=business-licences
DIR=""
declare -A PID=()

now_ms() { date +%s%3N; }
START_MS=$(now_ms)

# ---- output ----------------------------------------------------------------------------------

step() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# Shell-quotes arguments for display only where needed (Chinese text stays readable).
fmt_args() {
  local out="" a
  for a in "$@"; do
    if [[ -n $a && ! $a =~ [^[:alnum:]_./:@,=+%-] ]]; then
      out+=" $a"
    else
      a=${a//\\/\\\\}; a=${a//\"/\\\"}; a=${a//\$/\\\$}; a=${a//\`/\\\`}
      out+=" \"$a\""
    fi
  done
  printf '%s' "${out# }"
}

show_logs() {
  local m
  for m in "${MEMBERS[@]}"; do
    if [ -n "$DIR" ] && [ -s "$DIR/$m.log" ]; then
      echo "--- last lines of $m's log ($DIR/$m.log):"
      tail -n 12 "$DIR/$m.log" | sed 's/^/    /'
    fi
  done
}

FAILED=0
die() {
  FAILED=1
  {
    echo
    echo "demo: FAILED: $1"
    [ -z "${2:-}" ] || printf '%s\n' "${2%$'\n'}" | sed 's/^/    /'
    show_logs
  } >&2
  exit 1
}

on_err() {
  local rc=$1 line=$2 cmd=$3
  # In a subshell the failure reaches the main shell as an exit status; report it only there.
  [ "$BASHPID" = "$$" ] || return 0
  [ "$FAILED" = 0 ] || return 0
  die "line $line: \`$cmd\` exited with status $rc"
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

# ---- running deltafed ------------------------------------------------------------------------

BIN="$CARGO_TARGET_DIR/debug/deltafed"

# dfed ARGS...: shows the command, runs it, fails the demo when it fails.
dfed() {
  echo "\$ deltafed $(fmt_args "$@")"
  local rc=0
  "$BIN" "$@" || rc=$?
  [ "$rc" = 0 ] || die "\`deltafed $(fmt_args "$@")\` exited with status $rc"
}

# dfed_json VAR ARGS...: like dfed with --json, and the JSON document kept in VAR (and shown).
dfed_json() {
  local __var=$1; shift
  echo "\$ deltafed $(fmt_args "$@") --json"
  local __out __rc=0
  __out=$("$BIN" "$@" --json) || __rc=$?
  [ "$__rc" = 0 ] || die "\`deltafed $(fmt_args "$@") --json\` exited with status $__rc" "$__out"
  printf '%s\n' "$__out"
  printf -v "$__var" '%s' "$__out"
}

# json_get JSON KEY: a top-level field of a JSON object.
json_get() {
  "$PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# ---- nodes and waiting -----------------------------------------------------------------------

check_nodes_alive() {
  local m rc
  for m in "${!PID[@]}"; do
    if ! kill -0 "${PID[$m]}" 2>/dev/null; then
      rc=0
      wait "${PID[$m]}" || rc=$?
      unset "PID[$m]"
      die "the $m node exited unexpectedly (status $rc)"
    fi
  done
}

# wait_for DESCRIPTION COMMAND...: polls COMMAND until it succeeds, at most $TIMEOUT seconds.
# COMMAND may set LAST to describe what it saw; that is shown when the deadline passes. POLL is
# the pause between attempts (default 0.1 s).
LAST=""
wait_for() {
  local desc=$1; shift
  local deadline=$(( $(now_ms) + TIMEOUT * 1000 ))
  LAST=""
  until "$@"; do
    check_nodes_alive
    if (( $(now_ms) >= deadline )); then
      die "timed out after ${TIMEOUT}s waiting for $desc" "${LAST:-}"
    fi
    sleep "${POLL:-0.1}"
  done
}

# Stops the nodes with SIGTERM and waits for them (SIGKILL after 15 s). Returns non-zero when a
# node did not shut down cleanly (exit status 0).
stop_nodes() {
  local verbose=${1:-} m rc bad=0 deadline
  for m in "${!PID[@]}"; do kill -TERM "${PID[$m]}" 2>/dev/null || true; done
  deadline=$(( $(now_ms) + 15000 ))
  for m in "${MEMBERS[@]}"; do
    [ -n "${PID[$m]:-}" ] || continue
    while kill -0 "${PID[$m]}" 2>/dev/null && (( $(now_ms) < deadline )); do sleep 0.1; done
    if kill -0 "${PID[$m]}" 2>/dev/null; then
      kill -KILL "${PID[$m]}" 2>/dev/null || true
      echo "   $m did not stop within 15 s of SIGTERM; killed" >&2
      bad=1
    fi
    rc=0
    wait "${PID[$m]}" 2>/dev/null || rc=$?
    if [ "$rc" != 0 ]; then
      echo "   $m exited with status $rc after SIGTERM" >&2
      bad=1
    elif [ -n "$verbose" ]; then
      note "$m stopped (exit status 0)"
    fi
    unset "PID[$m]"
  done
  return $bad
}

cleanup() {
  local rc=$?
  set +e
  trap - ERR
  [ ${#PID[@]} = 0 ] || stop_nodes
  cd /
  if [ -n "$DIR" ] && [ -d "$DIR" ]; then
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
      echo "demo: kept the federation's files in $DIR"
    else
      rm -rf "$DIR"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- conditions polled -----------------------------------------------------------------------

# Every node lists every other member in `connected`.
all_connected() {
  local m st ok=0 line
  LAST=""
  for m in "${MEMBERS[@]}"; do
    if ! st=$("$BIN" status --json --data-dir "net/$m" 2>&1); then
      LAST+="$m: ${st:-status failed}"$'\n'
      ok=1
      continue
    fi
    line=$("$PYTHON" -c '
import json, sys
d = json.loads(sys.argv[1])
want = set(sys.argv[3:]) - {sys.argv[2]}
have = set(d["connected"])
print(", ".join(sorted(have)) or "none")
sys.exit(0 if want <= have else 1)' "$st" "$m" "${MEMBERS[@]}") || ok=1
    LAST+="$m connected: $line"$'\n'
  done
  return $ok
}

# Every catalog lists the manifest just published (its content hash, cheap to look for, so the
# time it took is measured closely); SEEN[member] is when each first did, in ms after publish.
declare -A SEEN=()
FIRST_LOOK=""
all_have_manifest() {
  local m cat ok=0
  LAST=""
  FIRST_LOOK=${FIRST_LOOK:-$(( $(now_ms) - t_pub ))}
  for m in "${MEMBERS[@]}"; do
    [ -z "${SEEN[$m]:-}" ] || continue
    if cat=$("$BIN" catalog --json --data-dir "net/$m" 2>&1) && grep -qF "$HASH" <<<"$cat"; then
      SEEN[$m]=$(( $(now_ms) - t_pub ))
    else
      LAST+="$m's catalog: $cat"$'\n'
      ok=1
    fi
  done
  return $ok
}

# MEMBER's `grants --json` has GRANT_ID with revoked == WANT (true/false).
grant_state() {
  local m=$1 gid=$2 want=$3 gs
  gs=$("$BIN" grants --json --data-dir "net/$m" 2>&1) || { LAST="$m: $gs"; return 1; }
  "$PYTHON" -c '
import json, sys
gs = json.loads(sys.argv[1])
want = sys.argv[3] == "true"
sys.exit(0 if any(g["grant_id"] == sys.argv[2] and g["revoked"] == want for g in gs) else 1)' \
    "$gs" "$gid" "$want" || { LAST="$m's grants: $gs"; return 1; }
}

# MEMBER's `requests --json` has REQUEST_ID in STATE.
request_state() {
  local m=$1 rid=$2 want=$3 rs
  rs=$("$BIN" requests --json --data-dir "net/$m" 2>&1) || { LAST="$m: $rs"; return 1; }
  "$PYTHON" -c '
import json, sys
rs = json.loads(sys.argv[1])
sys.exit(0 if any(r["request_id"] == sys.argv[2] and r["state"] == sys.argv[3] for r in rs) else 1)' \
    "$rs" "$rid" "$want" || { LAST="$m's requests: $rs"; return 1; }
}

# ---- 1. build --------------------------------------------------------------------------------

step "1. Build deltafed"
command -v python3 >/dev/null 2>&1 || die "python3 is needed (it picks free ports and reads JSON); install it and run this again"
# The interpreter itself, not a version manager's shim (a shim costs ~0.1 s a call, every poll).
PYTHON=$(python3 -c 'import sys; print(sys.executable)') && [ -x "$PYTHON" ] || PYTHON=python3
bash scripts/prereqs.sh || die "scripts/prereqs.sh failed (see above)"
echo "\$ cargo build -p deltafed"
cargo build -p deltafed || die "cargo build -p deltafed failed (see above)"
[ -x "$BIN" ] || die "the build produced no $BIN"
note "using $BIN"

# ---- 2. the federation -----------------------------------------------------------------------

step "2. A local federation of four provinces"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/deltafed-demo.XXXXXX")
cd "$DIR"
note "working in $DIR (the paths below are relative to it)"

BASE_PORT=$("$PYTHON" - <<'EOF'
import random, socket, sys

def free(base):
    socks = []
    try:
        for port in range(base, base + 4):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()

start = random.randint(20000, 60000)
for i in range(10000):
    base = 20000 + (start - 20000 + 4 * i) % 40000
    if free(base):
        print(base)
        sys.exit(0)
sys.exit("no 4 consecutive free TCP+UDP ports on 127.0.0.1 between 20000 and 60003")
EOF
) || die "cannot find 4 free ports"
note "ports $BASE_PORT-$((BASE_PORT + 3)) are free on 127.0.0.1 (TCP and UDP)"

dfed testnet init --dir net --members "$(IFS=,; echo "${MEMBERS[*]}")" --base-port "$BASE_PORT"

for m in "${MEMBERS[@]}"; do
  echo "\$ deltafed run --data-dir net/$m > $m.log 2>&1 &"
  "$BIN" run --data-dir "net/$m" >"$m.log" 2>&1 &
  PID[$m]=$!
done

t0=$(now_ms)
note "waiting until every node is connected to the other three..."
wait_for "all four nodes to connect to each other" all_connected
note "all connected after $(( $(now_ms) - t0 )) ms:"
printf '%s' "$LAST" | sed 's/^/     /'
dfed status --data-dir net/zhejiang

# ---- 3. publish ------------------------------------------------------------------------------

step "3. Zhejiang publishes its business licences"
cat >zhejiang-licences.csv <<'EOF'
company_id,name,legal_rep,registered_capital,status,issued
91330108MA2CFD7X1L,"杭州数澜科技有限公司, 滨江分公司",王建国,5000000,存续,2019-03-14
91330100MA2B3KQ402,杭州云栖智能制造有限公司,李秀英,20000000,存续,2017-08-02
91330203MA2GL8UX5T,宁波港湾国际物流有限公司,陈志强,80000000,存续,2015-11-20
91330302MA2HD1PJ3C,温州鹿城眼镜贸易有限公司,郑丽华,1000000,注销,2012-06-05
91330402MA28AWTE6M,"嘉兴南湖丝绸有限公司, 秀洲门市部",沈德明,3000000,存续,2018-01-17
91330502MA2D0QJX9K,湖州安吉白茶种植专业合作社,朱红梅,500000,存续,2020-04-09
91330602MA2JX0YC8R,绍兴柯桥纺织印染有限公司,孙国华,15000000,吊销,2010-09-28
91330782MA2EC6TB1N,义乌小商品跨境电子商务有限公司,吴海燕,10000000,存续,2021-07-01
EOF
note "zhejiang-licences.csv: $(( $(wc -l <zhejiang-licences.csv) - 1 )) licences, $(wc -c <zhejiang-licences.csv) bytes:"
sed 's/^/     /' zhejiang-licences.csv
QUERY_KEY=91330108MA2CFD7X1L

dfed_json PUBLISHED publish zhejiang-licences.csv --dataset "$DATASET" --title "Zhejiang business licences" \
  --classification important --key-field company_id --data-dir net/zhejiang
t_pub=$(now_ms)
VH=$("$PYTHON" -c 'import json, sys; d = json.loads(sys.argv[1]); print(d["version"], d["content_hash"])' "$PUBLISHED")
read -r VERSION HASH <<<"$VH"

# ---- 4. the manifest reaches every catalog ---------------------------------------------------

step "4. The signed manifest reaches every catalog"
POLL=0.02 wait_for "zhejiang/$DATASET@$VERSION (hash $HASH) in every catalog" all_have_manifest
slowest=0 seen=""
for m in "${MEMBERS[@]}"; do
  seen+="${seen:+, }$m ${SEEN[$m]} ms"
  (( SEEN[$m] <= slowest )) || slowest=${SEEN[$m]}
done
note "zhejiang/$DATASET@$VERSION is in all four catalogs, $slowest ms after publish returned"
note "(seen: $seen; the first look was at $FIRST_LOOK ms, then every ~20 ms)"
dfed catalog --data-dir net/anhui
dfed catalog show "zhejiang/$DATASET" --data-dir net/anhui

# ---- 5. direct grant and fetch ---------------------------------------------------------------

step "5. Zhejiang grants Shanghai access; Shanghai fetches"
dfed_json GRANT grant "$DATASET" --to shanghai --purpose "cross-border licence verification" --expires 30d \
  --data-dir net/zhejiang
GRANT_ID=$(json_get "$GRANT" grant_id)
wait_for "Shanghai to hold grant $GRANT_ID" grant_state shanghai "$GRANT_ID" false
dfed grants --data-dir net/shanghai
dfed fetch "zhejiang/$DATASET" --out shanghai-licences.csv --data-dir net/shanghai
echo "\$ cmp zhejiang-licences.csv shanghai-licences.csv"
cmp zhejiang-licences.csv shanghai-licences.csv || die "Shanghai's copy differs from Zhejiang's original"
note "byte-identical: $(wc -c <shanghai-licences.csv) bytes"

# ---- 6. record query -------------------------------------------------------------------------

step "6. Shanghai looks up one licence (a record query)"
echo "\$ deltafed query zhejiang/$DATASET $QUERY_KEY --data-dir net/shanghai"
QUERY_OUT=$("$BIN" query "zhejiang/$DATASET" "$QUERY_KEY" --data-dir net/shanghai) \
  || die "\`deltafed query zhejiang/$DATASET $QUERY_KEY\` failed"
printf '%s\n' "$QUERY_OUT"
grep -qF '杭州数澜科技有限公司, 滨江分公司' <<<"$QUERY_OUT" || die "the query did not return licence $QUERY_KEY"

# ---- 7. request, approve, fetch a projection -------------------------------------------------

step "7. Anhui asks for three fields; Zhejiang approves; Anhui fetches the projection"
dfed_json REQUEST request "zhejiang/$DATASET" --purpose "enterprise credit assessment" \
  --fields company_id,name,status --data-dir net/anhui
REQUEST_ID=$(json_get "$REQUEST" request_id)
wait_for "request $REQUEST_ID to reach Zhejiang" request_state zhejiang "$REQUEST_ID" pending
dfed requests --data-dir net/zhejiang
dfed approve "$REQUEST_ID" --max-fetches 3 --data-dir net/zhejiang
wait_for "Anhui to see request $REQUEST_ID approved" request_state anhui "$REQUEST_ID" approved
dfed requests --data-dir net/anhui
dfed fetch "zhejiang/$DATASET" --out anhui-licences.csv --data-dir net/anhui
echo "\$ cat anhui-licences.csv"
cat anhui-licences.csv
"$PYTHON" - anhui-licences.csv zhejiang-licences.csv <<'EOF' || die "Anhui's copy is not the 3-field projection of the original"
import csv, sys
got = list(csv.reader(open(sys.argv[1], encoding="utf-8", newline="")))
orig = list(csv.DictReader(open(sys.argv[2], encoding="utf-8", newline="")))
fields = ["company_id", "name", "status"]
want = [fields] + [[r[f] for f in fields] for r in orig]
if got != want:
    sys.exit(f"expected {want}\n got {got}")
EOF
note "only company_id, name and status: $(( $(wc -l <anhui-licences.csv) - 1 )) records"

# ---- 8. revocation ---------------------------------------------------------------------------

step "8. Zhejiang revokes Shanghai's grant; Shanghai's next fetch is refused"
dfed revoke "$GRANT_ID" --reason "verification project concluded" --data-dir net/zhejiang
wait_for "Shanghai to see grant $GRANT_ID revoked" grant_state shanghai "$GRANT_ID" true
dfed grants --data-dir net/shanghai
echo "\$ deltafed fetch zhejiang/$DATASET --out shanghai-licences-again.csv --data-dir net/shanghai"
rc=0
REFUSAL=$("$BIN" fetch "zhejiang/$DATASET" --out shanghai-licences-again.csv --data-dir net/shanghai 2>&1) || rc=$?
printf '%s\n' "$REFUSAL"
[ "$rc" != 0 ] || die "Shanghai fetched zhejiang/$DATASET after its grant was revoked"
[ "$rc" != 2 ] || die "the fetch was rejected as bad usage (exit status 2), not refused for want of a grant"
grep -qiE 'grant|revok|refus' <<<"$REFUSAL" || die "the fetch failed (exit status $rc), but not with a refusal about the grant"
[ ! -e shanghai-licences-again.csv ] || die "a refused fetch left shanghai-licences-again.csv behind"
note "refused as expected (exit status $rc); no file written"

# ---- 9. provenance ---------------------------------------------------------------------------

step "9. Provenance on both sides"
dfed provenance --data-dir net/zhejiang
dfed provenance --data-dir net/shanghai
dfed provenance verify --data-dir net/zhejiang
dfed provenance verify --data-dir net/shanghai
dfed provenance export --out zhejiang-audit.jsonl --data-dir net/zhejiang
note "zhejiang-audit.jsonl: $(wc -l <zhejiang-audit.jsonl) lines"

# ---- 10. shutdown ----------------------------------------------------------------------------

step "10. Shut down (SIGTERM)"
stop_nodes verbose || die "a node did not shut down cleanly"

echo
echo "demo: OK ($(( ($(now_ms) - START_MS) / 1000 )) s)"
