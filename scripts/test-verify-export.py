#!/usr/bin/env python3
"""Tests scripts/verify-export.py on an export built from the protocol test vectors.

The export is a small log of Zhejiang's (roster installed, manifest published, grant issued,
exchange served, receipt received, query served, grant revoked) whose evidence is the signed
objects of protocol/tests/vectors.json, written line by line as `deltafed provenance export`
writes them. The intact export must pass; every kind of tampering an auditor has to catch must
fail with exit status 1 and name what is wrong. (make demo runs the verifier on a real export.)

A second log has a batch of five sharing calls Shanghai made and Zhejiang served, fabricated here
with the roster vector's keys (signed batch and answer, salted calls, key commitments, one
outcome of each kind): the whole export and each call alone (--call) must verify, and an altered
call, a wrong index, a neighbour's proof, a tampered result, an answer to another batch and a
batch signed by another member's key must not.

    python3 scripts/test-verify-export.py

Exit status 0 when every case behaves; otherwise the failing cases are printed and it is 1.
"""

import copy
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import blake3
import cbor2
import nacl.signing

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from deltafed_objects import (  # noqa: E402
    result_of,
    b3,
    canonical,
    entry_hash,
    key_commitment,
    merkle_leaf,
    merkle_proof,
    merkle_root,
)

VECTORS = json.loads((HERE.parent / "protocol/tests/vectors.json").read_text(encoding="utf-8"))
VERIFIER = HERE / "verify-export.py"
DATASET = "zhejiang/business-licences"


def obj(kind):
    return {"kind": kind, "bytes": bytes.fromhex(VECTORS[kind]["encoded"])}


def exchange_of(kind):
    return cbor2.loads(bytes.fromhex(VECTORS[kind]["encoded"]))["body"]["exchange"]


# (kind, dataset, peer, exchange, note, objects)
STEPS = [
    ("roster-installed", None, None, None, "roster version 1 of federation yrd", [obj("roster")]),
    ("published", DATASET + "@2", None, None, "Business licences (1234 bytes, 10 records)", [obj("manifest")]),
    ("grant-issued", DATASET, "shanghai", None, "grant purpose: cross-border licence check", [obj("grant")]),
    ("exchange-served", DATASET + "@2", "shanghai", exchange_of("ticket"), "purpose: cross-border licence check",
     [obj("fetch-request"), obj("ticket")]),
    ("receipt-received", DATASET, "shanghai", exchange_of("receipt"), "shanghai received 9 bytes", [obj("receipt")]),
    ("query-served", DATASET + "@2", "shanghai", exchange_of("query-answer"), "key \"91330000MA27XYZ\"; 0 record(s)",
     [obj("query-request"), obj("query-answer")]),
    ("revocation-issued", DATASET, "shanghai", None, "grant revoked: purpose fulfilled", [obj("revocation")]),
]  # fmt: skip


def rfc3339(ms):
    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def line_of(entry):
    """One export line, as node/src/provenance/query.rs writes it."""
    raw = canonical(entry)
    name, _, version = (entry["dataset"] or "").partition("@")
    return {
        "seq": entry["seq"],
        "time": rfc3339(entry["time"]),
        "kind": entry["kind"],
        "dataset": name or None,
        "version": int(version) if version else None,
        "peer": entry["peer"],
        "exchange_id": entry["exchange"].hex() if entry["exchange"] else None,
        "hash": entry_hash(raw).hex(),
        "prev": entry["prev"].hex(),
        "note": entry["note"],
        "objects": [
            {"kind": o["kind"], "hash": b3(o["bytes"]).hex(), "bytes": o["bytes"].hex()} for o in entry["objects"]
        ],
        **({"calls": call_views(entry["calls"])} if entry.get("calls") else {}),
        "raw": raw.hex(),
    }


def build(entries):
    """Lines for `entries`, chained from the first: seq and prev are set here."""
    lines, prev = [], bytes(32)
    for seq, e in enumerate(entries):
        e = dict(e, seq=seq, prev=prev)
        ln = line_of(e)
        prev = bytes.fromhex(ln["hash"])
        lines.append(ln)
    return lines


def entries():
    return [
        {"v": 1, "seq": 0, "time": 1795000000000 + 1000 * i, "kind": k, "dataset": d, "peer": p, "exchange": x,
         "note": n, "objects": copy.deepcopy(o), "prev": bytes(32)}
        for i, (k, d, p, x, n, o) in enumerate(STEPS)
    ]  # fmt: skip


