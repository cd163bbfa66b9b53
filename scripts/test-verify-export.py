#!/usr/bin/env python3
"""Tests scripts/verify-export.py on an export built from the protocol test vectors.

The export is a small log of Zhejiang's (roster installed, manifest published, grant issued,
exchange served, receipt received, query served, grant revoked) whose evidence is the signed
objects of protocol/tests/vectors.json, written line by line as `deltafed provenance export`
writes them. The intact export must pass; every kind of tampering an auditor has to catch must
fail with exit status 1 and name what is wrong. (make demo runs the verifier on a real export.)

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

import cbor2
import nacl.signing

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from deltafed_objects import b3, canonical, entry_hash  # noqa: E402

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
