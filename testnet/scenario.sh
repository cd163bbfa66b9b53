#!/usr/bin/env bash
# The demo exchange, end to end, in a federation of four provinces (Shanghai, Jiangsu, Zhejiang,
# Anhui): Zhejiang publishes its business licences (testnet/docker/scenario/zhejiang-licences.csv);
# the signed manifest reaches every catalog; Zhejiang grants Shanghai, which fetches them and looks
# one licence up, and (local runner) a Shanghai application looks it up through the HTTP gateway
# with a token of its own (docs/gateway.md); Anhui asks for three fields, Zhejiang approves, Anhui fetches the projection;
# Zhejiang revokes Shanghai's grant and Shanghai's own node refuses the next fetch with the
# revocation's reason, without asking Zhejiang; both sides show and verify their provenance; an
# auditor checks Zhejiang's provenance export on its own with scripts/verify-export.py (cbor2,
# PyNaCl, blake3; installed with pip when missing), and a copy with one byte of one note changed
# is rejected.
#
#   testnet/scenario.sh local    # make demo (scripts/demo.sh): four `deltafed run` processes on
#                                # this machine, in a temp dir removed on exit (testnet/local.sh);
#                                # builds deltafed first, shuts the nodes down at the end
#   testnet/scenario.sh docker   # make testnet-scenario (testnet/docker/scenario.sh): inside the
#                                # running compose federation, `docker exec` into each province
#                                # (testnet/docker/lib.sh); the federation stays up, and the
#                                # scenario can run again on it (the dataset gets a new version)
#
# Every wait polls a condition with a deadline. Files fetched come out of the members (docker cp
# for containers) and are checked here. Ends with `demo: OK` (local) or `scenario: OK` (docker).
RUNNER=${1:-}
case $RUNNER in
  local) SCRIPT_NAME=demo; source "$(dirname "$0")/local.sh" ;;
  docker) SCRIPT_NAME=scenario; source "$(dirname "$0")/docker/lib.sh" ;;
  *) echo "usage: $0 local|docker" >&2; exit 2 ;;
esac

DATASET=business-licences
SRC="$REPO_ROOT/testnet/docker/scenario/zhejiang-licences.csv"
QUERY_KEY=91330108MA2CFD7X1L
QUERY_NAME='杭州数澜科技有限公司, 滨江分公司'
REVOKE_REASON="verification project concluded"
RUN_ID=$(date +%s)
TMP=""

scenario_cleanup() {
  local rc=$?
  set +e
  trap - ERR
  [ "$RUNNER" != local ] || local_cleanup
  [ -z "$TMP" ] || rm -rf "$TMP"
  exit "$rc"
}
trap scenario_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
TMP=$(mktemp -d "${TMPDIR:-/tmp}/deltafed-scenario.XXXXXX")

N=0
story_step() { N=$(( N + 1 )); step "$N. $*"; }

# ---- the runner ------------------------------------------------------------------------------
#
#   runner_up           the federation running, every member connected to the other three
#   stage_input         sets INPUT: the path Zhejiang's node reads the licences from
#   out_path NAME       a path for a member's `fetch --out` / `export --out` (new on every run)
#   data_file MEMBER F  the path of file F in MEMBER's data dir, as get_file takes it
#   where MEMBER PATH   a member's file, as shown in the output
#   runner_down         the end of the run
# and, from local.sh or docker/lib.sh: dx, show_cmd, get_file, has_file.