def resign(kind, seed, change):
    """The vector object of `kind` with its body changed and signed again by the key of `seed`."""
    env = cbor2.loads(bytes.fromhex(VECTORS[kind]["encoded"]))
    change(env["body"])
    key = nacl.signing.SigningKey(bytes.fromhex(seed))
    env["signer"] = bytes(key.verify_key)
    env["sig"] = key.sign(f"deltafed/v1/{kind}".encode() + b"\x00" + canonical(env["body"])).signature
    return {"kind": kind, "bytes": canonical(env)}


def successor(signers):
    """Version 2 of the roster vector (Anhui renamed), signed by its first `signers` members."""
    roster = cbor2.loads(bytes.fromhex(VECTORS["roster"]["encoded"]))["roster"]
    roster = dict(roster, version=2, members=[dict(m) for m in roster["members"]])
    roster["members"][-1]["name"] = "Anhui Province"
    body = canonical(roster)
    sigs = []
    for seed in VECTORS["roster"]["signer_seeds"][:signers]:
        key = nacl.signing.SigningKey(bytes.fromhex(seed))
        sigs.append({"key": bytes(key.verify_key), "sig": key.sign(b"deltafed/v1/roster\x00" + body).signature})
    return {"kind": "roster", "bytes": canonical({"roster": roster, "sigs": sigs})}


# --- sharing calls: one batch of Shanghai's, served by Zhejiang ----------------------------------

SHANGHAI, JIANGSU, ZHEJIANG = "01" * 32, "02" * 32, "03" * 32  # the roster vector's seeds
GRANT_ID = cbor2.loads(bytes.fromhex(VECTORS["grant"]["encoded"]))["body"]["id"]
AUDIT_KEY = bytes(range(32))  # Zhejiang's audit key: any 32 bytes for the test
CALL_KEYS = ["91330000MA27XYZ", "91330000MA27ABC", "nope", "91330000MA27XYZ", "91330000MA27DEF"]
# One outcome of every kind, five calls: the tree is not a power of two.
OUTCOMES = [
    {"answered": {"version": 2, "fields": ["company_id"], "records": b3(b'[{"company_id":"91330000MA27XYZ"}]'),
                  "count": 1}},
    {"answered": {"version": 2, "fields": None, "records": b3(b"[]"), "count": 0}},
    {"refused": {"reason": "grant 11111111111111111111111111111111 allows 4 record queries and all were used"}},
    "deferred",
    {"answered": {"version": 2, "fields": ["company_id"], "records": b3(b"[]"), "count": 0}},
]  # fmt: skip


def sign(kind, body, seed):
    key = nacl.signing.SigningKey(bytes.fromhex(seed))
    sig = key.sign(f"deltafed/v1/{kind}".encode() + b"\x00" + canonical(body)).signature
    return canonical({"body": body, "signer": bytes(key.verify_key), "sig": sig})


def make_calls():
    """The five calls' canonical bytes, each with its own salt and key commitment."""
    return [
        canonical({
            "v": 1, "salt": bytes([0x10 + i]) * 16, "dataset": "business-licences", "grant": GRANT_ID,
            "key": key_commitment(bytes([0x20 + i]) * 16, k),
            "app": "credit-check" if i % 2 == 0 else None,
            "on_behalf_of": f"case 2026-{17 + i}" if i != 1 else None,
        })
        for i, k in enumerate(CALL_KEYS)
    ]  # fmt: skip


def batch_of(calls, seed=SHANGHAI, requester="shanghai"):
    root = merkle_root([merkle_leaf("call", c) for c in calls])
    body = {"v": 1, "requester": requester, "provider": "zhejiang", "nonce": bytes([0x33]) * 16,
            "time": 1795000003000, "count": len(calls), "root": root}  # fmt: skip
    return sign("call-batch", body, seed)


def answer_of(batch, calls, outcomes, named=None):
    results = [result_of(merkle_leaf("call", c), c, o) for c, o in zip(calls, outcomes)]
    body = {"v": 1, "batch": named or b3(batch), "exchange": bytes([0x44]) * 16, "provider": "zhejiang",
            "requester": "shanghai", "count": len(calls), "time": 1795000003010,
            "root": merkle_root([merkle_leaf("call-result", r) for r in results])}  # fmt: skip
    return sign("call-answer", body, ZHEJIANG)


