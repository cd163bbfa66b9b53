#!/usr/bin/env python3
"""Checks a provenance export (`deltafed provenance export --out FILE`) on its own.

Independent of deltafed's code: Python cbor2 (decoding only), PyNaCl (libsodium) and blake3,
with the canonical encoder of scripts/deltafed_objects.py. docs/audit.md explains every check:

- every line's `raw` is one canonical CBOR `Entry` (docs/protocol.md) with the documented
  fields, and every other field of the line says what `raw` says;
- `hash` is BLAKE3("deltafed/v1/provenance-entry" || 0x00 || raw);
- the lines are entries 0, 1, 2, ... in order, none missing or repeated; entry 0's `prev` is 32
  zero bytes and every other entry's `prev` is the hash of the entry before it;
- every object an entry carries decodes as the kind it names, its signature verifies over
  `tag || 0x00 || canonical(body)` under its signer key, and that key is the roster key of the
  member the object names as its author; the object agrees with its entry's dataset and exchange;
- every roster the log records is valid on its own, and each one after the first is a valid
  successor of the one before;
- every batch of sharing calls (`calls-served`, `calls-answered`): the signed call answer is for
  the entry's signed call batch (it names its hash), the calls the entry records are the leaves
  of the batch's signed Merkle root and their results those of the answer's, and each call's
  leaf, inclusion proof, result and result proof on the line verify on their own;
- with --roster, the rosters the log records agree with it, and authors are checked against it
  (without it, against the rosters the log itself records: see docs/audit.md);
- with --head SEQ:HASH (a head from a checkpoint, or from `deltafed provenance verify --json` on
  the running node), the export holds entry SEQ with that hash;
- with --after SEQ:HASH (the last archived entry, which scripts/verify-archive.py prints), the
  export is of a log whose entries up to SEQ are archived: it starts at entry SEQ + 1, whose
  `prev` is HASH.

With --call SEQ:INDEX it checks one sharing call alone instead (docs/audit.md, "Checking one
sharing call"): call INDEX of entry SEQ, from its line's call, proofs and signed batch and answer
only, and prints what that call proves (who asked whom, for which dataset, for which
application and on whose behalf, when, and what was answered).

    pip install cbor2 pynacl blake3
    python3 scripts/verify-export.py EXPORT.jsonl [--roster roster.cbor]... [--head SEQ:HASH]...
    python3 scripts/verify-export.py EXPORT.jsonl --call SEQ:INDEX [--roster roster.cbor]...

Prints one line per problem, then a summary. Exit status 0 only when the export is intact (or
the call proven); 1 when it is not; 2 when the files cannot be read or the arguments are wrong.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deltafed_objects import (  # noqa: E402
    result_of,
    CALL_ENTRY_KINDS,
    DATASET_ID,
    ENTRY_FIELDS,
    ENTRY_KINDS,
    ENTRY_OPTIONAL,
    KINDS,
    MAX_TIME,
    MEMBER_ID,
    UNSIGNED_KINDS,
    Invalid,
    b3,
    canonical,
    check_call_pair,
    check_call_proofs,
    decode_call,
    decode_roster,
    decode_signed,
    decode_strict,
    entry_hash,
    is_bytes,
    is_uint,
    merkle_leaf,
    merkle_root,
    outcome_problem,
    roster_keys,
)

# What `deltafed provenance export` writes on every line (node/src/provenance/query.rs).
LINE_FIELDS = (
    "seq", "time", "kind", "dataset", "version", "peer", "exchange_id", "hash", "prev", "note", "objects", "raw",
)  # fmt: skip
# Only on lines whose entry has calls.
LINE_OPTIONAL = ("calls",)
OBJECT_FIELDS = ("kind", "hash", "bytes")
# One call of a batch entry on its line (node/src/provenance/calls.rs); the optional fields say
# what an answered or refused outcome holds.
CALL_VIEW_FIELDS = (
    "index", "dataset", "app", "on_behalf_of", "key_hash", "outcome", "call", "leaf", "proof", "result",
    "result_leaf", "result_proof",
)  # fmt: skip
CALL_VIEW_OPTIONAL = ("version", "fields", "records", "records_hash", "reason")
MAX_LISTED = 200


class Report:
    def __init__(self):
        self.count = 0

    def problem(self, text):
        self.count += 1
        if self.count <= MAX_LISTED:
            print(text)
        elif self.count == MAX_LISTED + 1:
            print(f"... (more problems are counted, not listed, past {MAX_LISTED})")


def unusable(why):
    """Input that cannot be checked at all: exit status 2."""
    print(f"error: {why}", file=sys.stderr)
    sys.exit(2)


def rfc3339(ms):
    """As deltafed shows times: RFC 3339 UTC with milliseconds (2026-12-31T00:00:00.000Z)."""
    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=ms)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{ms % 1000:03d}Z"


def split_ref(ref):
    """`MEMBER/DATASET[@VERSION]` -> (publisher, dataset, version or None), or None if malformed."""
    name, _, version = ref.partition("@")
    publisher, slash, dataset = name.partition("/")
    if not slash or not MEMBER_ID.fullmatch(publisher) or not DATASET_ID.fullmatch(dataset):
        return None
    if "@" in ref:
        if not version.isdigit() or int(version) < 1:
            return None
        return publisher, dataset, int(version)
    return publisher, dataset, None


def hex_or_none(value):
    return None if value is None else value.hex()


class Line:
    """One parsed line: where it is, the entry its raw bytes hold and their hash."""

    def __init__(self, lineno, seq, entry, raw, line=None):
        self.lineno, self.seq, self.entry, self.line = lineno, seq, entry, line or {}
        self.hash = entry_hash(raw)
        self.where = f"line {lineno} (entry {seq})"


def read_rosters(paths):
    """The auditor's rosters: every signature verifying, a threshold of its own members signed,
    all of one federation."""
    rosters = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            unusable(f"cannot read the roster {path}: {e.strerror}")
        try:
            # A signature by a key outside it is allowed here: a successor may carry one by a
            # member it removes. Only its own members count towards its threshold.
            roster, _ = decode_roster(data)
        except Invalid as e:
            unusable(f"the roster {path} is not valid: {e}")
        rosters.append((path, roster))
    federations = {r["federation"] for _, r in rosters}
    if len(federations) > 1:
        unusable(f"the rosters given are of different federations: {sorted(federations)}")
    return rosters


def parse_line(lineno, text, report):
    """The line's JSON and its entry, checked against each other; None when unusable."""
    where = f"line {lineno}"
    try:
        line = json.loads(text)
    except ValueError as e:
        report.problem(f"{where}: not JSON ({e})")
        return None
    if not isinstance(line, dict):
        report.problem(f"{where}: not a JSON object")
        return None
    missing = [f for f in LINE_FIELDS if f not in line]
    extra = sorted(set(line) - set(LINE_FIELDS) - set(LINE_OPTIONAL))
    if missing:
        report.problem(f"{where}: the fields {missing} are missing")
    if extra:
        report.problem(f"{where}: the fields {extra} are not part of an export (the hash covers only raw)")
    raw_hex = line.get("raw")
    try:
        raw = bytes.fromhex(raw_hex)
    except (TypeError, ValueError):
        report.problem(f"{where}: raw is not hex; nothing on this line can be checked")
        return None
    try:
        entry = decode_strict(raw, KINDS["provenance-entry"][1])
    except Invalid as e:
        report.problem(f"{where}: raw is not a provenance entry ({e})")
        return None
    required = set(ENTRY_FIELDS) - set(ENTRY_OPTIONAL)
    if not isinstance(entry, dict) or not required <= set(entry) <= set(ENTRY_FIELDS):
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        report.problem(
            f"{where}: raw is not a provenance entry: its fields are {got}, not {sorted(required)} "
            f"(and {', '.join(ENTRY_OPTIONAL)} when not empty)"
        )
        return None
    seq = entry["seq"]
    if not is_uint(seq):
        report.problem(f"{where}: raw's seq {seq!r} is not a uint")
        return None
    parsed = Line(lineno, seq, entry, raw, line)
    check_entry_shape(parsed, report)
    check_agreement(parsed, line, report)
    return parsed


