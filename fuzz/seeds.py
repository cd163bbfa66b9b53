#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*.

Seeds come from the committed test vectors (protocol/tests/vectors.json: the exact bytes of every
signed object and the roster) and a few small CSV and JSON Lines files. Each target's first
byte(s) select what the rest is (see the doc comment at the top of fuzz_targets/<target>.rs);
seeds set them so each kind and mode starts from a valid input. Re-running this only rewrites
the seed-* files; inputs libFuzzer added to the corpus are left as they are.

Standard library only: a minimal CBOR reader and writer (definite lengths, the types the deltafed
messages use) is below.
"""

import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "protocol", "tests", "vectors.json")
CORPUS = os.path.join(HERE, "corpus")

# ------------------------------------------------------------------------------------------------
# CBOR


def head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for info, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | info]) + struct.pack(fmt, n)
    raise ValueError(n)


class Raw(bytes):
    """Bytes that are already CBOR, written as they are."""


def enc(v):
    if isinstance(v, Raw):
        return bytes(v)
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return head(3, len(b)) + b
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(enc(x) for x in v)
    if isinstance(v, dict):  # in the order given: the network envelopes are not canonical
        return head(5, len(v)) + b"".join(enc(k) + enc(x) for k, x in v.items())
    raise TypeError(v)


def skip(b, i):
    """The offset just past the data item that starts at b[i] (definite lengths only)."""
    major, info = b[i] >> 5, b[i] & 31
    i += 1
    if info < 24:
        n = info
    elif info <= 27:
        size = 1 << (info - 24)
        n = int.from_bytes(b[i:i + size], "big")
        i += size
    else:
        raise ValueError("indefinite length or simple value not handled")
    if major in (0, 1, 7):
        return i
    if major in (2, 3):
        return i + n
    if major == 4:
        for _ in range(n):
            i = skip(b, i)
        return i
    if major == 5:
        for _ in range(2 * n):
            i = skip(b, i)
        return i
    if major == 6:
        return skip(b, i)
    raise ValueError(major)


def field(b, name):
    """The raw bytes of field `name` of the CBOR map `b`."""
    major, info = b[0] >> 5, b[0] & 31
    assert major == 5 and info < 24
    i = 1
    for _ in range(info):
        k_end = skip(b, i)
        v_end = skip(b, k_end)
        if b[i:k_end] == enc(name):
            return b[k_end:v_end]
        i = v_end
    raise KeyError(name)


# ------------------------------------------------------------------------------------------------
# Seeds

# The order of deltafed_fuzz::KINDS (fuzz/src/lib.rs).
KINDS = [
    "manifest", "withdrawal", "access-request", "decision", "grant", "revocation", "fetch-request",
    "ticket", "receipt", "query-request", "query-answer", "checkpoint", "provenance-entry",
]

CSV_SAMPLES = {
    "licences": b'company_id,name,employees,turnover,active\n91330100A1,"Acme, Ltd",12,1.5e6,true\n'
                b'91330100B2,"Quote ""Q"" Co",,2500.25,FALSE\n91330100C3,"Line\nbreak",7,-3,\n',
    "crlf": b"id,city\r\n1,Hangzhou\r\n\r\n2,\xe5\x90\x88\xe8\x82\xa5\r\n3,\"\"\r\n",
    "bom-no-final-newline": b"\xef\xbb\xbfkey,v\nk1,1\nk2,2",
    "header-only": b"a,b,c\n",
    "one-column": b"key\nx\n\n\"\"\ny\n",
    "ragged": b"a,b\n1,2\n3\n",
    "duplicate-header": b"a,a\n1,2\n",
    "numbers": b"n,f,b\n-9223372036854775808,1e308,True\n18446744073709551615,-0.0,false\nNaN,inf,yes\n",
}

JSONL_SAMPLES = {
    "licences": b'{"company_id":"91330100A1","name":"Acme, Ltd","employees":12,"active":true}\n'
                b'{"company_id":"91330100B2","employees":2.5,"tags":["a","b"],"extra":{"x":null}}\n'
                b'\n{"name":"\\u6d59\\u6c5f","company_id":"91330100C3","active":null}\n',
    "crlf-blank-lines": b'{"k":1}\r\n  \r\n{"k":"1","v":false}\r\n{}\r\n',
    # Numbers as written (1.50, 1e2), at the integer limits and beyond what an f64 holds: a
    # projection must copy each of them exactly.
    "numbers": b'{"k":1.50,"n":-0}\n{"k":1e2,"n":18446744073709551615}\n{"k":123456789012345678901234,"n":0.1}\n'
               b'{"k":-9223372036854775808,"n":1.5012345678901234}\n',
    "duplicate-key": b'{"a":1,"a":2}\n',
    "not-object": b'[1,2]\n',
    "no-final-newline": b'{"id":"a","v":[1,{"w":2}]}\n{"id":"b"}',
}


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    with open(VECTORS) as f:
        vectors = {k: bytes.fromhex(v["encoded"]) for k, v in json.load(f).items()}

    # signed_objects: [kind | 0x80 for body mode] ++ bytes
    for i, kind in enumerate(KINDS):
        whole = vectors[kind]
        write("signed_objects", kind, bytes([i]) + whole)
        body = whole if kind == "provenance-entry" else field(whole, "body")
        write("signed_objects", kind + "-body", bytes([i | 0x80]) + body)

    # roster: [0] ++ SignedRoster, [1 | signers] ++ Roster body
    roster = vectors["roster"]
    write("roster", "signed", b"\x00" + roster)
    write("roster", "body-signed-by-3", bytes([1 | 0b1110]) + field(roster, "roster"))
    write("roster", "body-signed-by-all-twice", bytes([1 | 0b111110]) + field(roster, "roster"))

    # wire_messages: [0 gossip | 1 request | 2 response] ++ CBOR
    checkpoint = vectors["checkpoint"]
    gossip = {
        "manifest": {"manifest": vectors["manifest"]},
        "withdrawal": {"withdrawal": vectors["withdrawal"]},
        "roster": {"roster": roster},
    }
    requests = {
        "sync": {"sync": {"roster_version": 1, "after": None}},
        "sync-after": {"sync": {"roster_version": 3, "after": "zhejiang/business-licences"}},
        "fetch": {"fetch": vectors["fetch-request"]},
        "chunk": {"chunk": {"exchange": b"\x44" * 16, "index": 3}},
        "query": {"query": vectors["query-request"]},
        "witness-of": {"witness-of": {"member": "zhejiang"}},
    }
    for kind in ["access-request", "decision", "grant", "revocation", "receipt", "checkpoint"]:
        requests["deliver-" + kind] = {"deliver": {kind: vectors[kind]}}
    responses = {
        "sync": {"sync": {"roster": roster, "items": [Raw(enc(g)) for g in gossip.values()], "next": "zhejiang/x"}},
        "sync-end": {"sync": {"roster": None, "items": [], "next": None}},
        "ack": "ack",
        "ticket": {"ticket": {"ticket": vectors["ticket"], "chunk_hashes": bytes(range(32))}},
        "chunk": {"chunk": b"company_id,name\nC1,Acme\n"},
        "answer": {"answer": {"answer": vectors["query-answer"], "records": b'[{"company_id":"C1","name":"Acme"}]'}},
        "witnesses": {"witnesses": [checkpoint, checkpoint]},
        "refused": {"refused": "the grant was revoked"},
    }
    frames = []
    for name, g in gossip.items():
        write("wire_messages", "gossip-" + name, b"\x00" + enc(g))
    for name, r in requests.items():
        write("wire_messages", "request-" + name, b"\x01" + enc(r))
        frames.append(("request-" + name, 0, enc(r)))
    for name, r in responses.items():
        write("wire_messages", "response-" + name, b"\x02" + enc(r))
        frames.append(("response-" + name, 1, enc(r)))

    # rpc_frames: [direction | step << 1] ++ length ++ message
    for n, (name, direction, msg) in enumerate(frames):
        step = (0, 1, 7, 64)[n % 4]
        write("rpc_frames", name, bytes([direction | step << 1]) + struct.pack(">I", len(msg)) + msg)

    # admin_lines: one JSON request per line
    rid = "22" * 16
    gid = "11" * 16
    admin = [
        {"op": "status"},
        {"op": "peers"},
        {"op": "publish", "path": "/srv/data/licences.csv", "dataset": "business-licences", "title": "Business licences",
         "description": "registered businesses", "classification": "important", "sharing": "conditional",
         "key_field": "company_id", "format": "csv"},
        {"op": "withdraw", "dataset": "business-licences", "reason": "superseded"},
        {"op": "catalog", "publisher": "zhejiang", "query": "licence"},
        {"op": "catalog_show", "dataset": "zhejiang/business-licences@2"},
        {"op": "roster_install", "roster": roster.hex()},
        {"op": "access_request", "dataset": "zhejiang/business-licences", "purpose": "credit assessment",
         "fields": ["company_id", "name"]},
        {"op": "requests"},
        {"op": "approve", "request_id": rid, "expires": "90d", "max_fetches": 10, "max_queries": 100},
        {"op": "deny", "request_id": rid, "reason": "no legal basis"},
        {"op": "grant", "dataset": "business-licences", "to": "shanghai", "purpose": "licence check", "fields": None,
         "expires": "2030-01-01T00:00:00Z", "max_fetches": None},
        {"op": "grants"},
        {"op": "revoke", "grant_id": gid, "reason": "purpose fulfilled"},
        {"op": "fetch", "dataset": "zhejiang/business-licences", "out": "/srv/in/licences.csv"},
        {"op": "query", "dataset": "zhejiang/business-licences", "key": "91330100A1"},
        {"op": "provenance", "dataset": "zhejiang/business-licences", "peer": "anhui", "since": "1h", "limit": 50},
        {"op": "provenance_verify"},
        {"op": "provenance_export", "out": "/srv/audit.jsonl"},
    ]
    for req in admin:
        line = json.dumps(req, ensure_ascii=False, separators=(",", ":")) + "\n"
        write("admin_lines", req["op"], line.encode())

    # csv_import / jsonl_import: [key field pick] ++ file
    for name, data in CSV_SAMPLES.items():
        write("csv_import", name, b"\x00" + data)
    for name, data in JSONL_SAMPLES.items():
        write("jsonl_import", name, b"\x01" + data)

    # projection: [format | reversed | repeated, field mask, read size] ++ file
    # keyindex:   [format, key field, projection mask] ++ file
    for fmt, samples in ((0, CSV_SAMPLES), (1, JSONL_SAMPLES)):
        for n, (name, data) in enumerate(samples.items()):
            write("projection", f"{'csv' if fmt == 0 else 'jsonl'}-{name}",
                  bytes([fmt | (n % 3) << 1, 0b101 << (n % 2), (0, 1, 5, 64)[n % 4]]) + data)
            write("keyindex", f"{'csv' if fmt == 0 else 'jsonl'}-{name}", bytes([fmt, n % 3, 0b011]) + data)


if __name__ == "__main__":
    sys.exit(main())
