#!/usr/bin/env bash
# Faults against the running compose federation (make testnet-up first), each asserting its
# outcome and exiting non-zero with the reason (and the containers' last log lines) when it does
# not hold:
#
#   partition   Anhui is cut off the network (docker network disconnect); Zhejiang publishes and
#               grants Anhui while it is away; Anhui is reconnected and must converge: the new
#               manifest in its catalog, the grant received, and a fetch under it.
#   kill-fetch  Zhejiang serves a large file slowly (serve_rate_limit in its deltafed.toml);
#               its container is killed (SIGKILL) in the middle of Shanghai's fetch and started
#               again; the same fetch must resume from the last verified chunk and end with a
#               file identical to the original.
#   restart     Every container is stopped (SIGTERM: each must exit 0) and started again;
#               catalogs, grants and provenance must be intact (`provenance verify` on each).
#   intruder    A non-member on the same network, with a valid roster of its own that lists the
#               members' real keys and addresses: no member may ever list it as connected, no
#               connection of its may outlive the handshake, its catalog may never receive a
#               manifest, and no member may take the manifest it publishes.
#
#   testnet/docker/faults.sh                      # all four, in that order (make testnet-faults)
#   testnet/docker/faults.sh kill-fetch intruder  # some of them
#
# Settings: DELTAFED_FAULT_SIZE_MB (large file for kill-fetch, default 24),
# DELTAFED_FAULT_RATE (bytes per second Zhejiang serves during kill-fetch, default 1048576),
# DELTAFED_INTRUDER_WATCH (seconds the intruder is watched, default 20), DELTAFED_FAULT_LOGS (a
# folder where the intruder's whole log is saved).
source "$(dirname "$0")/lib.sh"
require_engine