def check_entry_shape(ln, report):
    """The Entry table of docs/protocol.md."""
    e, where = ln.entry, ln.where
    if e["v"] != 1:
        report.problem(f"{where}: has version v = {e['v']!r}, not 1")
    if not is_uint(e["time"]) or e["time"] > MAX_TIME:
        report.problem(f"{where}: time {e['time']!r} is not a time (ms since 1970, at most {MAX_TIME})")
    if e["kind"] not in ENTRY_KINDS:
        report.problem(f"{where}: kind {e['kind']!r} is not an entry kind")
    if e["dataset"] is not None and (not isinstance(e["dataset"], str) or split_ref(e["dataset"]) is None):
        report.problem(f"{where}: dataset {e['dataset']!r} is not MEMBER/DATASET[@VERSION]")
    if e["peer"] is not None and (not isinstance(e["peer"], str) or not MEMBER_ID.fullmatch(e["peer"])):
        report.problem(f"{where}: peer {e['peer']!r} is not a member id")
    if e["exchange"] is not None and not is_bytes(e["exchange"], 16):
        report.problem(f"{where}: exchange is not 16 bytes or null")
    if not isinstance(e["note"], str):
        report.problem(f"{where}: note is not text")
    if not is_bytes(e["prev"], 32):
        report.problem(f"{where}: prev is not 32 bytes")
    objects = e["objects"]
    if not isinstance(objects, list) or not all(
        isinstance(o, dict) and set(o) == {"kind", "bytes"} and isinstance(o["kind"], str) and is_bytes(o["bytes"])
        for o in objects
    ):
        report.problem(f"{where}: objects is not a list of {{kind: text, bytes: bytes}}")
        e["objects"] = []
    check_calls_shape(ln, report)