case $RUNNER in
  local)
    STEP_WAIT=$WAIT
    CATALOG_POLL=0.02
    runner_up() {
      story_step "Build deltafed"
      local_build
      story_step "A local federation of four provinces"
      local_up
    }
    stage_input() {
      echo "\$ cp testnet/docker/scenario/zhejiang-licences.csv ."
      cp "$SRC" zhejiang-licences.csv
      INPUT=zhejiang-licences.csv
    }
    out_path() { printf '%s' "$1"; }
    data_file() { printf 'net/%s/%s' "$1" "$2"; }
    where() { printf '%s' "$2"; }
    runner_down() {
      story_step "Shut down (SIGTERM)"
      local_down
    }
    ;;
  docker)
    STEP_WAIT=30
    CATALOG_POLL=0.1
    runner_up() {
      require_engine
      story_step "The federation (compose project $PROJECT)"
      require_federation
    }
    # testnet/docker/scenario is mounted read-only at /scenario in every member's container.
    stage_input() { INPUT=/scenario/zhejiang-licences.csv; }
    out_path() { printf '/tmp/%s-%s.%s' "${1%.*}" "$RUN_ID" "${1##*.}"; }
    # `deltafed testnet init --docker` made the data dirs /data/<member> (the federation volume).
    data_file() { printf '/data/%s/%s' "$1" "$2"; }
    where() { printf '<%s>:%s' "$1" "$2"; }
    # The federation stays up for make testnet-faults; make testnet-down removes it.
    runner_down() { :; }
    ;;
esac

# ---- conditions and checks -------------------------------------------------------------------

# Every catalog lists the manifest just published (this version, this content hash); SEEN[member]
# is when each first did, in ms after publish returned. The hash is looked for with grep first,
# which is cheap, so the time it took is measured closely.
declare -A SEEN=()
FIRST_LOOK=""
all_have_manifest() {
  local m cat ok=0 last=""
  FIRST_LOOK=${FIRST_LOOK:-$(( $(now_ms) - t_pub ))}
  for m in "${MEMBERS[@]}"; do
    [ -z "${SEEN[$m]:-}" ] || continue
    if cat=$(dx "$m" catalog --json 2>&1) && grep -qF "$HASH" <<<"$cat"; then
      json "any(c['publisher'] == 'zhejiang' and c['dataset'] == '$DATASET' and c['version'] == $VERSION
                and c['content_hash'] == '$HASH' for c in d)" "$cat" >/dev/null \
        || die "$m's catalog has the content hash $HASH, but not as zhejiang/$DATASET@$VERSION" "$cat"
      SEEN[$m]=$(( $(now_ms) - t_pub ))
    else
      ok=1
      last+="$m's catalog: $cat"$'\n'
    fi
  done
  LAST=$last
  return $ok
}

# last_seq VAR MEMBER: VAR is the seq of the newest entry in MEMBER's provenance log.
last_seq() {
  local p v
  p=$(dx "$2" provenance --json --limit 1 2>&1) || die "[$2] \`deltafed provenance --json --limit 1\` failed" "$p"
  v=$(json 'd[0]["seq"] if d else 0' "$p") || die "$2's provenance is not a list of entries" "$p"
  printf -v "$1" '%s' "$v"
}

# exchanges_since VAR MEMBER SEQ PEER: VAR is the JSON list of MEMBER's provenance entries after
# SEQ that record an exchange (served, received or refused) with PEER.
exchanges_since() {
  local p v
  p=$(dx "$2" provenance --json --limit 200 2>&1) || die "[$2] \`deltafed provenance --json --limit 200\` failed" "$p"
  v=$(json "[e for e in d if e['seq'] > $3 and e['kind'].startswith('exchange-') and e.get('peer') == '$4']" "$p") \
    || die "$2's provenance is not a list of entries" "$p"
  printf -v "$1" '%s' "$v"
}

# ---- the story -------------------------------------------------------------------------------

runner_up
printf '%s' "$LAST" | sed 's/^/     /'
run zhejiang status

story_step "Zhejiang publishes its business licences"
stage_input
note "$INPUT: $(( $(wc -l <"$SRC") - 1 )) licences, $(wc -c <"$SRC") bytes:"
sed 's/^/     /' "$SRC"
run_json PUBLISHED zhejiang publish "$INPUT" --dataset "$DATASET" --title "Zhejiang business licences" \
  --classification important --key-field company_id
t_pub=$(now_ms)
VERSION=$(json 'd["version"]' "$PUBLISHED")
HASH=$(json 'd["content_hash"]' "$PUBLISHED")