def call_views(calls):
    """The line's `calls`, as node/src/provenance/calls.rs writes them."""
    leaves = [merkle_leaf("call", c["call"]) for c in calls]
    results = [result_of(lf, c["call"], c["outcome"]) for lf, c in zip(leaves, calls)]
    rleaves = [merkle_leaf("call-result", r) for r in results]
    views = []
    for i, c in enumerate(calls):
        call = cbor2.loads(c["call"])
        v = {"index": i, "dataset": call["dataset"], "app": call["app"], "on_behalf_of": call["on_behalf_of"],
             "key_hash": c["key"].hex()}  # fmt: skip
        o = c["outcome"]
        if o == "deferred":
            v["outcome"] = "deferred"
        elif "refused" in o:
            v.update(outcome="refused", reason=o["refused"]["reason"])
        else:
            a = o["answered"]
            v.update(outcome="answered", version=a["version"], records=a["count"], records_hash=a["records"].hex())
            if a["fields"] is not None:
                v["fields"] = a["fields"]
        v.update(
            call=c["call"].hex(), leaf=leaves[i].hex(), proof=[h.hex() for h in merkle_proof(leaves, i)],
            result=results[i].hex(), result_leaf=rleaves[i].hex(),
            result_proof=[h.hex() for h in merkle_proof(rleaves, i)],
        )  # fmt: skip
        views.append(v)
    return views


def calls_entries(calls=None, outcomes=None, batch=None, answer=None):
    """Zhejiang's log: roster, manifest, grant, then one batch of Shanghai's calls it served."""
    calls = calls or make_calls()
    outcomes = outcomes or OUTCOMES
    batch = batch or batch_of(calls)
    answer = answer or answer_of(batch, calls, outcomes)
    logged = [
        {"call": c, "outcome": o, "key": blake3.blake3(k.encode(), key=AUDIT_KEY).digest()}
        for c, o, k in zip(calls, outcomes, CALL_KEYS)
    ]
    es = entries()[:3]
    es.append({"v": 1, "seq": 0, "time": 1795000003020, "kind": "calls-served", "dataset": DATASET, "peer": "shanghai",
               "exchange": bytes([0x44]) * 16, "note": "5 call(s), 3 answered",
               "objects": [{"kind": "call-batch", "bytes": batch}, {"kind": "call-answer", "bytes": answer}],
               "prev": bytes(32), "calls": logged})  # fmt: skip
    return es