def check_calls_shape(ln, report):
    """`calls`: only on the entries of a batch of calls, never empty (then it is left out), each
    {call: bytes, outcome: Outcome, key: bytes(32)}."""
    e, where = ln.entry, ln.where
    if "calls" not in e:
        if e["kind"] in CALL_ENTRY_KINDS:
            report.problem(f"{where}: a {e['kind']} entry that records no calls")
        e["calls"] = []
        return
    calls = e["calls"]
    if e["kind"] not in CALL_ENTRY_KINDS:
        report.problem(f"{where}: a {e['kind']} entry with calls (only {' and '.join(CALL_ENTRY_KINDS)} have them)")
    if not isinstance(calls, list) or not calls:
        what = "empty" if calls == [] else "not a list"
        report.problem(f"{where}: calls is {what} (an entry without calls leaves the key out)")
        e["calls"] = []
        return
    for i, c in enumerate(calls):
        shaped = isinstance(c, dict) and set(c) == {"call", "outcome", "key"}
        if not shaped or not is_bytes(c["call"]) or not is_bytes(c["key"], 32):
            report.problem(f"{where}: calls[{i}] is not {{call: bytes, outcome, key: bytes(32)}}")
            e["calls"] = []
            return
        why = outcome_problem(c["outcome"])
        if why:
            report.problem(f"{where}: calls[{i}]: {why}")
            e["calls"] = []
            return


def check_agreement(ln, line, report):
    """Every field of the line says what raw says (the hash covers raw only)."""
    e, where = ln.entry, ln.where
    ref = split_ref(e["dataset"]) if isinstance(e["dataset"], str) else None
    want = {
        "seq": e["seq"],
        "time": rfc3339(e["time"]) if is_uint(e["time"]) and e["time"] <= MAX_TIME else None,
        "kind": e["kind"],
        "dataset": f"{ref[0]}/{ref[1]}" if ref else None,
        "version": ref[2] if ref else None,
        "peer": e["peer"],
        "exchange_id": hex_or_none(e["exchange"]) if is_bytes(e["exchange"], 16) else None,
        "hash": ln.hash.hex(),
        "prev": e["prev"].hex() if is_bytes(e["prev"]) else None,
        "note": e["note"],
    }
    for field, value in want.items():
        if field not in line:
            continue
        if field == "hash" and line["hash"] != value:
            report.problem(
                f"{where}: hash {str(line['hash'])[:16]}… is not the hash of raw ({value[:16]}…): "
                "the entry was altered"
            )
        elif line[field] != value:
            report.problem(f"{where}: {field} is {short(line[field])} but raw says {short(value)}")
    objects = line.get("objects")
    if not isinstance(objects, list):
        if "objects" in line:
            report.problem(f"{where}: objects is not a list")
        return
    if len(objects) != len(e["objects"]):
        report.problem(f"{where}: objects lists {len(objects)} object(s) but raw carries {len(e['objects'])}")
        return
    for i, (o, ev) in enumerate(zip(objects, e["objects"])):
        at = f"{where}: object {i}"
        if not isinstance(o, dict) or set(o) != set(OBJECT_FIELDS):
            report.problem(f"{at} does not have exactly the fields {list(OBJECT_FIELDS)}")
            continue
        if o["kind"] != ev["kind"]:
            report.problem(f"{at}: kind is {short(o['kind'])} but raw says {short(ev['kind'])}")
        if o["bytes"] != ev["bytes"].hex():
            report.problem(f"{at} ({ev['kind']}): bytes differ from the object raw carries")
        if o["hash"] != b3(ev["bytes"]).hex():
            report.problem(f"{at} ({ev['kind']}): hash is not BLAKE3 of the object raw carries")
    check_call_views(ln, line, report)


def outcome_view(o):
    """The readable fields of a call's outcome on its line, as node/src/provenance/calls.rs writes them."""
    if o == "deferred":
        return {"outcome": "deferred"}
    (variant, data), = o.items()
    if variant == "refused":
        return {"outcome": "refused", "reason": data["reason"]}
    view = {"outcome": "answered", "version": data["version"], "records": data["count"],
            "records_hash": data["records"].hex()}  # fmt: skip
    if data["fields"] is not None:
        view["fields"] = data["fields"]
    return view