story_step "The signed manifest reaches every catalog"
POLL=$CATALOG_POLL wait_for "$STEP_WAIT" "zhejiang/$DATASET@$VERSION (hash $HASH) in every catalog" all_have_manifest
slowest=0 seen=""
for m in "${MEMBERS[@]}"; do
  seen+="${seen:+, }$m ${SEEN[$m]} ms"
  (( SEEN[$m] <= slowest )) || slowest=${SEEN[$m]}
done
note "zhejiang/$DATASET@$VERSION (hash $HASH) is in all four catalogs, $slowest ms after publish returned"
note "(seen: $seen; the first look was at $FIRST_LOOK ms, then every ${CATALOG_POLL} s)"
run anhui catalog
run anhui catalog show "zhejiang/$DATASET"

story_step "Zhejiang grants Shanghai access; Shanghai fetches"
run_json GRANT zhejiang grant "$DATASET" --to shanghai --purpose "cross-border licence verification" --expires 30d
GRANT_ID=$(json 'd["grant_id"]' "$GRANT")
wait_for "$STEP_WAIT" "Shanghai to hold grant $GRANT_ID" grant_state shanghai "$GRANT_ID" false
run shanghai grants
OUT=$(out_path shanghai-licences.csv)
run_json FETCHED shanghai fetch "zhejiang/$DATASET" --out "$OUT"
SIZE=$(wc -c <"$SRC")
json "d['bytes'] == $SIZE and d['content_hash'] == '$HASH' and d['version'] == $VERSION and d.get('fields') is None" "$FETCHED" >/dev/null \
  || die "Shanghai's fetch reports something else than the whole of zhejiang/$DATASET@$VERSION ($SIZE bytes, hash $HASH)" "$FETCHED"
XID=$(json 'd["exchange_id"]' "$FETCHED")
get_file shanghai "$OUT" "$TMP/shanghai.csv"
echo "\$ cmp $(where zhejiang "$INPUT") $(where shanghai "$OUT")"
cmp "$SRC" "$TMP/shanghai.csv" || die "Shanghai's copy differs from Zhejiang's original"
note "byte-identical: $(wc -c <"$TMP/shanghai.csv") bytes, exchange $XID"

story_step "Shanghai looks one licence up (a record query)"
show_cmd shanghai query "zhejiang/$DATASET" "$QUERY_KEY"
QUERY_OUT=$(dx shanghai query "zhejiang/$DATASET" "$QUERY_KEY" 2>&1) || die "the query failed" "$QUERY_OUT"
printf '%s\n' "$QUERY_OUT"
grep -qF "$QUERY_NAME" <<<"$QUERY_OUT" || die "the query did not return licence $QUERY_KEY ($QUERY_NAME)"

