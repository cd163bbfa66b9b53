#!/usr/bin/env python3
"""Checks protocol/tests/vectors.json against docs/protocol.md with independent libraries.

For every vector: decode it (cbor2), re-encode it with the canonical rules of docs/protocol.md
(our own encoder, scripts/deltafed_objects.py) and compare the bytes; check every field and its CBOR type against the
field tables of docs/protocol.md; verify the signature over `tag || 0x00 || canonical(body)`
(PyNaCl / libsodium), re-sign with the vector's seed and compare (ed25519 is deterministic);
check the signer against the roster vector; check the roster's signatures and threshold; and
recompute the provenance entry hash (blake3). The size limits and the author fields come from the
tag table of docs/protocol.md, so the page and the vectors cannot drift apart unnoticed; the copy
of that table and of the entry kinds in scripts/deltafed_objects.py (which verify-export.py uses)
is checked against the page too.

    pip install cbor2 pynacl blake3
    python3 scripts/check-vectors.py [VECTORS.json [PROTOCOL.md]]

Exit status 0 when everything holds; otherwise every failure is printed and the status is 1.
"""

import json
import re
import sys
from pathlib import Path

import blake3
import cbor2
import nacl.exceptions
import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deltafed_objects  # noqa: E402 - the canonical encoder and tables shared with verify-export.py
from deltafed_objects import MAX_TIME, PREFIX, canonical, peer_id  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FAILURES = []