def check_call_views(ln, line, report):
    """The line's `calls` say what raw's calls say (the leaves and proofs are checked against the
    signed batch and answer in check_calls)."""
    e, where = ln.entry, ln.where
    views = line.get("calls", [])
    if not isinstance(views, list):
        report.problem(f"{where}: calls is not a list")
        return
    if len(views) != len(e["calls"]):
        report.problem(f"{where}: calls lists {len(views)} call(s) but raw records {len(e['calls'])}")
        return
    for i, (v, c) in enumerate(zip(views, e["calls"])):
        at = f"{where}: call {i}"
        if not isinstance(v, dict):
            report.problem(f"{at} is not a JSON object")
            continue
        missing = [f for f in CALL_VIEW_FIELDS if f not in v]
        extra = sorted(set(v) - set(CALL_VIEW_FIELDS) - set(CALL_VIEW_OPTIONAL))
        if missing or extra:
            report.problem(f"{at}: fields missing {missing}, not part of a call {extra}")
            continue
        try:
            call = decode_call(c["call"])
        except Invalid:
            call = None  # reported by check_calls
        want = {
            "index": i,
            "call": c["call"].hex(),
            "key_hash": c["key"].hex(),
            "dataset": call["dataset"] if call else "",
            "app": call["app"] if call else None,
            "on_behalf_of": call["on_behalf_of"] if call else None,
        }
        readable = outcome_view(c["outcome"])
        for f in CALL_VIEW_OPTIONAL:
            if f in v and f not in readable:
                report.problem(f"{at}: has {f} {short(v[f])}, which a {readable['outcome']} outcome does not have")
        for f in CALL_VIEW_OPTIONAL:
            if f in readable and f not in v:
                report.problem(f"{at}: lacks {f} (raw says {short(readable[f])})")
        want.update(readable)
        for f, value in want.items():
            if f in v and v[f] != value:
                shown = value if f not in ("call",) else value[:16] + "…"
                report.problem(f"{at}: {f} is {short(v[f])} but raw says {short(shown)}")


def short(value):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def check_order(lines, unreadable, report, start=0):
    """Entries start, start + 1, ... in that order, once each; returns seq -> line (first occurrence).

    `unreadable` holds the numbers of the lines that could not be read: each is taken to hold
    the entry that belongs there, so it is not reported again as missing or out of order."""
    by_seq = {}
    assumed = set()
    expected, highest, disordered = start, start - 1, False
    position = {ln.lineno: ln for ln in lines}
    for lineno in sorted(set(position) | set(unreadable)):
        ln = position.get(lineno)
        if ln is None:
            assumed.add(expected)
            expected += 1
            continue
        if ln.seq in by_seq:
            first = by_seq[ln.seq]
            same = "the same entry" if first.hash == ln.hash else "a different entry"
            report.problem(f"{ln.where}: entry {ln.seq} is also on line {first.lineno} ({same})")
            continue
        by_seq[ln.seq] = ln
        # After a line out of place, the next one in sequence with the highest seen is in place.
        in_place = ln.seq == expected or (disordered and ln.seq == highest + 1)
        if not in_place:
            if expected == start:
                report.problem(f"{ln.where}: the export starts at entry {ln.seq}, not at entry {start}")
            elif ln.seq < expected:
                report.problem(f"{ln.where}: out of order: entry {ln.seq} comes after entry {expected - 1}")
            else:
                report.problem(
                    f"{ln.where}: out of order or entries dropped: entry {ln.seq} comes after entry {expected - 1}"
                )
        disordered = not in_place
        highest = max(highest, ln.seq)
        expected = ln.seq + 1
    if by_seq:
        missing = sorted(set(range(start, max(by_seq) + 1)) - set(by_seq) - assumed)
        for a, b in ranges(missing):
            if a == b:
                report.problem(f"entry {a} is missing from the export")
            else:
                report.problem(f"entries {a} to {b} are missing from the export")
    return by_seq


def ranges(numbers):
    out = []
    for n in numbers:
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


def check_chain(by_seq, report, after=None):
    """prev of entry 0 is zeros; prev of entry n is the hash of entry n - 1 (recomputed from raw);
    with `after` (seq, hash) of the last archived entry, the first exported entry's prev is that hash."""
    for seq, ln in sorted(by_seq.items()):
        prev = ln.entry["prev"]
        if not is_bytes(prev, 32):
            continue
        if after is not None and seq == after[0] + 1:
            if prev != after[1]:
                report.problem(
                    f"{ln.where}: prev {prev.hex()[:16]}… is not the hash of the last archived entry {after[0]} "
                    f"({after[1].hex()[:16]}…): the export does not continue the archive"
                )
        elif seq == 0:
            if prev != bytes(32):
                report.problem(f"{ln.where}: prev is {prev.hex()[:16]}…, but entry 0's prev must be 32 zero bytes")
        elif seq - 1 in by_seq and prev != by_seq[seq - 1].hash:
            before = by_seq[seq - 1]
            report.problem(
                f"{ln.where}: prev {prev.hex()[:16]}… is not the hash of entry {seq - 1} on line {before.lineno} "
                f"({before.hash.hex()[:16]}…): the chain is broken, entry {seq - 1} was altered or replaced"
            )


class Keys:
    """Whose key is whose, entry by entry."""

    def __init__(self, trusted):
        self.trusted = trusted  # [(path, roster)]
        self.logged = None  # (where, roster) of the newest roster the log recorded so far
        self.first_logged = None
        self.count = 0

    def of(self, member):
        """The keys accepted for `member` and where they come from."""
        if self.trusted:
            return {roster_keys(r)[member] for _, r in self.trusted if member in roster_keys(r)}, "the roster given"
        current = self.logged or self.first_logged
        if current is None:
            return set(), "no roster (none given, none in the log)"
        return ({roster_keys(current[1])[member]} if member in roster_keys(current[1]) else set()), (
            f"the roster of {current[0]}"
        )


