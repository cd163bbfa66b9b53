# The local federation (sourced, not run; testnet/lib.sh is sourced first): four `deltafed run`
# processes on this machine, on 127.0.0.1, with data dirs made by `deltafed testnet init` in a
# temp dir that is removed on exit (DEMO_KEEP=1 keeps it). Everything runs from that temp dir;
# the paths shown are relative to it.
#
#   local_build     scripts/prereqs.sh and `cargo build -p deltafed` (debug, CARGO_TARGET_DIR)
#   local_up        the data dirs, the four nodes, until each lists the other three as connected
#   local_down      SIGTERM to every node; fails unless each exits 0 within 15 s
#   local_cleanup   for the EXIT trap: stops what still runs, removes the temp dir
#
# Settings (environment): CARGO_TARGET_DIR (default /var/tmp/deltafed-target), DEMO_TIMEOUT
# (seconds for each wait, default 30), DEMO_KEEP=1.

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/deltafed-target}"
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR="$REPO_ROOT/$CARGO_TARGET_DIR" ;; esac
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
BIN="$CARGO_TARGET_DIR/debug/deltafed"
WAIT="${DEMO_TIMEOUT:-30}"
WAIT_POLL=0.1
DIR=""
declare -A PID=()

dx() { local m=$1; shift; "$BIN" "$@" --data-dir "net/$m"; }
show_cmd() { local m=$1; shift; echo "\$ deltafed $(fmt_args "$@") --data-dir net/$m"; }

# get_file MEMBER PATH HOST_FILE / has_file MEMBER PATH: the members' files are this machine's.
get_file() { cp "$2" "$3"; }
has_file() { [ -e "$2" ]; }

show_logs() {
  local m
  for m in "${MEMBERS[@]}"; do
    if [ -n "$DIR" ] && [ -s "$DIR/$m.log" ]; then
      echo "--- last lines of $m's log ($DIR/$m.log):"
      tail -n 12 "$DIR/$m.log" | sed 's/^/    /'
    fi
  done
}

# Between the attempts of every wait: a node that exited fails the script at once.
wait_hook() {
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

local_build() {
  cd "$REPO_ROOT" || die "cannot cd to $REPO_ROOT"
  bash scripts/prereqs.sh || die "scripts/prereqs.sh failed (see above)"
  echo "\$ cargo build -p deltafed"
  cargo build -p deltafed || die "cargo build -p deltafed failed (see above)"
  [ -x "$BIN" ] || die "the build produced no $BIN"
  note "using $BIN"
}

# Four consecutive ports free for TCP and UDP on 127.0.0.1, from a random start.
free_base_port() {
  "$PYTHON" - <<'EOF'
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
}

local_up() {
  local base m t0
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/deltafed-demo.XXXXXX")
  cd "$DIR" || die "cannot cd to $DIR"
  note "working in $DIR (the paths below are relative to it)"
  base=$(free_base_port) || die "cannot find 4 free ports"
  note "ports $base-$(( base + 3 )) are free on 127.0.0.1 (TCP and UDP)"
  echo "\$ deltafed testnet init --dir net --members $(IFS=,; echo "${MEMBERS[*]}") --base-port $base"
  "$BIN" testnet init --dir net --members "$(IFS=,; echo "${MEMBERS[*]}")" --base-port "$base" \
    || die "\`deltafed testnet init\` failed (see above)"
  for m in "${MEMBERS[@]}"; do
    echo "\$ deltafed run --data-dir net/$m > $m.log 2>&1 &"
    "$BIN" run --data-dir "net/$m" >"$m.log" 2>&1 &
    PID[$m]=$!
  done
  t0=$(now_ms)
  note "waiting until every node is connected to the other three (at most ${WAIT}s)..."
  wait_for "$WAIT" "all four nodes to connect to each other" all_connected
  note "all connected after $(( $(now_ms) - t0 )) ms:"
}

# stop_nodes [verbose]: SIGTERM to every node still running, then waits for each (SIGKILL after
# 15 s). Returns non-zero when a node did not shut down cleanly (exit status 0).
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

local_down() { stop_nodes verbose || die "a node did not shut down cleanly"; }

local_cleanup() {
  [ ${#PID[@]} = 0 ] || stop_nodes
  cd /
  if [ -n "$DIR" ] && [ -d "$DIR" ]; then
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
      echo "$SCRIPT_NAME: kept the federation's files in $DIR"
    else
      rm -rf "$DIR"
    fi
  fi
}