story_step "Shanghai's licence-check application calls the gateway with its own token"
if [ "$RUNNER" = local ]; then
  # The application holds a bearer token for this one dataset, and nothing of the admin socket.
  run_json APP shanghai app add licence-check --datasets "zhejiang/$DATASET" --rate 100
  TOKEN=$(json 'd["token"]' "$APP")
  STATUS=$(dx shanghai status --json 2>&1) || die "[shanghai] \`deltafed status --json\` failed" "$STATUS"
  GW=$(json 'd["gateway_url"]' "$STATUS") || die "Shanghai's status names no gateway_url" "$STATUS"
  note "Shanghai's gateway: $GW (TOKEN is the token printed above)"
  gateway() {
    local out
    out=$(curl -sS --max-time "$STEP_WAIT" -w '\n%{http_code}' "$@") || die "curl $(fmt_args "$@") failed" "$out"
    CODE=${out##*$'\n'}
    BODY=${out%$'\n'*}
    printf '%s\n' "$BODY"
  }
  echo "\$ curl -s -H \"Authorization: Bearer \$TOKEN\" -H 'X-Deltafed-On-Behalf-Of: case 2026-117' $GW/v1/records/zhejiang/$DATASET/$QUERY_KEY"
  gateway -H "Authorization: Bearer $TOKEN" -H "X-Deltafed-On-Behalf-Of: case 2026-117" \
    "$GW/v1/records/zhejiang/$DATASET/$QUERY_KEY"
  [ "$CODE" = 200 ] || die "the gateway answered $CODE to the record call" "$BODY"
  json "d['dataset'] == 'zhejiang/$DATASET@$VERSION' and d['records'][0]['name'] == '$QUERY_NAME'" "$BODY" >/dev/null \
    || die "the gateway did not return licence $QUERY_KEY ($QUERY_NAME) of zhejiang/$DATASET@$VERSION" "$BODY"
  echo "\$ curl -s $GW/v1/catalog    # no token"
  gateway "$GW/v1/catalog"
  [ "$CODE" = 401 ] || die "the gateway answered $CODE, not 401, to a call without a token" "$BODY"
  note "200 with the licence for the application's token; 401 (application/problem+json) without one"
  run shanghai app list
else
  note "(local runner only: in the compose federation the gateways serve HTTPS inside the network)"
fi

story_step "Anhui asks for three fields; Zhejiang approves; Anhui fetches the projection"
run_json REQUEST anhui request "zhejiang/$DATASET" --purpose "enterprise credit assessment" --fields company_id,name,status
REQUEST_ID=$(json 'd["request_id"]' "$REQUEST")
wait_for "$STEP_WAIT" "request $REQUEST_ID to reach Zhejiang" request_state zhejiang "$REQUEST_ID" pending
run zhejiang requests
run zhejiang approve "$REQUEST_ID" --max-fetches 3
wait_for "$STEP_WAIT" "Anhui to see request $REQUEST_ID approved" request_state anhui "$REQUEST_ID" approved
run anhui requests
OUT=$(out_path anhui-licences.csv)
run anhui fetch "zhejiang/$DATASET" --out "$OUT"
get_file anhui "$OUT" "$TMP/anhui.csv"
echo "\$ cat $(where anhui "$OUT")"
cat "$TMP/anhui.csv"
"$PYTHON" - "$TMP/anhui.csv" "$SRC" <<'EOF' || die "Anhui's copy is not the 3-field projection of the original"
import csv, sys
got = list(csv.reader(open(sys.argv[1], encoding="utf-8", newline="")))
orig = list(csv.DictReader(open(sys.argv[2], encoding="utf-8", newline="")))
fields = ["company_id", "name", "status"]
want = [fields] + [[r[f] for f in fields] for r in orig]
if got != want:
    sys.exit(f"expected {want}\n got {got}")
EOF
note "only company_id, name and status: $(( $(wc -l <"$TMP/anhui.csv") - 1 )) records"

story_step "Zhejiang revokes Shanghai's grant; Shanghai's own node refuses the next fetch"
t_rev=$(now_ms)
run zhejiang revoke "$GRANT_ID" --reason "$REVOKE_REASON"
t_revoked=$(now_ms)
wait_for "$STEP_WAIT" "Shanghai to see grant $GRANT_ID revoked" grant_state shanghai "$GRANT_ID" true
run shanghai grants
# What Shanghai recorded from the revocation it received: the reason Zhejiang gave.
GRANTS=$(dx shanghai grants --json 2>&1) || die "[shanghai] \`deltafed grants --json\` failed" "$GRANTS"
json "[g for g in d if g['grant_id'] == '$GRANT_ID'][0]['revoked_reason'] == '$REVOKE_REASON'" "$GRANTS" >/dev/null \
  || die "Shanghai does not hold grant $GRANT_ID as revoked with the reason \"$REVOKE_REASON\"" "$GRANTS"
# Shanghai holds no valid grant any more, so its node refuses the fetch itself (the requester
# side's choice of grant, before any request: node/src/node/fetch.rs), giving the time and reason
# of the revocation it received, and Zhejiang is never asked: nothing new is logged on either
# side about an exchange between them.
last_seq ZSEQ zhejiang
last_seq SSEQ shanghai
OUT=$(out_path shanghai-licences-again.csv)
show_cmd shanghai fetch "zhejiang/$DATASET" --out "$OUT"
rc=0
REFUSAL=$(dx shanghai fetch "zhejiang/$DATASET" --out "$OUT" 2>&1) || rc=$?
printf '%s\n' "$REFUSAL"
[ "$rc" != 0 ] || die "Shanghai fetched zhejiang/$DATASET after its grant was revoked"
[ "$rc" = 1 ] || die "the fetch exited with status $rc, not 1 (a refusal)" "$REFUSAL"
"$PYTHON" - "$REFUSAL" "$GRANT_ID" "$DATASET" "$REVOKE_REASON" "$t_rev" "$t_revoked" <<'EOF' \
  || die "the fetch failed, but not with Shanghai's own refusal for the revoked grant $GRANT_ID (see above)"
import datetime, re, sys
out, gid, ds, reason, t0, t1 = sys.argv[1:7]
pre = f"error: no valid grant from zhejiang for {ds}: grant {gid} was revoked at "
post = f": {reason}; ask with `deltafed request zhejiang/{ds} --purpose ...`"
m = re.fullmatch(re.escape(pre) + r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)" + re.escape(post), out.rstrip("\n"))
if not m:
    sys.exit(f"expected exactly this line (with the revocation's time):\n  {pre}<time>{post}\ngot:\n  {out}")
t = datetime.datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
if not int(t0) - 1000 <= t <= int(t1) + 1000:
    sys.exit(f"the refusal gives the revocation time {m[1]}, not the time zhejiang revoked the grant")
EOF
exchanges_since NEW zhejiang "$ZSEQ" shanghai
[ "$NEW" = "[]" ] || die "Zhejiang logged an exchange with Shanghai for the refused fetch: it was asked" "$NEW"
exchanges_since NEW shanghai "$SSEQ" zhejiang
[ "$NEW" = "[]" ] || die "Shanghai logged an exchange with Zhejiang for the refused fetch: it asked" "$NEW"
PARTIAL="$(dirname "$OUT")/.$(basename "$OUT").deltafed-partial"
! has_file shanghai "$OUT" || die "a refused fetch left $(where shanghai "$OUT") behind"
! has_file shanghai "$PARTIAL" || die "a refused fetch left $(where shanghai "$PARTIAL") behind"
note "refused by Shanghai's node (exit status 1) with the reason of the revocation it received;"
note "Zhejiang was not asked (no new exchange in either log); no file written"

story_step "Provenance on both sides"
run zhejiang provenance --dataset "zhejiang/$DATASET" --limit 12
run shanghai provenance --dataset "zhejiang/$DATASET" --limit 12
run_json ZPROV zhejiang provenance --dataset "zhejiang/$DATASET" --limit 1000 >/dev/null
run_json SPROV shanghai provenance --dataset "zhejiang/$DATASET" --limit 1000 >/dev/null
# The exchange Shanghai received is logged on both sides under one exchange id.
json "any(e['kind'] == 'exchange-served' and e.get('peer') == 'shanghai' and e.get('exchange_id') == '$XID' for e in d)" "$ZPROV" >/dev/null \
  || die "Zhejiang's provenance has no exchange-served entry for Shanghai's exchange $XID"
json "any(e['kind'] == 'exchange-received' and e.get('peer') == 'zhejiang' and e.get('exchange_id') == '$XID' for e in d)" "$SPROV" >/dev/null \
  || die "Shanghai's provenance has no exchange-received entry for its exchange $XID"
note "exchange $XID is in both logs (served by Zhejiang, received by Shanghai)"
run zhejiang provenance verify
run shanghai provenance verify
run anhui provenance verify

story_step "An auditor checks Zhejiang's provenance export on its own (docs/audit.md)"
# The head Zhejiang's running node has just verified against the checkpoints its peers witnessed:
# the export, taken after it, must hold that entry with that hash (--head).
VERIFIED=$(dx zhejiang provenance verify --json 2>&1) \
  || die "[zhejiang] \`deltafed provenance verify --json\` failed" "$VERIFIED"
HEAD=$(json "'%d:%s' % (d['head_seq'], d['head_hash'])" "$VERIFIED") \
  || die "Zhejiang's \`provenance verify --json\` names no head" "$VERIFIED"
OUT=$(out_path zhejiang-audit.jsonl)
run zhejiang provenance export --out "$OUT"
ROSTER=$(data_file zhejiang roster.cbor)
get_file zhejiang "$OUT" "$TMP/audit.jsonl"
get_file zhejiang "$ROSTER" "$TMP/roster.cbor"
note "copied out: $(where zhejiang "$OUT") ($(wc -l <"$TMP/audit.jsonl") entries) as audit.jsonl,"
note "the roster $(where zhejiang "$ROSTER") as roster.cbor; the head verified: ${HEAD%%:*} ${HEAD#*:}"
PYTHON="$PYTHON" bash "$REPO_ROOT/scripts/python-deps.sh" \
  || die "cannot install the Python packages scripts/verify-export.py needs (cbor2, pynacl, blake3)"
verify_export() { (cd "$TMP" && "$PYTHON" "$REPO_ROOT/scripts/verify-export.py" "$@"); }
echo "\$ python3 scripts/verify-export.py audit.jsonl --roster roster.cbor --head $HEAD"
verify_export audit.jsonl --roster roster.cbor --head "$HEAD" \
  || die "scripts/verify-export.py finds Zhejiang's export not intact (see above)"
# A careful forger changes one byte of the note of Zhejiang's first exchange-served entry (the
# purpose it logged), in `note` and in `raw` alike, and writes the recomputed `hash`: the line
# agrees with itself, but the next entry's `prev` still names the original.
TAMPERED=$("$PYTHON" - "$TMP/audit.jsonl" "$TMP/tampered.jsonl" <<'EOF'
import json, sys
import blake3
lines = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
i = next(i for i, e in enumerate(lines[:-1]) if e["kind"] == "exchange-served")
e = lines[i]
at = e["note"].index("purpose: ") + len("purpose: ")
old = e["note"].encode("utf-8")
assert old[at:at + 1].isalpha() and bytes.fromhex(e["raw"]).count(old) == 1, "no ASCII purpose to alter"
new = old[:at] + old[at:at + 1].swapcase() + old[at + 1:]
raw = bytes.fromhex(e["raw"]).replace(old, new)
e["note"], e["raw"] = new.decode("utf-8"), raw.hex()
e["hash"] = blake3.blake3(b"deltafed/v1/provenance-entry\x00" + raw).hexdigest()
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.writelines(json.dumps(l, ensure_ascii=False) + "\n" for l in lines)
print(e["seq"], old[at:at + 12].decode(), new[at:at + 12].decode())
EOF
) || die "cannot make the tampered copy of the export"
read -r TSEQ TOLD TNEW <<<"$TAMPERED"
note "tampered.jsonl: entry $TSEQ's note says \"$TNEW...\" instead of \"$TOLD...\" (hash recomputed)"
echo "\$ python3 scripts/verify-export.py tampered.jsonl --roster roster.cbor --head $HEAD"
rc=0
REJECTED=$(verify_export tampered.jsonl --roster roster.cbor --head "$HEAD" 2>&1) || rc=$?
printf '%s\n' "$REJECTED"
[ "$rc" = 1 ] || die "scripts/verify-export.py did not reject the tampered export (exit status $rc, not 1)"
grep -qF "(entry $(( TSEQ + 1 ))): prev " <<<"$REJECTED" \
  || die "scripts/verify-export.py rejected the tampered export, but not for the broken link after entry $TSEQ"
note "rejected (exit status 1): entry $(( TSEQ + 1 ))'s prev no longer matches the altered entry $TSEQ"

runner_down
finish