def check_rosters(lines, keys, report):
    """Every roster the log records: valid on its own, a valid successor of the one before,
    and the same as the auditor's roster of that version. Remembers the first for `Keys`."""
    previous = None
    for ln in lines:
        if ln.entry["kind"] != "roster-installed":
            continue
        if not any(ev["kind"] == "roster" for ev in ln.entry["objects"]):
            report.problem(f"{ln.where}: a roster-installed entry that carries no roster")
        for i, ev in enumerate(ln.entry["objects"]):
            if ev["kind"] != "roster":
                continue
            at = f"{ln.where}: object {i} (roster)"
            try:
                roster, signers = decode_roster(ev["bytes"])
            except Invalid as e:
                report.problem(f"{at}: not a valid roster ({e})")
                continue
            members = set(roster_keys(roster).values())
            if previous is None:
                keys.first_logged = (ln.where, roster)
                if not signers <= members:
                    report.problem(f"{at}: signed by a key that is not one of its members'")
            elif roster == previous:
                pass  # logged again at a restart (the node logs the roster in force when it starts)
            else:
                check_successor(at, previous, roster, signers, report)
            for path, trusted in keys.trusted:
                if trusted["federation"] != roster["federation"]:
                    report.problem(f"{at}: is of federation {roster['federation']}, {path} of {trusted['federation']}")
                elif trusted["version"] == roster["version"] and trusted != roster:
                    version = roster["version"]
                    report.problem(f"{at}: is version {version} but not the roster version {version} of {path}")
            previous = roster


def check_successor(at, before, roster, signers, report):
    """docs/trust-model.md: same federation, higher version, every signer a member of the new or
    the previous roster, a threshold of the previous roster's members signed it."""
    if roster["federation"] != before["federation"]:
        report.problem(f"{at}: federation {roster['federation']} is not {before['federation']}, the roster before's")
    if roster["version"] <= before["version"]:
        report.problem(f"{at}: version {roster['version']} does not follow version {before['version']}")
    old = set(roster_keys(before).values())
    if not signers <= set(roster_keys(roster).values()) | old:
        report.problem(f"{at}: signed by a key that is a member of neither it nor the roster before")
    if len(signers & old) < before["threshold"]:
        report.problem(
            f"{at}: only {len(signers & old)} members of the roster before signed it, "
            f"below its threshold of {before['threshold']}"
        )


def check_objects(lines, keys, report):
    """Each object: its kind, signature and author, and that it agrees with its entry."""
    for ln in lines:
        e = ln.entry
        if e["kind"] == "roster-installed":
            roster = next((ev for ev in e["objects"] if ev["kind"] == "roster"), None)
            if roster is not None:
                try:
                    keys.logged = (ln.where, decode_roster(roster["bytes"])[0])
                except Invalid:
                    pass  # reported by check_rosters
        ref = split_ref(e["dataset"]) if isinstance(e["dataset"], str) else None
        for i, ev in enumerate(e["objects"]):
            kind = ev["kind"]
            at = f"{ln.where}: object {i} ({kind})"
            if kind == "roster":
                keys.count += 1
                continue
            if kind not in KINDS or kind in UNSIGNED_KINDS:
                report.problem(f"{at}: {kind!r} is not a kind of signed object")
                continue
            try:
                body, signer = decode_signed(kind, ev["bytes"])
            except Invalid as err:
                report.problem(f"{at}: {err}")
                continue
            keys.count += 1
            field = KINDS[kind][0]
            author = body.get(field)
            if not isinstance(author, str):
                report.problem(f"{at}: has no author ({field})")
                continue
            accepted, source = keys.of(author)
            if not accepted:
                report.problem(f"{at}: its author ({field}) {author} is not a member in {source}")
            elif signer not in accepted:
                report.problem(
                    f"{at}: signed by key {signer.hex()[:16]}…, which is not {author}'s key in {source} "
                    f"({', '.join(k.hex()[:16] + '…' for k in sorted(accepted))})"
                )
            if e["exchange"] is not None and "exchange" in body and body["exchange"] != e["exchange"]:
                theirs, ours = hex_or_none(body["exchange"]), e["exchange"].hex()
                report.problem(f"{at}: is for exchange {theirs}, the entry's is {ours}")
            if ref and isinstance(body.get("dataset"), str):
                publisher = body.get("publisher", body.get("provider"))
                if (publisher, body["dataset"]) != (ref[0], ref[1]):
                    report.problem(f"{at}: is about {publisher}/{body['dataset']}, the entry about {ref[0]}/{ref[1]}")