def call_cases():
    """(name, lines, extra args, expected status, expected text), as main's cases."""
    cases = []
    intact = build(calls_entries())
    cases.append(("calls: a batch of five, intact", intact, [], 0, "5 call(s) of 1 batch(es) proven"))
    cases.append(("calls: one call checked alone", intact, ["--call", "3:2"], 0,
                  "outcome       refused: grant 1111"))  # fmt: skip
    cases.append(("calls: one call alone, no --roster", intact, ["--call", "3:0"], 0,
                  "its key in the roster the export records at entry 0"))  # fmt: skip
    alone = {k: intact[3][k] for k in ("seq", "kind", "objects")}
    alone["calls"] = [intact[3]["calls"][3]]
    cases.append(("calls: one call cut out of its line, neighbours dropped", [alone], ["--call", "3:3"], 0,
                  "the line has no raw entry"))  # fmt: skip

    # The line's copy of a call altered by one byte (case 2026-19 -> case 2026-1:).
    t = copy.deepcopy(intact)
    call = bytearray(bytes.fromhex(t[3]["calls"][2]["call"]))
    call[call.find(b"2026-19") + 6] ^= 0x01
    t[3]["calls"][2]["call"] = call.hex()
    cases.append(("calls: a call byte altered, checked alone", t, ["--call", "3:2"], 1,
                  "this call is not the one shanghai signed at that place"))  # fmt: skip
    cases.append(("calls: a call byte altered, whole export", t, [], 1, "line 4 (entry 3): call 2: call is"))

    # The same call altered in raw, its leaves and proofs recomputed, the chain rewritten.
    calls = make_calls()
    forged = bytearray(calls[2])
    forged[forged.find(b"2026-19") + 6] ^= 0x01
    es = calls_entries()
    es[3]["calls"][2]["call"] = bytes(forged)
    cases.append(("calls: a call rewritten in raw, chain rebuilt", build(es), [], 1,
                  "the calls raw records are not the batch shanghai signed"))  # fmt: skip
    cases.append(("calls: the rewritten call alone", build(es), ["--call", "3:2"], 1,
                  "this call is not the one shanghai signed"))  # fmt: skip

    # Calls 2 and 3 swap indices: each proof checked at the other's place.
    t = copy.deepcopy(intact)
    t[3]["calls"][2]["index"], t[3]["calls"][3]["index"] = 3, 2
    cases.append(("calls: a wrong index, checked alone", t, ["--call", "3:3"], 1, "at index 3 of 5 under"))
    cases.append(("calls: a wrong index, whole export", t, [], 1, "call 2: index is 3 but raw says 2"))

    # Call 2 with the proof of its neighbour.
    t = copy.deepcopy(intact)
    t[3]["calls"][2]["proof"] = t[3]["calls"][3]["proof"]
    cases.append(("calls: a neighbour's proof", t, ["--call", "3:2"], 1, "the proof does not verify"))

    # The refusal of call 2 shown as an answer: the result re-encoded, its leaf recomputed.
    t = copy.deepcopy(intact)
    v = t[3]["calls"][2]
    result = cbor2.loads(bytes.fromhex(v["result"]))
    result["outcome"] = {"answered": {"version": 2, "fields": None, "records": b3(b"[]"), "count": 0}}
    v["result"] = canonical(result).hex()
    v["result_leaf"] = merkle_leaf("call-result", canonical(result)).hex()
    cases.append(("calls: a tampered result, checked alone", t, ["--call", "3:2"], 1,
                  "this is not the outcome zhejiang signed"))  # fmt: skip
    cases.append(("calls: a tampered result, whole export", t, [], 1, "call 2: result is not the CallResult"))

    # The outcome rewritten in raw (chain rebuilt): the answer's root no longer covers it.
    es = calls_entries()
    es[3]["calls"][2]["outcome"] = {"answered": {"version": 2, "fields": None, "records": b3(b"[]"), "count": 0}}
    cases.append(("calls: an outcome rewritten in raw, chain rebuilt", build(es), [], 1,
                  "the outcomes raw records are not the ones zhejiang signed"))  # fmt: skip

    # An answer signed for another batch, and a batch signed by someone else's key.
    calls = make_calls()
    es = calls_entries(answer=answer_of(batch_of(calls), calls, OUTCOMES, named=bytes(32)))
    cases.append(("calls: the answer names another batch", build(es), ["--call", "3:0"], 1,
                  "the call-answer names batch 0000000000000000…"))  # fmt: skip
    es = calls_entries(batch=batch_of(calls, seed=JIANGSU))
    cases.append(("calls: a batch signed by jiangsu for shanghai", build(es), [], 1,
                  "object 0 (call-batch): signed by key"))  # fmt: skip
    cases.append(("calls: the same, one call alone", build(es), ["--call", "3:0"], 1,
                  "which is not shanghai's key in the roster given"))  # fmt: skip
    return cases


