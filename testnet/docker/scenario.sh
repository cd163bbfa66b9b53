#!/usr/bin/env bash
# The demo exchange inside the compose federation (make testnet-up first): Zhejiang publishes its
# business licences (testnet/docker/scenario, mounted read-only at /scenario); the manifest
# reaches every catalog; Zhejiang grants Shanghai, which fetches and looks one licence up; Anhui
# asks for three fields, Zhejiang approves, Anhui fetches the projection; Zhejiang revokes
# Shanghai's grant and Shanghai's next fetch is refused; both sides show and verify their
# provenance. Every command runs in the member's own container (`docker exec`, like
# `docker compose exec -T MEMBER /deltafed ...`); files come out with `docker cp` and are checked
# here. It can run again on the same federation (the dataset gets a new version). Ends with
# `scenario: OK`.
source "$(dirname "$0")/lib.sh"
require_engine

DATASET=business-licences
SRC="$TESTNET_DOCKER_DIR/scenario/zhejiang-licences.csv"
QUERY_KEY=91330108MA2CFD7X1L
TMP=$(mktemp -d "${TMPDIR:-/tmp}/deltafed-scenario.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
RUN_ID=$(date +%s)

step "1. The federation"
require_federation
printf '%s' "$LAST" | sed 's/^/   /'

step "2. Zhejiang publishes its business licences"
note "/scenario/zhejiang-licences.csv: $(( $(wc -l <"$SRC") - 1 )) licences, $(wc -c <"$SRC") bytes"
run_json PUBLISHED zhejiang publish /scenario/zhejiang-licences.csv --dataset "$DATASET" \
  --title "Zhejiang business licences" --classification important --key-field company_id
t_pub=$(now_ms)
VERSION=$(json 'd["version"]' "$PUBLISHED")
HASH=$(json 'd["content_hash"]' "$PUBLISHED")

step "3. The signed manifest reaches every catalog"
POLL=0.1 wait_for 30 "zhejiang/$DATASET@$VERSION in every catalog" \
  all_have shanghai,jiangsu,zhejiang,anhui zhejiang "$DATASET" "$VERSION"
note "zhejiang/$DATASET@$VERSION (hash $HASH) is in all four catalogs $(secs_since "$t_pub") after publish returned"
run anhui catalog
run anhui catalog show "zhejiang/$DATASET"

step "4. Zhejiang grants Shanghai access; Shanghai fetches"
run_json GRANT zhejiang grant "$DATASET" --to shanghai --purpose "cross-border licence verification" --expires 30d
GRANT_ID=$(json 'd["grant_id"]' "$GRANT")
wait_for 30 "Shanghai to hold grant $GRANT_ID" grant_state shanghai "$GRANT_ID" false
run shanghai grants
OUT=/tmp/shanghai-licences-$RUN_ID.csv
run shanghai fetch "zhejiang/$DATASET" --out "$OUT"
get_file shanghai "$OUT" "$TMP/shanghai.csv"
echo "\$ docker cp <shanghai>:$OUT - ; cmp with testnet/docker/scenario/zhejiang-licences.csv"
cmp "$SRC" "$TMP/shanghai.csv" || die "Shanghai's copy differs from Zhejiang's original"
note "byte-identical: $(wc -c <"$TMP/shanghai.csv") bytes"

step "5. Shanghai looks one licence up (a record query)"
echo "[shanghai] \$ deltafed query zhejiang/$DATASET $QUERY_KEY"
QUERY_OUT=$(dx shanghai query "zhejiang/$DATASET" "$QUERY_KEY" 2>&1) || die "the query failed" "$QUERY_OUT"
printf '%s\n' "$QUERY_OUT"
grep -qF '杭州数澜科技有限公司, 滨江分公司' <<<"$QUERY_OUT" || die "the query did not return licence $QUERY_KEY"

step "6. Anhui asks for three fields; Zhejiang approves; Anhui fetches the projection"
run_json REQUEST anhui request "zhejiang/$DATASET" --purpose "enterprise credit assessment" --fields company_id,name,status
REQUEST_ID=$(json 'd["request_id"]' "$REQUEST")
wait_for 30 "request $REQUEST_ID to reach Zhejiang" request_state zhejiang "$REQUEST_ID" pending
run zhejiang requests
run zhejiang approve "$REQUEST_ID" --max-fetches 3
wait_for 30 "Anhui to see request $REQUEST_ID approved" request_state anhui "$REQUEST_ID" approved
OUT=/tmp/anhui-licences-$RUN_ID.csv
run anhui fetch "zhejiang/$DATASET" --out "$OUT"
get_file anhui "$OUT" "$TMP/anhui.csv"
echo "\$ docker cp <anhui>:$OUT - ; cat"
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

step "7. Zhejiang revokes Shanghai's grant; Shanghai's next fetch is refused"
run zhejiang revoke "$GRANT_ID" --reason "verification project concluded"
wait_for 30 "Shanghai to see grant $GRANT_ID revoked" grant_state shanghai "$GRANT_ID" true
run shanghai grants
OUT=/tmp/shanghai-licences-again-$RUN_ID.csv
echo "[shanghai] \$ deltafed fetch zhejiang/$DATASET --out $OUT"
rc=0
REFUSAL=$(dx shanghai fetch "zhejiang/$DATASET" --out "$OUT" 2>&1) || rc=$?
printf '%s\n' "$REFUSAL"
[ "$rc" != 0 ] || die "Shanghai fetched zhejiang/$DATASET after its grant was revoked"
[ "$rc" != 2 ] || die "the fetch was rejected as bad usage (exit status 2), not refused for want of a grant"
grep -qiE 'grant|revok|refus' <<<"$REFUSAL" || die "the fetch failed (exit status $rc), but not with a refusal about the grant"
if docker cp "$(cid shanghai):$OUT" - >/dev/null 2>&1; then
  die "a refused fetch left $OUT behind in Shanghai's container"
fi
note "refused as expected (exit status $rc); no file written"

step "8. Provenance on both sides"
run zhejiang provenance --dataset "zhejiang/$DATASET" --limit 12
run shanghai provenance --dataset "zhejiang/$DATASET" --limit 12
run_json ZPROV zhejiang provenance --dataset "zhejiang/$DATASET" --limit 1000 >/dev/null
run_json SPROV shanghai provenance --dataset "zhejiang/$DATASET" --limit 1000 >/dev/null
# The exchange Shanghai received is logged on both sides under one exchange id.
XID=$("$PYTHON" -c '
import json, sys
z = json.loads(sys.argv[1]); s = json.loads(sys.argv[2])
zs = {e.get("exchange_id") for e in z if e.get("peer") == "shanghai" and e.get("exchange_id")}
ss = {e.get("exchange_id") for e in s if e.get("peer") == "zhejiang" and e.get("exchange_id")}
both = sorted(zs & ss)
print(both[-1] if both else "")' "$ZPROV" "$SPROV")
[ -n "$XID" ] || die "no exchange id appears in both Zhejiang's and Shanghai's provenance"
note "exchange $XID is in both logs"
run zhejiang provenance verify
run shanghai provenance verify
run anhui provenance verify
run zhejiang provenance export --out "/tmp/zhejiang-audit-$RUN_ID.jsonl"
get_file zhejiang "/tmp/zhejiang-audit-$RUN_ID.jsonl" "$TMP/audit.jsonl"
note "zhejiang-audit-$RUN_ID.jsonl: $(wc -l <"$TMP/audit.jsonl") lines (docker cp'd out and read here)"

finish
