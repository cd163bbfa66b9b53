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
- with --roster, the rosters the log records agree with it, and authors are checked against it
  (without it, against the rosters the log itself records: see docs/audit.md);
- with --head SEQ:HASH (a head from a checkpoint, or from `deltafed provenance verify --json` on
  the running node), the export holds entry SEQ with that hash.

    pip install cbor2 pynacl blake3
    python3 scripts/verify-export.py EXPORT.jsonl [--roster roster.cbor]... [--head SEQ:HASH]...

Prints one line per problem, then a summary. Exit status 0 only when the export is intact;
1 when it is not; 2 when the files cannot be read or the arguments are wrong.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deltafed_objects import (  # noqa: E402
    DATASET_ID,
    ENTRY_FIELDS,
    ENTRY_KINDS,
    KINDS,
    MAX_TIME,
    MEMBER_ID,
    Invalid,
    b3,
    decode_roster,
    decode_signed,
    decode_strict,
    entry_hash,
    is_bytes,
    is_uint,
    roster_keys,
)

# What `deltafed provenance export` writes on every line (node/src/provenance/query.rs).
LINE_FIELDS = (
    "seq", "time", "kind", "dataset", "version", "peer", "exchange_id", "hash", "prev", "note", "objects", "raw",
)  # fmt: skip
OBJECT_FIELDS = ("kind", "hash", "bytes")
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

    def __init__(self, lineno, seq, entry, raw):
        self.lineno, self.seq, self.entry = lineno, seq, entry
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
    extra = sorted(set(line) - set(LINE_FIELDS))
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
    if not isinstance(entry, dict) or set(entry) != set(ENTRY_FIELDS):
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        report.problem(f"{where}: raw is not a provenance entry: its fields are {got}, not {sorted(ENTRY_FIELDS)}")
        return None
    seq = entry["seq"]
    if not is_uint(seq):
        report.problem(f"{where}: raw's seq {seq!r} is not a uint")
        return None
    parsed = Line(lineno, seq, entry, raw)
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


def short(value):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def check_order(lines, unreadable, report):
    """Entries 0, 1, 2, ... in that order, once each; returns seq -> line (first occurrence).

    `unreadable` holds the numbers of the lines that could not be read: each is taken to hold
    the entry that belongs there, so it is not reported again as missing or out of order."""
    by_seq = {}
    assumed = set()
    expected, highest, disordered = 0, -1, False
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
            if expected == 0:
                report.problem(f"{ln.where}: the export starts at entry {ln.seq}, not at entry 0")
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
        missing = sorted(set(range(max(by_seq) + 1)) - set(by_seq) - assumed)
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


def check_chain(by_seq, report):
    """prev of entry 0 is zeros; prev of entry n is the hash of entry n - 1 (recomputed from raw)."""
    for seq, ln in sorted(by_seq.items()):
        prev = ln.entry["prev"]
        if not is_bytes(prev, 32):
            continue
        if seq == 0:
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
            if kind not in KINDS or kind == "provenance-entry":
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


def parse_heads(values):
    heads = []
    for v in values:
        seq, _, digest = v.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            unusable(f"--head {v!r} is not SEQ:HASH (a sequence number and 64 hex characters)")
        try:
            heads.append((int(seq), bytes.fromhex(digest)))
        except ValueError:
            unusable(f"--head {v!r} is not SEQ:HASH (a sequence number and 64 hex characters)")
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
    args = ap.parse_args()
    report = Report()
    trusted = read_rosters(args.roster)
    heads = parse_heads(args.head)
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
    by_seq = check_order(lines, unreadable, report)
    check_chain(by_seq, report)
    keys = Keys(trusted)
    check_rosters(lines, keys, report)
    check_objects(lines, keys, report)
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
        f"intact: {len(lines)} entries (0 to {last.seq}), head {last.seq} {last.hash.hex()}; every hash, prev link and "
        f"JSON field checked; {keys.count} signed object(s) verified, {authors}"
        + (f"; {len(heads)} head(s) given found" if heads else "; no --head given: the head is not anchored")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