def call_objects(objects):
    """The bytes of the call-batch and the call-answer among `objects` ({kind, bytes}), or why not."""
    found = {k: [o["bytes"] for o in objects if o["kind"] == k] for k in ("call-batch", "call-answer")}
    for k, v in found.items():
        if len(v) != 1:
            return None, None, f"carries {len(v)} {k} object(s), not one"
    return found["call-batch"][0], found["call-answer"][0], None


class CallCount:
    def __init__(self):
        self.calls = self.batches = 0


def check_calls(lines, report, counted):
    """Every batch entry: its signed batch and answer belong together and to the entry, the calls
    it records are exactly the batch's leaves and their outcomes the answer's, and the line's
    leaves, proofs and results verify under the signed roots. (The signatures and the authors
    are check_objects'.)"""
    for ln in lines:
        e = ln.entry
        if e["kind"] not in CALL_ENTRY_KINDS or not e["calls"]:
            continue
        where = ln.where
        batch_bytes, answer_bytes, why = call_objects(e["objects"])
        if why:
            report.problem(f"{where}: a {e['kind']} entry that {why}; its calls cannot be checked")
            continue
        batch, _, answer, _, problems = check_call_pair(batch_bytes, answer_bytes)
        for text in problems:
            report.problem(f"{where}: {text}")
        if batch is None or answer is None:
            continue
        role = "requester" if e["kind"] == "calls-served" else "provider"
        if e["peer"] != batch[role]:
            report.problem(f"{where}: peer is {e['peer']!r}, but the batch's {role} is {batch[role]}")
        if e["exchange"] != answer["exchange"]:
            report.problem(
                f"{where}: exchange is {hex_or_none(e['exchange'])}, the call-answer's {answer['exchange'].hex()}"
            )
        calls = e["calls"]
        if len(calls) != batch["count"]:
            report.problem(f"{where}: records {len(calls)} call(s), the signed batch has {batch['count']}")
        leaves, datasets = [], set()
        for i, c in enumerate(calls):
            leaves.append(merkle_leaf("call", c["call"]))
            try:
                datasets.add(decode_call(c["call"])["dataset"])
            except Invalid as err:
                report.problem(f"{where}: call {i}: the call {err}")
        root = merkle_root(leaves)
        if root != batch["root"]:
            report.problem(
                f"{where}: the calls raw records are not the batch {batch['requester']} signed: their Merkle root "
                f"{root.hex()[:16]}… is not the call-batch's root {batch['root'].hex()[:16]}…"
            )
        results = [result_of(lf, c["call"], c["outcome"]) for lf, c in zip(leaves, calls)]
        rroot = merkle_root([merkle_leaf("call-result", r) for r in results])
        if rroot != answer["root"]:
            report.problem(
                f"{where}: the outcomes raw records are not the ones {answer['provider']} signed: the Merkle root "
                f"of their results {rroot.hex()[:16]}… is not the call-answer's root {answer['root'].hex()[:16]}…"
            )
        ref = split_ref(e["dataset"]) if isinstance(e["dataset"], str) else None
        if ref and (ref[0] != batch["provider"] or ref[1] not in datasets):
            report.problem(f"{where}: dataset {e['dataset']} is not one the calls ask {batch['provider']} about")
        counted.batches += 1
        views = ln.line.get("calls")
        if not isinstance(views, list) or len(views) != len(calls):
            continue  # reported by check_call_views
        for i, v in enumerate(views):
            if not isinstance(v, dict):
                continue
            _, result, problems = check_call_proofs(v, batch, answer)
            if result is not None and v.get("result") != results[i].hex():
                problems.append("result is not the CallResult of the call and the outcome raw records")
            for text in problems:
                report.problem(f"{where}: call {i}: {text}")
            counted.calls += not problems


# --- one call alone (--call SEQ:INDEX) -------------------------------------------------------


def describe_outcome(o):
    if o == "deferred":
        return "deferred: not answered in this batch (its answer did not fit; the requester asks again)"
    (variant, data), = o.items()
    if variant == "refused":
        return f"refused: {data['reason']}"
    fields = ", ".join(data["fields"]) if data["fields"] is not None else "all fields"
    return (
        f"answered from version {data['version']}: {data['count']} record(s), {fields}; "
        f"the records sent hash to {data['records'].hex()}"
    )


def call_roster(trusted, lines_json, seq):
    """The keys to check the signers with, and where they come from: the rosters given, else the
    newest valid roster the export records before entry `seq`."""
    if trusted:
        return [r for _, r in trusted], "the roster given"
    found = None
    for line in lines_json:
        if line.get("kind") != "roster-installed" or not isinstance(line.get("seq"), int) or line["seq"] >= seq:
            continue
        for o in line.get("objects") or []:
            try:
                roster, _ = decode_roster(bytes.fromhex(o["bytes"]))
            except (Invalid, KeyError, TypeError, ValueError):
                continue
            found = (line["seq"], roster)
    if found is None:
        return [], "no roster (none given, none in the export before this entry)"
    return [found[1]], f"the roster the export records at entry {found[0]} (not one obtained independently)"