def short(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def fail(what):
    FAILURES.append(what)
    print(f"FAIL {what}")


def decode_canonical(name, data, limit):
    """Decodes and insists on the canonical form; returns the value or None."""
    if len(data) > limit:
        fail(f"{name}: {len(data)} bytes, over the limit of {limit}")
    try:
        value = cbor2.loads(data)
        again = canonical(value)
    except Exception as e:  # noqa: BLE001 - any decoding problem is a failure to report
        fail(f"{name}: cannot decode: {e}")
        return None
    if again != data:
        fail(f"{name}: does not re-encode to the same bytes (not canonical)")
        return None
    return value


# --- the tables of docs/protocol.md ----------------------------------------------------------


def read_page(path):
    """Field tables by name, and the tag table (tag -> (author field, size limit))."""
    tables, tags, name = {}, {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#{2,4} `(\w+)`", line)
        if heading:
            name = heading.group(1)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if not cells or len(cells) < 3 or set(cells[0]) <= set("-"):
            continue
        tag = re.fullmatch(rf"`({re.escape(PREFIX)}[a-z-]+)`", cells[0])
        if tag and len(cells) == 4:
            author = re.fullmatch(r"`(\w+)`", cells[2])
            limit = re.match(r"(\d+)", cells[3])
            tags[tag.group(1)] = (author.group(1) if author else None, int(limit.group(1)))
            continue
        field = re.fullmatch(r"`(\w+)`", cells[0])
        kind = re.fullmatch(r"`([^`]+)`", cells[1])
        if name and field and kind:
            tables.setdefault(name, {})[field.group(1)] = kind.group(1)
    return tables, tags


def body_table(tag):
    """The name of the table whose heading carries `tag` (e.g. `Grant` for deltafed/v1/grant)."""
    return TAG_TABLES.get(tag)


def check_type(tables, value, kind, path, params):
    alternatives = [k.strip() for k in kind.split(" or ") if k.strip() != "absent"]
    errors = []
    for alt in alternatives:
        err = type_error(tables, value, alt, path, params)
        if err is None:
            return
        errors.append(err)
    fail(f"{path}: {errors[0]}")


def type_error(tables, value, kind, path, params):
    """None when `value` is of type `kind`, else why not (nested failures are reported)."""
    kind = params.get(kind, kind)
    if kind == "null":
        return None if value is None else "is not null"
    if kind == "uint":
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64
        return None if ok else f"{short(value)} is not a uint"
    if kind == "time":
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIME
        return None if ok else f"{short(value)} is not a time (a uint of at most {MAX_TIME} ms)"
    if kind == "text":
        return None if isinstance(value, str) else f"{short(value)} is not text"
    sized = re.fullmatch(r"bytes(?:\((\d+)\))?", kind)
    if sized:
        if not isinstance(value, bytes):
            return f"{short(value)} is not a byte string"
        if sized.group(1) and len(value) != int(sized.group(1)):
            return f"is {len(value)} bytes, not {sized.group(1)}"
        return None
    array = re.fullmatch(r"\[(.+)\]", kind)
    if array:
        if not isinstance(value, list):
            return "is not an array"
        for i, item in enumerate(value):
            check_type(tables, item, array.group(1), f"{path}[{i}]", params)
        return None
    if kind in tables:
        if not isinstance(value, dict):
            return f"is not a map ({kind})"
        check_map(tables, value, kind, path, params)
        return None
    return f"the page names an unknown type {kind!r}"


def check_map(tables, value, name, path, params=None):
    params = params or {}
    table = tables[name]
    if ONE_OF.get(name):
        if len(value) != 1 or next(iter(value)) not in table:
            fail(f"{path}: {name} must have exactly one of {sorted(table)}, has {sorted(value)}")
            return
    else:
        required = {f for f, kind in table.items() if not kind.endswith(" or absent")}
        missing, extra = sorted(required - set(value)), sorted(set(value) - set(table))
        if missing or extra:
            fail(f"{path}: {name} fields differ from the page (missing {missing}, not on the page {extra})")
    for key, item in value.items():
        if key in table:
            check_type(tables, item, table[key], f"{path}.{key}", params)


# --- the checks ------------------------------------------------------------------------------


def verify(key, tag, body_bytes, sig, what):
    try:
        nacl.signing.VerifyKey(key).verify(tag.encode() + b"\x00" + body_bytes, sig)
        return True
    except (nacl.exceptions.BadSignatureError, ValueError) as e:
        fail(f"{what}: signature does not verify ({e})")
        return False


def check_signed(name, data, tables, tags, roster_keys, seed=None):
    """A `Signed` envelope of kind `name`: shape, canonical form, signature, author."""
    tag = PREFIX + name
    if tag not in tags:
        fail(f"{name}: the tag table has no row for {tag}")
        return
    author, limit = tags[tag]
    env = decode_canonical(name, data, limit)
    if env is None:
        return
    body_name = body_table(tag)
    if body_name is None:
        fail(f"{name}: no table heading names {tag}")
        return
    check_map(tables, env, "Signed", name, {"T": body_name})
    body = env.get("body", {})
    if body.get("v") != 1:
        fail(f"{name}: v is {body.get('v')!r}, not 1")
    signer, sig = env.get("signer", b""), env.get("sig", b"")
    body_bytes = canonical(body)
    if body_bytes not in data:
        fail(f"{name}: the canonical body is not the body's bytes inside the envelope")
    verify(signer, tag, body_bytes, sig, name)
    if seed is not None:
        key = nacl.signing.SigningKey(bytes.fromhex(seed))
        if bytes(key.verify_key) != signer:
            fail(f"{name}: signer is not the public key of signer_seed")
        if key.sign(tag.encode() + b"\x00" + body_bytes).signature != sig:
            fail(f"{name}: signing tag || 0x00 || body with signer_seed does not give sig")
    if author:
        member = body.get(author)
        if roster_keys.get(member) != signer:
            fail(f"{name}: signer is not the roster key of {author} {member!r}")
    return body


def main():
    vectors_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "protocol/tests/vectors.json"
    page_path = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs/protocol.md"
    vectors = json.loads(vectors_path.read_text(encoding="utf-8"))
    tables, tags = read_page(page_path)
    text = page_path.read_text(encoding="utf-8")
    for tag in tags:
        match = re.search(rf"^#{{2,4}} `(\w+)` — tag `{re.escape(tag)}`", text, re.M)
        if match:
            TAG_TABLES[tag] = match.group(1)
    for name in tables:
        ONE_OF[name] = bool(re.search(rf"`{name}`\n\nA map with exactly one of", text))

    # The tables verify-export.py works from are the page's.
    page_kinds = {tag[len(PREFIX):]: row for tag, row in tags.items()}
    if page_kinds != deltafed_objects.KINDS:
        fail(f"scripts/deltafed_objects.py KINDS differs from the page's tag table: {page_kinds}")
    listed = re.search(r"^Entry kinds: (.*?)\.$", text, re.M | re.S)
    page_entry_kinds = tuple(re.findall(r"`([a-z-]+)`", listed.group(1))) if listed else ()
    if page_entry_kinds != deltafed_objects.ENTRY_KINDS:
        fail(f"scripts/deltafed_objects.py ENTRY_KINDS differs from the page's entry kinds: {page_entry_kinds}")
    entry_fields = tuple(tables.get(TAG_TABLES.get(PREFIX + "provenance-entry"), {}))
    if sorted(entry_fields) != sorted(deltafed_objects.ENTRY_FIELDS):
        fail(f"scripts/deltafed_objects.py ENTRY_FIELDS differs from the page's Entry table: {entry_fields}")
    if not FAILURES:
        print("ok   scripts/deltafed_objects.py: tag table, entry kinds and entry fields as on the page")

    # The roster first: its keys decide who may author the rest.
    r = vectors["roster"]
    roster_tag = PREFIX + "roster"
    signed_roster = decode_canonical("roster", bytes.fromhex(r["encoded"]), tags[roster_tag][1])
    roster_keys = {}
    if signed_roster is not None:
        check_map(tables, signed_roster, "SignedRoster", "roster")
        roster = signed_roster["roster"]
        check_map(tables, roster, body_table(roster_tag), "roster.roster")
        roster_keys = {m["id"]: m["key"] for m in roster["members"]}
        seeds = [nacl.signing.SigningKey(bytes.fromhex(s)) for s in r["signer_seeds"]]
        body_bytes = canonical(roster)
        signers = set()
        for i, s in enumerate(signed_roster["sigs"]):
            if verify(s["key"], roster_tag, body_bytes, s["sig"], f"roster.sigs[{i}]"):
                signers.add(s["key"])
        if signers != {bytes(k.verify_key) for k in seeds}:
            fail("roster: the signers are not the keys of signer_seeds")
        members = set(roster_keys.values())
        if not signers <= members or len(signers) < roster["threshold"]:
            fail("roster: fewer distinct member signatures than its threshold")
        print(f"ok   roster: {len(signers)} of {len(members)} members signed, threshold {roster['threshold']}")

    bodies = {}
    for name, v in sorted(vectors.items()):
        if name in ("roster", "provenance-entry"):
            continue
        before = len(FAILURES)
        bodies[name] = check_signed(name, bytes.fromhex(v["encoded"]), tables, tags, roster_keys, v["signer_seed"])
        if len(FAILURES) == before:
            print(f"ok   {name}: canonical, fields as documented, signature and author verified")

    # The provenance entry: hash, chain start, and the evidence it carries.
    v = vectors["provenance-entry"]
    entry_tag = PREFIX + "provenance-entry"
    data = bytes.fromhex(v["encoded"])
    before = len(FAILURES)
    entry = decode_canonical("provenance-entry", data, tags[entry_tag][1])
    if entry is not None:
        check_map(tables, entry, body_table(entry_tag), "provenance-entry")
        digest = blake3.blake3(entry_tag.encode() + b"\x00" + data).hexdigest()
        if digest != v["hash"]:
            fail(f"provenance-entry: hash is {digest}, the vector says {v['hash']}")
        if entry["seq"] == 0 and entry["prev"] != bytes(32):
            fail("provenance-entry: entry 0 must have prev = 32 zero bytes")
        for i, ev in enumerate(entry["objects"]):
            check_signed(ev["kind"], ev["bytes"], tables, tags, roster_keys)
    if len(FAILURES) == before:
        print("ok   provenance-entry: canonical, fields as documented, hash recomputed, evidence verified")

    # The documented sample inputs.
    b3 = lambda b: blake3.blake3(b).digest()  # noqa: E731
    samples = [
        ("manifest", "content_hash", b3(b"data")),
        ("checkpoint", "head", b3(b"head")),
        ("ticket", "content_hash", b3(b"projected")),
        ("ticket", "chunks", b3(b3(b"projected"))),  # one chunk: its entry is its hash; the table, hashed
        ("receipt", "content_hash", b3(b"projected")),
        ("query-answer", "records", b3(b"[]")),
    ]
    for name, field, want in samples:
        if (bodies.get(name) or {}).get(field) != want:
            fail(f"{name}.{field} is not the documented sample hash")
    if bodies.get("ticket") and bodies["ticket"].get("size") != len(b"projected"):
        fail("ticket.size is not 9")

    # The page's PeerId example: the key with seed 03 x 32.
    example = re.search(r"has PeerId `(12D3\w+)`", text)
    zhejiang = bytes(nacl.signing.SigningKey(bytes([3]) * 32).verify_key)
    if not example or example.group(1) != peer_id(zhejiang):
        fail(f"the page's PeerId example is not {peer_id(zhejiang)}")
    else:
        print("ok   the page's PeerId example")

    # The annotated bytes on the page are the checkpoint vector.
    block = re.search(r"```\n(a3 .*?)```", text, re.S)
    annotated = "".join(
        "".join(t for t in line.split("#")[0].split()) for line in (block.group(1).splitlines() if block else [])
    )
    if annotated != vectors["checkpoint"]["encoded"]:
        fail("the annotated checkpoint bytes on the page are not the checkpoint vector")
    else:
        print("ok   the page's byte-by-byte checkpoint is the vector")

    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        return 1
    print(f"all {len(vectors)} vectors agree with {page_path.name}")
    return 0


TAG_TABLES = {}
ONE_OF = {}

if __name__ == "__main__":
    sys.exit(main())