ALL=(partition kill-fetch restart intruder)
[ $# -gt 0 ] || set -- "${ALL[@]}"
for f in "$@"; do
  [[ " ${ALL[*]} " == *" $f "* ]] || NO_LOGS=1 die "unknown fault '$f' (choose from: ${ALL[*]})"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/deltafed-faults.XXXXXX")
RUN_ID=$(date +%s)
declare -A TOOK=()
CLEANUPS=()
cleanup() {
  local rc=$? c
  set +e
  trap - ERR
  for c in "${CLEANUPS[@]}"; do eval "$c"; done
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

# A small CSV that is new on every run.
make_csv() {
  printf 'id,item,value\n' >"$1"
  local i
  for i in 1 2 3 4 5; do printf '%s-%d,item %d,%d\n' "$RUN_ID" "$i" "$i" $(( i * 7 )) >>"$1"; done
}

# ---- partition ---------------------------------------------------------------------------------

fault_partition() {
  local victim=anhui net t0 t1 aliases alias_args=() a ds pub ver gid g out
  step "partition: Anhui is cut off the network, misses a publish and a grant, and converges"
  net=$(network_name)
  # Compose gave the container its service name as a DNS alias; reconnecting must restore it or
  # nobody could reach /dns4/anhui again.
  aliases=$(docker inspect -f "{{range (index .NetworkSettings.Networks \"$net\").Aliases}}{{.}} {{end}}" "$(cid "$victim")")
  for a in $aliases; do alias_args+=(--alias "$a"); done
  [[ " $aliases " == *" $victim "* ]] || alias_args+=(--alias "$victim")
  echo "\$ docker network disconnect $net <$victim>"
  docker network disconnect "$net" "$(cid "$victim")"
  CLEANUPS+=("docker network connect ${alias_args[*]} $net $(cid "$victim") 2>/dev/null")
  t0=$(now_ms)
  if ! POLL=0.5 NO_DIE=1 wait_for "$WAIT" "" nobody_connected_to "$victim"; then
    # Which transport each connection still listed runs over: a QUIC connection times out on its
    # own; a TCP one lasts until something writes to it and gives up.
    die "timed out after ${WAIT}s waiting for every member to see $victim gone (and $victim to see nobody)" \
      "$LAST$(for m in "${MEMBERS[@]}"; do docker logs "$(cid "$m")" 2>&1 | grep -F "member connected member=$victim " | tail -n 1 | sed "s/^/$m: last connected: /"; done)
$(docker logs "$(cid "$victim")" 2>&1 | grep 'member connected' | tail -n 3 | sed "s/^/$victim: last connected: /")"
  fi
  note "$victim is cut off: nobody lists it, it lists nobody ($(secs_since "$t0") after the disconnect)"

  ds=partition-$RUN_ID
  make_csv "$TMP/$ds.csv"
  put_file zhejiang "$TMP/$ds.csv" /tmp
  run_json pub zhejiang publish "/tmp/$ds.csv" --dataset "$ds" --title "Published while Anhui was away"
  ver=$(json 'd["version"]' "$pub")
  wait_for 30 "zhejiang/$ds in the catalogs of the members still connected" all_have shanghai,jiangsu,zhejiang zhejiang "$ds" "$ver"
  run_json g zhejiang grant "$ds" --to "$victim" --purpose "partition test" --expires 1d
  gid=$(json 'd["grant_id"]' "$g")
  json 'd["delivered"] == False' "$g" >/dev/null \
    || die "zhejiang says grant $gid was delivered to $victim, which is cut off the network" "$g"
  ! catalog_has "$victim" zhejiang "$ds" "$ver" || die "$victim has zhejiang/$ds although it is cut off"
  ! grant_state "$victim" "$gid" false || die "$victim holds grant $gid although it is cut off"
  note "as expected, $victim has neither the manifest nor the grant yet"

  echo "\$ docker network connect ${alias_args[*]} $net <$victim>"
  docker network connect "${alias_args[@]}" "$net" "$(cid "$victim")"
  unset 'CLEANUPS[${#CLEANUPS[@]}-1]'
  t1=$(now_ms)
  wait_for "$WAIT" "$victim to reconnect to the other three" all_connected
  note "$victim is connected to all again after $(secs_since "$t1")"
  wait_for "$WAIT" "$victim to receive zhejiang/$ds@$ver" catalog_has "$victim" zhejiang "$ds" "$ver"
  wait_for "$WAIT" "$victim to receive grant $gid" grant_state "$victim" "$gid" false
  note "$victim converged $(secs_since "$t1") after reconnecting: manifest and grant received"
  out=/tmp/$ds-fetched.csv
  run "$victim" fetch "zhejiang/$ds" --out "$out"
  get_file "$victim" "$out" "$TMP/$ds-fetched.csv"
  cmp "$TMP/$ds.csv" "$TMP/$ds-fetched.csv" || die "$victim's copy of zhejiang/$ds differs from the original"
  note "$victim fetched it under the grant: byte-identical"
}

# ---- kill-fetch --------------------------------------------------------------------------------

# set_rate_limit SERVICE MEMBER BYTES_PER_S|restore: edits the member's deltafed.toml in place
# (a tar stream through docker cp keeps its owner and mode; the image has no shell).
set_rate_limit() {
  local svc=$1 member=$2 rate=$3
  docker cp "$(cid "$svc"):/data/$member/deltafed.toml" - >"$TMP/config-$member.tar"
  "$PYTHON" - "$TMP/config-$member.tar" "$rate" "$TMP/config-$member.orig.tar" <<'EOF' | docker cp - "$(cid "$svc"):/data/$member"
import io, os, re, shutil, sys, tarfile
path, rate, orig = sys.argv[1], sys.argv[2], sys.argv[3]
if rate == "restore":
    sys.stdout.buffer.write(open(orig, "rb").read())
    sys.exit()
if not os.path.exists(orig):
    shutil.copy(path, orig)
with tarfile.open(path) as t:
    info = t.next()
    text = t.extractfile(info).read().decode()
line = f"serve_rate_limit = {int(rate)}"
text, n = re.subn(r"(?m)^serve_rate_limit\s*=.*$", line, text)
if n == 0:
    text = text.rstrip("\n") + "\n" + line + "\n"
data = text.encode()
info.size = len(data)
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    t.addfile(info, io.BytesIO(data))
sys.stdout.buffer.write(buf.getvalue())
EOF
}

# Restarts a member's container (SIGTERM, then start) and waits for the federation.
restart_member() {
  echo "\$ docker restart <$1>"
  docker restart -t 30 "$(cid "$1")" >/dev/null
  wait_for "$WAIT" "$1 to be back and connected to all" all_connected
}

# partial_progress SERVICE OUT: how many bytes the requester has in its partial file (only
# verified chunks are ever appended to it), read from the tar header `docker cp` streams first:
# the file itself is not copied.
VERIFIED=0
partial_progress() {
  local svc=$1 out=$2 size
  # (docker cp fails with a broken pipe once Python has the header: only Python's status counts)
  size=$({ docker cp "$(cid "$svc"):$(dirname "$out")/.$(basename "$out").deltafed-partial" - 2>/dev/null || true; } | "$PYTHON" -c '
import sys, tarfile
try:
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
        print(t.next().size)
except Exception:
    sys.exit(1)' 2>/dev/null) || { LAST="no partial file yet"; return 1; }
  VERIFIED=$size
  LAST="$VERIFIED of $SIZE bytes verified"
}
progress_at_least() {
  if ! kill -0 "$FETCH_PID" 2>/dev/null; then
    die "the fetch ended before the provider could be killed (make the file larger or DELTAFED_FAULT_RATE smaller)" \
      "$(cat "$TMP/fetch.out" "$TMP/fetch.err" 2>/dev/null)"
  fi
  partial_progress shanghai "$OUT" && (( VERIFIED >= $1 ))
}
fetch_done() { ! kill -0 "$FETCH_PID" 2>/dev/null; }
zhejiang_gone_for_shanghai() {
  local have
  have=$(connected_of shanghai) || return 1
  LAST="shanghai connected: $have"
  json '"zhejiang" not in d' "$have" >/dev/null
}

fault_kill_fetch() {
  local mb=${DELTAFED_FAULT_SIZE_MB:-24} rate=${DELTAFED_FAULT_RATE:-1048576} ds pub ver hash g gid \
    t0 tk at_kill rc res resumed bytes secs
  step "kill-fetch: Zhejiang is killed in the middle of Shanghai's fetch; the fetch resumes"
  SIZE=$(( mb * 1024 * 1024 ))
  secs=$(( SIZE / rate ))
  note "a ${mb} MiB file served at $rate bytes/s: about ${secs}s of transfer"
  (( secs >= 8 )) || die "the transfer would take ${secs}s, too short to kill the provider in the middle (raise DELTAFED_FAULT_SIZE_MB or lower DELTAFED_FAULT_RATE)"

  echo "\$ (zhejiang's deltafed.toml) serve_rate_limit = $rate"
  set_rate_limit zhejiang zhejiang "$rate"
  CLEANUPS+=("set_rate_limit zhejiang zhejiang restore && docker restart -t 30 $(cid zhejiang) >/dev/null")
  restart_member zhejiang

  ds=bulk-$RUN_ID
  head -c "$SIZE" /dev/urandom >"$TMP/$ds.bin"
  put_file zhejiang "$TMP/$ds.bin" /tmp
  run_json pub zhejiang publish "/tmp/$ds.bin" --dataset "$ds" --title "A large file for the kill test"
  ver=$(json 'd["version"]' "$pub")
  hash=$(json 'd["content_hash"]' "$pub")
  wait_for 30 "zhejiang/$ds in Shanghai's catalog" catalog_has shanghai zhejiang "$ds" "$ver"
  run_json g zhejiang grant "$ds" --to shanghai --purpose "kill test" --expires 1d
  gid=$(json 'd["grant_id"]' "$g")
  wait_for 30 "Shanghai to hold grant $gid" grant_state shanghai "$gid" false

  OUT=/tmp/$ds.bin
  echo "[shanghai] \$ deltafed fetch zhejiang/$ds --out $OUT --json &"
  t0=$(now_ms)
  dx shanghai fetch "zhejiang/$ds" --out "$OUT" --json >"$TMP/fetch.out" 2>"$TMP/fetch.err" &
  FETCH_PID=$!
  CLEANUPS+=("kill $FETCH_PID 2>/dev/null")
  POLL=0.2 wait_for $(( secs + 30 )) "Shanghai to have verified a quarter of the file" progress_at_least $(( SIZE / 4 ))
  tk=$(now_ms)
  echo "\$ docker kill <zhejiang>      # $LAST"
  docker kill "$(cid zhejiang)" >/dev/null
  at_kill=$VERIFIED
  (( at_kill < SIZE )) || die "the fetch had already verified the whole file when the provider was killed"
  wait_for 30 "zhejiang's container to be dead" eval '[ "$(container_state "$(cid zhejiang)")" = exited ]'
  wait_for 60 "Shanghai to see zhejiang disconnected" zhejiang_gone_for_shanghai
  kill -0 "$FETCH_PID" 2>/dev/null \
    || die "the fetch gave up when the provider died instead of waiting for it" "$(cat "$TMP/fetch.out" "$TMP/fetch.err")"
  partial_progress shanghai "$OUT" || true
  note "zhejiang is down; the fetch waits, $VERIFIED of $SIZE bytes verified"
  echo "\$ docker start <zhejiang>"
  docker start "$(cid zhejiang)" >/dev/null
  wait_for "$WAIT" "zhejiang to be back and connected to all" all_connected
  note "zhejiang is back $(secs_since "$tk") after the kill"
  wait_for $(( secs * 2 + 120 )) "the fetch to finish" fetch_done
  rc=0
  wait "$FETCH_PID" || rc=$?
  unset 'CLEANUPS[${#CLEANUPS[@]}-1]'
  res=$(cat "$TMP/fetch.out")
  printf '%s\n' "$res"
  [ "$rc" = 0 ] || die "the fetch failed (exit status $rc) after the provider came back" "$(cat "$TMP/fetch.out" "$TMP/fetch.err")"
  resumed=$(json 'd["resumed_from"]' "$res")
  bytes=$(json 'd["bytes"]' "$res")
  (( resumed > 0 )) || die "the fetch started over instead of resuming (resumed_from = 0)" "$res"
  (( resumed >= at_kill )) || die "the fetch resumed from $resumed bytes, before the $at_kill bytes verified when the provider was killed" "$res"
  [ "$bytes" = "$SIZE" ] || die "the fetch reports $bytes bytes, not $SIZE" "$res"
  [ "$(json 'd["content_hash"]' "$res")" = "$hash" ] || die "the fetch's hash differs from the published one ($hash)" "$res"
  get_file shanghai "$OUT" "$TMP/$ds-fetched.bin"
  local want got
  want=$(sha256sum <"$TMP/$ds.bin" | cut -d' ' -f1)
  got=$(sha256sum <"$TMP/$ds-fetched.bin" | cut -d' ' -f1)
  [ "$want" = "$got" ] || die "Shanghai's file differs from the original (sha256 $got, want $want)"
  note "resumed from $resumed bytes (killed at $at_kill); $bytes bytes, sha256 $got identical to the original"
  note "the whole fetch took $(secs_since "$t0")"
  rm -f "$TMP/$ds.bin" "$TMP/$ds-fetched.bin"
  run shanghai provenance --dataset "zhejiang/$ds"
  run zhejiang provenance --dataset "zhejiang/$ds"
  run shanghai provenance verify
  run zhejiang provenance verify

  echo "\$ (zhejiang's deltafed.toml) serve_rate_limit restored"
  set_rate_limit zhejiang zhejiang restore
  unset 'CLEANUPS[${#CLEANUPS[@]}-1]'
  restart_member zhejiang
}

# ---- restart -----------------------------------------------------------------------------------

# snapshot MEMBER FILE: what must survive a restart (catalog, grants, provenance entries).
snapshot() {
  local cat gs prov
  cat=$(dx "$1" catalog --json) || die "$1: catalog failed"
  gs=$(dx "$1" grants --json) || die "$1: grants failed"
  prov=$(dx "$1" provenance --json --limit 1000000) || die "$1: provenance failed"
  "$PYTHON" - "$cat" "$gs" "$prov" >"$2" <<'EOF'
import json, sys
cat, gs, prov = (json.loads(a) for a in sys.argv[1:4])
json.dump({
    "catalog": sorted((c["publisher"], c["dataset"], c["version"], c["content_hash"]) for c in cat),
    "grants": sorted((g["grant_id"], g["provider"], g["grantee"], g["dataset"], g["revoked"]) for g in gs),
    "provenance": sorted((e["seq"], e["hash"]) for e in prov),
}, sys.stdout)
EOF
}

fault_restart() {
  local m t0 t1 code ids
  step "restart: every container stops (SIGTERM) and starts again; state is intact"
  for m in "${MEMBERS[@]}"; do snapshot "$m" "$TMP/before-$m.json"; done
  note "snapshots taken: $(for m in "${MEMBERS[@]}"; do
    "$PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1])); print("%s %d datasets, %d grants, %d log entries;" % (sys.argv[2], len(d["catalog"]), len(d["grants"]), len(d["provenance"])), end=" ")' "$TMP/before-$m.json" "$m"
  done)"
  t0=$(now_ms)
  echo "\$ docker stop -t 30 <${MEMBERS[*]}>"
  ids=()
  for m in "${MEMBERS[@]}"; do ids+=("$(cid "$m")"); done
  docker stop -t 30 "${ids[@]}" >/dev/null
  for m in "${MEMBERS[@]}"; do
    code=$(docker inspect -f '{{.State.ExitCode}}' "$(cid "$m")")
    [ "$code" = 0 ] || die "$m did not shut down cleanly on SIGTERM (exit status $code)"
  done
  note "all four exited 0 on SIGTERM, $(secs_since "$t0") for the four"
  t1=$(now_ms)
  echo "\$ docker start <${MEMBERS[*]}>"
  docker start "${ids[@]}" >/dev/null
  wait_for "$WAIT" "all four to be connected again" all_connected
  note "all connected again $(secs_since "$t1") after start"
  for m in "${MEMBERS[@]}"; do
    snapshot "$m" "$TMP/after-$m.json"
    "$PYTHON" - "$TMP/before-$m.json" "$TMP/after-$m.json" "$m" <<'EOF' || die "$m lost state across the restart (see above)"
import json, sys
b, a, m = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
bad = False
for k in ("catalog", "grants"):
    if a[k] != b[k]:
        bad = True
        print(f"{m}: {k} changed across the restart\n  before: {b[k]}\n  after:  {a[k]}")
after = {tuple(e) for e in a["provenance"]}
lost = [e for e in b["provenance"] if tuple(e) not in after]
if lost:
    bad = True
    print(f"{m}: {len(lost)} provenance entries lost or changed across the restart: {lost[:5]}")
sys.exit(1 if bad else 0)
EOF
    run "$m" provenance verify
  done
  note "catalogs, grants and provenance identical; every chain verifies"
}

# ---- intruder ----------------------------------------------------------------------------------

intruder_run() { compose --profile intruder run --rm --no-deps -T intruder "$@"; }

intruder_refused() {
  local m have st cat
  for m in "${MEMBERS[@]}"; do
    have=$(connected_of "$m") || die "$m: status failed" "$LAST"
    json '"intruder" not in d' "$have" >/dev/null || die "$m lists the intruder as connected: $have"
  done
  st=$(dx intruder status --json 2>&1) || die "the intruder's status failed" "$st"
  # The intruder's own TLS handshakes complete before the member closes the connection, so its
  # status can list a member for the millisecond that takes (it then redials, again and again).
  # An accepted connection would last: listed in two polls in a row is a failure.
  have=$(json 'sorted(d["connected"])' "$st")
  POLLS=$(( POLLS + 1 ))
  if [ "$have" != "[]" ]; then
    BLIPS=$(( BLIPS + 1 ))
    [ "$PREV_HAVE" = "[]" ] || die "the intruder stays connected to members: $PREV_HAVE, then $have in the next poll" "$st"
  fi
  PREV_HAVE=$have
  cat=$(dx intruder catalog --json 2>&1) || die "the intruder's catalog failed" "$cat"
  json 'all(c["publisher"] == "intruder" for c in d)' "$cat" >/dev/null \
    || die "the intruder's catalog holds the federation's manifests" "$cat"
  all_connected || die "the members lost each other while the intruder was around" "$LAST"
  (( $(now_ms) >= WATCH_UNTIL ))
}

fault_intruder() {
  local fed roster specs=() spec init pk shown t0 ds pub ver m dials
  step "intruder: a non-member on the federation's network is refused by everyone"
  EXTRA_LOG_SERVICES=intruder
  # The intruder knows everything public: the federation id, every member's key and address.
  roster=$(dx zhejiang roster show /data/zhejiang/roster.cbor --json) || die "cannot read zhejiang's roster"
  fed=$(json 'd["federation"]' "$roster")
  compose --profile intruder rm -fsv intruder >/dev/null 2>&1 || true
  docker volume rm "${PROJECT}_intruder" >/dev/null 2>&1 || true
  CLEANUPS+=("compose --profile intruder rm -fsv intruder >/dev/null 2>&1; docker volume rm ${PROJECT}_intruder >/dev/null 2>&1")
  echo "[intruder] \$ deltafed init --member intruder --json"
  init=$(intruder_run init --member intruder --json) || die "the intruder's init failed" "$init"
  pk=$(json 'd["public_key"]' "$init")
  specs=(--member "intruder=$pk@/dns4/intruder/tcp/4001,/dns4/intruder/udp/4001/quic-v1")
  while read -r spec; do specs+=(--member "$spec"); done < <(json \
    '"\n".join(m["id"] + "=" + m["public_key"] + ("@" + ",".join(m["addrs"]) if m["addrs"] else "") for m in d["members"])' "$roster")
  echo "[intruder] \$ deltafed roster new --federation $fed --threshold 1 ${specs[*]} --out /data/intruder-roster.cbor"
  intruder_run roster new --federation "$fed" --threshold 1 "${specs[@]}" --out /data/intruder-roster.cbor >/dev/null \
    || die "the intruder's roster new failed"
  echo "[intruder] \$ deltafed roster sign /data/intruder-roster.cbor"
  intruder_run roster sign /data/intruder-roster.cbor >/dev/null || die "the intruder's roster sign failed"
  shown=$(intruder_run roster show /data/intruder-roster.cbor --json) || die "the intruder's roster show failed" "$shown"
  json 'd["valid"]' "$shown" >/dev/null || die "the intruder's own roster is not valid" "$shown"
  note "the intruder's roster is valid on its own: federation $fed, threshold 1, members $(json '",".join(m["id"] for m in d["members"])' "$shown"), signed by itself"
  echo "[intruder] \$ deltafed roster install /data/intruder-roster.cbor"
  intruder_run roster install /data/intruder-roster.cbor >/dev/null || die "the intruder's roster install failed"
  echo "\$ testnet/docker/compose.sh --profile intruder up -d --no-deps intruder"
  compose --profile intruder up -d --no-deps intruder || die "the intruder did not start"
  load_cids intruder
  wait_for 30 "the intruder's node to answer" eval 'dx intruder status >/dev/null 2>&1'
  ds=intruder-$RUN_ID
  make_csv "$TMP/$ds.csv"
  put_file intruder "$TMP/$ds.csv" /tmp
  run_json pub intruder publish "/tmp/$ds.csv" --dataset "$ds" --title "Planted by a non-member"
  ver=$(json 'd["version"]' "$pub")

  # Refusal is an absence, so it is watched for a while; then the intruder's own log must show it
  # got through the TLS handshake with every member (and was closed), or nothing was tested.
  t0=$(now_ms)
  BLIPS=0 POLLS=0 PREV_HAVE="[]"
  WATCH_UNTIL=$(( t0 + ${DELTAFED_INTRUDER_WATCH:-20} * 1000 ))
  note "watching for ${DELTAFED_INTRUDER_WATCH:-20}s: members' and the intruder's status, the intruder's catalog"
  POLL=0.5 wait_for $(( ${DELTAFED_INTRUDER_WATCH:-20} + 60 )) "the watch to end" intruder_refused
  docker logs "$(cid intruder)" >"$TMP/intruder.log" 2>&1
  for m in "${MEMBERS[@]}"; do
    grep -qF "member connected member=$m " "$TMP/intruder.log" \
      || die "the intruder never got as far as a TLS handshake with $m: its refusal was not tested" "$(tail -n 20 "$TMP/intruder.log")"
  done
  dials=$(grep -c 'member disconnected' "$TMP/intruder.log" || true)
  note "refused throughout: the intruder reached all four; $dials of its connections were closed by them right after the handshake"
  note "(the intruder's status listed a member in $BLIPS of $POLLS polls over $(secs_since "$t0"), never in two in a row)"
  for m in "${MEMBERS[@]}"; do
    ! catalog_has "$m" intruder "$ds" "$ver" || die "$m's catalog took the intruder's manifest intruder/$ds"
  done
  note "no member took the intruder's manifest intruder/$ds"
  echo "   the intruder's log (last lines):"
  docker logs --tail 8 "$(cid intruder)" 2>&1 | sed 's/^/     /'
  if [ -n "${DELTAFED_FAULT_LOGS:-}" ]; then
    mkdir -p "$DELTAFED_FAULT_LOGS" && docker logs "$(cid intruder)" >"$DELTAFED_FAULT_LOGS/intruder.log" 2>&1
    note "the intruder's whole log: $DELTAFED_FAULT_LOGS/intruder.log"
  fi
  compose --profile intruder rm -fsv intruder >/dev/null 2>&1
  docker volume rm "${PROJECT}_intruder" >/dev/null 2>&1 || true
  unset 'CLEANUPS[${#CLEANUPS[@]}-1]'
  EXTRA_LOG_SERVICES=
}

# ------------------------------------------------------------------------------------------------

step "The federation"
require_federation
printf '%s' "$LAST" | sed 's/^/   /'
for f in "$@"; do
  t=$(now_ms)
  "fault_${f//-/_}"
  TOOK[$f]=$(secs_since "$t")
  note "$f: OK in ${TOOK[$f]}"
done
echo
for f in "$@"; do echo "   $f: OK (${TOOK[$f]})"; done
finish