def check_one_call(path, ref, trusted):
    """--call SEQ:INDEX: call INDEX of entry SEQ, checked with its line's call, proofs and signed
    batch and answer only. Prints what it proves; 0 when it is proven, 1 when not."""
    seq_text, _, index_text = ref.partition(":")
    if not seq_text.isdigit() or not index_text.isdigit():
        unusable(f"--call {ref!r} is not SEQ:INDEX (an entry's sequence number and a call's index in it)")
    seq, index = int(seq_text), int(index_text)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        unusable(f"cannot read {path}: {e}")
    lines_json, found = [], []
    for lineno, raw_line in enumerate(text.splitlines(), 1):
        try:
            line = json.loads(raw_line)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines_json.append(line)
            if line.get("seq") == seq:
                found.append((lineno, line))
    if not found:
        unusable(f"{path} has no entry {seq}")
    if len(found) > 1:
        unusable(f"{path} has entry {seq} on {len(found)} lines ({', '.join(str(n) for n, _ in found)})")
    lineno, line = found[0]
    where = f"line {lineno} (entry {seq})"
    views = line.get("calls")
    if not isinstance(views, list) or not views:
        unusable(f"entry {seq} ({line.get('kind')}) records no calls")
    # The call whose `index` is INDEX: on a whole line that is the INDEXth; a line cut down to
    # one call (to show it without its neighbours) keeps just that one.
    chosen = [v for v in views if isinstance(v, dict) and v.get("index") == index]
    if not chosen:
        unusable(f"entry {seq} records no call with index {index} (its calls: {len(views)})")
    if len(chosen) > 1:
        unusable(f"entry {seq} lists call {index} {len(chosen)} times")
    view = chosen[0]
    problems = []
    try:
        objects = [{"kind": o["kind"], "bytes": bytes.fromhex(o["bytes"])} for o in line.get("objects") or []]
    except (KeyError, TypeError, ValueError):
        unusable(f"{where}: objects is not a list of {{kind, bytes (hex)}}")
    batch_bytes, answer_bytes, why = call_objects(objects)
    if why:
        print(f"{where}: {why}")
        print(f"NOT PROVEN: call {index} of entry {seq} cannot be checked")
        return 1
    batch, bsigner, answer, asigner, pair = check_call_pair(batch_bytes, answer_bytes)
    problems += pair
    rosters, source = call_roster(trusted, lines_json, seq)
    signed = ((batch, bsigner, "requester", "call-batch"), (answer, asigner, "provider", "call-answer"))
    for body, signer, role, kind in signed:
        if body is None:
            continue
        member = body[role]
        keys = {roster_keys(r)[member] for r in rosters if member in roster_keys(r)}
        if not keys:
            problems.append(f"the {kind}'s {role} {member} is not a member in {source}")
        elif signer not in keys:
            problems.append(
                f"the {kind} is signed by key {signer.hex()[:16]}…, which is not {member}'s key in {source}"
            )
    call = result = None
    if batch is not None and answer is not None:
        call, result, more = check_call_proofs(view, batch, answer)
        problems += more
    # The entry around it, when the line still has it: the same call, the same objects.
    entry_note = "the line has no raw entry: the call is shown without its log entry"
    if isinstance(line.get("raw"), str):
        try:
            raw = bytes.fromhex(line["raw"])
            entry = decode_strict(raw, KINDS["provenance-entry"][1])
            logged = entry.get("calls") or []
            if index >= len(logged) or logged[index].get("call").hex() != view.get("call"):
                problems.append(f"raw does not record this call at index {index}")
            elif result is not None and logged[index].get("outcome") != result["outcome"]:
                problems.append("raw records another outcome for this call than its result says")
            carried = [(o["kind"], o["bytes"]) for o in entry.get("objects", [])]
            if carried != [(o["kind"], o["bytes"]) for o in objects]:
                problems.append("raw carries other objects than the line's objects")
            entry_note = (
                f"recorded in entry {seq} ({entry.get('kind')}) of {path}, entry hash {entry_hash(raw).hex()}; "
                "run without --call to check that entry's place in the chain"
            )
        except (Invalid, AttributeError, TypeError, ValueError) as e:
            problems.append(f"raw is not a provenance entry ({e})")
    if problems or call is None or result is None:
        for p in problems:
            print(f"{where}: call {index}: {p}")
        print(f"NOT PROVEN: call {index} of entry {seq}: {len(problems)} problem(s)")
        return 1
    grant = call["grant"].hex() if call["grant"] is not None else "none (a dataset shared unconditionally)"
    key_hash = view.get("key_hash")
    print(f"call {index} of entry {seq} ({line.get('kind')}): proven by the signed batch and answer alone")
    rows = [
        ("requester", f"{batch['requester']}: signed the batch (key {bsigner.hex()[:16]}…, its key in {source})"),
        ("provider", f"{answer['provider']}: signed the answer (key {asigner.hex()[:16]}…, its key in {source})"),
        ("dataset", f"{batch['provider']}/{call['dataset']}"),
        ("grant", grant),
        ("app", call["app"] if call["app"] is not None else "none stated"),
        ("on behalf of", call["on_behalf_of"] if call["on_behalf_of"] is not None else "not stated"),
        ("batch", f"signed at {rfc3339(batch['time'])}, call {index} of {batch['count']}, "
                  f"batch hash {b3(batch_bytes).hex()}"),
        ("answer", f"signed at {rfc3339(answer['time'])}, exchange {answer['exchange'].hex()}"),
        ("outcome", describe_outcome(result["outcome"])),
        ("key", f"not in the call: only its commitment {call['key'].hex()[:16]}… under a salt no log keeps"
                + (f"; this log's keyed hash of it: {key_hash}" if isinstance(key_hash, str) else "")),
        ("entry", entry_note),
    ]  # fmt: skip
    for name, value in rows:
        print(f"  {name:<13} {value}")
    return 0