def main():
    intact = build(entries())
    head = f"{intact[-1]['seq']}:{intact[-1]['hash']}"
    cases = []  # (name, lines, extra args, expected status, expected text)

    cases.append(("intact", intact, ["--head", head], 0, "intact: 7 entries"))
    cases.append(("intact, no --roster", intact, [], 0, "the rosters the log records"))

    t = copy.deepcopy(intact)
    t[2]["note"] = t[2]["note"].replace("cross", "Cross")
    cases.append(("note changed in the JSON only", t, [], 1, "line 3 (entry 2): note is"))

    t = copy.deepcopy(intact)
    raw = bytearray(bytes.fromhex(t[2]["raw"]))
    raw[raw.find(b"cross")] ^= 0x20
    t[2]["raw"] = raw.hex()
    cases.append(("one byte of raw changed", t, [], 1, "line 3 (entry 2): hash"))

    es = entries()
    es[2]["note"] = es[2]["note"].replace("cross", "Cross")
    t = copy.deepcopy(intact)
    t[2] = line_of(dict(es[2], seq=2, prev=bytes.fromhex(intact[1]["hash"])))
    cases.append(("note changed in raw, hash recomputed", t, [], 1, "line 4 (entry 3): prev"))

    t = copy.deepcopy(intact)
    del t[3]
    cases.append(("entry dropped", t, [], 1, "entry 3 is missing"))

    t = copy.deepcopy(intact)
    t[3], t[4] = t[4], t[3]
    cases.append(("entries reordered", t, [], 1, "out of order: entry 3 comes after entry 4"))

    t = copy.deepcopy(intact)
    t.insert(4, t[3])
    cases.append(("entry repeated", t, [], 1, "entry 3 is also on line 4"))

    es = entries()
    env = cbor2.loads(es[2]["objects"][0]["bytes"])
    env["sig"] = bytes([env["sig"][0] ^ 1]) + env["sig"][1:]
    es[2]["objects"][0]["bytes"] = canonical(env)
    cases.append(("bad signature, whole chain rewritten", build(es), [], 1,
                  "line 3 (entry 2): object 0 (grant): the signature does not verify"))  # fmt: skip
    cases.append(("the same, with the head of a checkpoint", build(es), ["--head", head], 1,
                  "are not the ones that head was signed over"))  # fmt: skip

    es = entries()
    es[2]["objects"][0] = resign("grant", "09" * 32, lambda b: b.update(purpose="anything"))
    cases.append(("grant re-signed by a non-member key", build(es), [], 1, "which is not zhejiang's key"))

    es = entries()
    es[3]["objects"][1] = resign("ticket", VECTORS["ticket"]["signer_seed"], lambda b: b.update(exchange=bytes(16)))
    cases.append(("ticket of another exchange", build(es), [], 1, "object 1 (ticket): is for exchange"))

    es = entries()
    es[0]["objects"][0]["bytes"] = es[0]["objects"][0]["bytes"][:-1] + bytes([es[0]["objects"][0]["bytes"][-1] ^ 1])
    cases.append(("roster signature altered", build(es), [], 1, "object 0 (roster): not a valid roster"))

    es = entries()
    es.insert(4, dict(es[0], time=es[3]["time"], objects=[obj("roster")]))
    cases.append(("the roster logged again at a restart", build(es), [], 0, "intact: 8 entries"))

    es = entries()
    es.insert(4, dict(es[0], time=es[3]["time"], note="roster version 2", objects=[successor(3)]))
    cases.append(("a successor roster signed by 3 of 4", build(es), [], 0, "intact: 8 entries"))
    es[4]["objects"] = [successor(1)]
    cases.append(("a successor roster signed by 1 of 4", build(es), [], 1, "below its threshold of 3"))

    cases.append(("truncated, with the head of a checkpoint", intact[:-1], ["--head", head], 1, "has no entry 6"))
    # What the export alone cannot show (docs/audit.md): a cut at the end.
    cases.append(("truncated, no head given", intact[:-1], [], 0, "the head is not anchored"))

    # Entries 0 to 2 archived (deltafed provenance archive): the export starts at 3.
    after = f"2:{intact[2]['hash']}"
    cases.append(("the live log after an archive, --after given", intact[3:], ["--after", after], 0,
                  "intact: 4 entries (3 to 6)"))  # fmt: skip
    cases.append(("the same without --after", intact[3:], [], 1, "the export starts at entry 3, not at entry 0"))
    cases.append(("the same after another archive", intact[3:], ["--after", f"2:{intact[1]['hash']}"], 1,
                  "the export does not continue the archive"))  # fmt: skip
    cases.append(("an entry after the archive dropped", intact[4:], ["--after", after], 1,
                  "the export starts at entry 4, not at entry 3"))  # fmt: skip

    cases += call_cases()

    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        roster = Path(tmp) / "roster.cbor"
        roster.write_bytes(bytes.fromhex(VECTORS["roster"]["encoded"]))
        for name, lines, extra, want_rc, want_text in cases:
            path = Path(tmp) / "export.jsonl"
            path.write_text("".join(json.dumps(ln, ensure_ascii=False) + "\n" for ln in lines), encoding="utf-8")
            roster_args = [] if name.endswith("no --roster") else ["--roster", str(roster)]
            r = subprocess.run(
                [sys.executable, str(VERIFIER), str(path), *roster_args, *extra], capture_output=True, text=True
            )
            out = r.stdout + r.stderr
            if r.returncode == want_rc and want_text in out:
                print(f"ok   {name}: exit {r.returncode}")
            else:
                failed += 1
                print(f"FAIL {name}: exit {r.returncode} (want {want_rc}), output lacks {want_text!r}:")
                print("     " + out.rstrip().replace("\n", "\n     "))
    if failed:
        print(f"{failed} of {len(cases)} case(s) failed")
        return 1
    print(f"all {len(cases)} cases behave: verify-export.py passes the intact export and rejects every tampering")
    return 0


if __name__ == "__main__":
    sys.exit(main())