def parse_heads(values, flag="--head"):
    heads = []
    for v in values:
        seq, _, digest = v.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            unusable(f"{flag} {v!r} is not SEQ:HASH (a sequence number and 64 hex characters)")
        try:
            heads.append((int(seq), bytes.fromhex(digest)))
        except ValueError:
            unusable(f"{flag} {v!r} is not SEQ:HASH (a sequence number and 64 hex characters)")
    return heads


def main():
    ap = argparse.ArgumentParser(
        description="Check a `deltafed provenance export` file on its own (docs/audit.md).",
        epilog="Exit status: 0 intact, 1 not intact, 2 unreadable input or bad arguments.",
    )
    ap.add_argument("export", metavar="EXPORT.jsonl", help="the file `deltafed provenance export --out` wrote")
    ap.add_argument(
        "--roster",
        action="append",
        default=[],
        metavar="ROSTER.cbor",
        help="the federation's roster, obtained independently of the export; authors are checked against its keys "
        "(repeat for older rosters whose keys signed older objects)",
    )
    ap.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="a head known from elsewhere (a checkpoint, `deltafed provenance verify --json`): "
        "the export must hold entry SEQ with this hash",
    )
    ap.add_argument(
        "--after",
        metavar="SEQ:HASH",
        help="the last archived entry (scripts/verify-archive.py prints it): the export starts at entry SEQ + 1, "
        "whose prev must be HASH",
    )
    ap.add_argument(
        "--call",
        metavar="SEQ:INDEX",
        help="check only call INDEX of the batch entry SEQ, from its line's call, proofs and signed batch and "
        "answer, and print what it proves (docs/audit.md, \"Checking one sharing call\")",
    )
    args = ap.parse_args()
    report = Report()
    trusted = read_rosters(args.roster)
    if args.call is not None:
        return check_one_call(args.export, args.call, trusted)
    heads = parse_heads(args.head)
    after = parse_heads([args.after], "--after")[0] if args.after else None
    start = after[0] + 1 if after else 0
    try:
        text = Path(args.export).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        unusable(f"cannot read {args.export}: {e}")

    lines, unreadable = [], []
    for lineno, line in enumerate(text.split("\n"), 1):
        if line == "" and lineno == text.count("\n") + 1:
            break  # after the last newline
        parsed = parse_line(lineno, line, report)
        if parsed is not None:
            lines.append(parsed)
        else:
            unreadable.append(lineno)
    if not lines and not unreadable:
        report.problem(f"{args.export} holds no entries")
    by_seq = check_order(lines, unreadable, report, start)
    check_chain(by_seq, report, after)
    keys = Keys(trusted)
    check_rosters(lines, keys, report)
    check_objects(lines, keys, report)
    counted = CallCount()
    check_calls(lines, report, counted)
    for seq, digest in heads:
        ln = by_seq.get(seq)
        if ln is None:
            report.problem(f"head {seq}: the export has no entry {seq} (truncated, or taken before that head?)")
        elif ln.hash != digest:
            report.problem(
                f"head {seq}: the export's entry {seq} has hash {ln.hash.hex()[:16]}…, the head given is "
                f"{digest.hex()[:16]}…: entries up to {seq} are not the ones that head was signed over"
            )

    last = lines[-1] if lines else None
    authors = (
        "authors checked against " + ", ".join(f"{p} ({r['federation']} version {r['version']})" for p, r in trusted)
        if trusted
        else "authors checked against the rosters the log records (no --roster given)"
    )
    if report.count:
        print(f"NOT INTACT: {report.count} problem(s) in {args.export} ({len(lines)} entries read)")
        return 1
    print(
        f"intact: {len(lines)} entries ({start} to {last.seq}), head {last.seq} {last.hash.hex()}; every hash, prev link and "
        f"JSON field checked; {keys.count} signed object(s) verified, {authors}"
        + (
            f"; {counted.calls} call(s) of {counted.batches} batch(es) proven under their signed roots"
            if counted.batches
            else ""
        )
        + (f"; {len(heads)} head(s) given found" if heads else "; no --head given: the head is not anchored")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
