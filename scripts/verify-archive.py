#!/usr/bin/env python3
"""Checks a directory of sealed provenance segments (`deltafed provenance archive`) on its own.

Independent of deltafed's code: Python cbor2 (decoding only), PyNaCl (libsodium) and blake3,
with the canonical encoder of scripts/deltafed_objects.py. docs/audit.md ("Sealed archives")
describes the format and every check:

- every `*.dfseg` file starts with the magic and holds length-prefixed records: a canonical CBOR
  header, the member's signed checkpoint, then the entries' canonical bytes in seq order;
- the header has exactly its fields, `v` = 1, and the file is named after it;
- the checkpoint verifies under the roster key of the header's member and names the header's
  last seq and head;
- the entries are `first` to `last`, each one canonical CBOR, its `prev` the hash of the one
  before (the header's `prev` for the first), the last one's hash the header's `head`, their
  times within the header's `min_time` and `max_time`;
- the files, in name order, start at entry 0 and follow each other with no gap: each one's
  `previous` is the BLAKE3 of the whole file before it (zeros for the first).

    pip install cbor2 pynacl blake3
    python3 scripts/verify-archive.py ARCHIVE_DIR --roster roster.cbor

Prints one line per problem, then a summary with the last archived entry: a live-log export
that continues the archive is checked with `verify-export.py EXPORT --after SEQ:HASH`. Exit
status 0 only when the archive is intact; 1 when it is not; 2 when the arguments are wrong.
"""

import argparse
import sys
from pathlib import Path

import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deltafed_objects import (  # noqa: E402
    KINDS,
    Invalid,
    decode_roster,
    decode_signed,
    decode_strict,
    entry_hash,
    is_bytes,
    is_uint,
    roster_keys,
)

MAGIC = b"deltafed/v1/provenance-segment\n"
HEADER_FIELDS = {"v", "member", "first", "last", "prev", "head", "previous", "min_time", "max_time"}
HEADER_MAX = 1024
ZERO = bytes(32)


class Truncated(Exception):
    pass


class Segment:
    """A segment file read record by record, hashing every byte."""

    def __init__(self, path):
        self.f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.hasher = blake3.blake3()
        magic = self.f.read(len(MAGIC))
        if magic != MAGIC:
            raise Invalid("it does not start with the segment magic (not a deltafed segment file)")
        self.hasher.update(magic)

    def record(self, limit):
        """The next record's bytes, None at a clean end of the file."""
        length = self.f.read(4)
        if not length:
            return None
        if len(length) < 4:
            raise Truncated()
        n = int.from_bytes(length, "big")
        if n > limit:
            raise Invalid(f"a record is {n} bytes, over the limit of {limit}")
        data = self.f.read(n)
        if len(data) < n:
            raise Truncated()
        self.hasher.update(length)
        self.hasher.update(data)
        return data

    def close(self):
        self.f.close()


def check_segment(path, keys, before, problems):
    """Checks one file; returns (header, file hash) or None when it cannot be read at all."""
    name = path.name

    def problem(text):
        problems.append(f"segment {name}: {text}")

    try:
        seg = Segment(path)
    except (OSError, Invalid) as e:
        problem(str(e))
        return None
    try:
        raw = seg.record(HEADER_MAX)
        if raw is None:
            raise Truncated()
        h = decode_strict(raw, HEADER_MAX)
        if not isinstance(h, dict) or set(h) != HEADER_FIELDS:
            raise Invalid(f"its header does not have exactly the fields {sorted(HEADER_FIELDS)}")
        if h["v"] != 1:
            raise Invalid(f"its header has v = {h['v']!r}, not 1")
        if not all(is_uint(h[k]) for k in ("first", "last", "min_time", "max_time")) or h["first"] > h["last"]:
            raise Invalid("its header's seqs or times are not unsigned integers in order")
        if not all(is_bytes(h[k], 32) for k in ("prev", "head", "previous")) or not isinstance(h["member"], str):
            raise Invalid("its header's hashes are not 32 bytes, or its member is not text")
        expected_name = f"{h['member']}-{h['first']:020}-{h['last']:020}.dfseg"
        if name != expected_name:
            problem(f"its header says it holds entries {h['first']} to {h['last']}: it should be named {expected_name}")
        cp_raw = seg.record(KINDS["checkpoint"][1])
        if cp_raw is None:
            raise Truncated()
        check_checkpoint(cp_raw, h, keys, problem)
        check_link(h, before, problem)
        seq, prev, last_hash, times = h["first"], None, None, []
        while (e_raw := seg.record(KINDS["provenance-entry"][1])) is not None:
            try:
                e = decode_strict(e_raw, KINDS["provenance-entry"][1])
                if not isinstance(e, dict) or e.get("seq") != seq or e.get("v") != 1:
                    problem(f"record {seq - h['first'] + 2} is not entry {seq} (v 1)")
                want = h["prev"] if seq == h["first"] else prev
                if e.get("prev") != want:
                    problem(f"entry {seq}: prev does not match the hash of entry {seq - 1}")
                if is_uint(e.get("time")):
                    times.append(e["time"])
            except Invalid as err:
                problem(f"entry {seq}: {err}")
            prev = last_hash = entry_hash(e_raw)
            seq += 1
        if seq != h["last"] + 1:
            problem(f"it holds entries {h['first']} to {seq - 1}, its header says {h['first']} to {h['last']}")
        elif last_hash != h["head"]:
            problem(f"its last entry {h['last']} has hash {last_hash.hex()}, its header says {h['head'].hex()}")
        if times and (min(times), max(times)) != (h["min_time"], h["max_time"]):
            problem(f"its header's times {h['min_time']} to {h['max_time']} are not its entries' range")
        return h, seg.hasher.digest()
    except Truncated:
        problem("it ends in the middle of a record (truncated?)")
    except Invalid as e:
        problem(str(e))
    finally:
        seg.close()
    return None


def check_checkpoint(raw, h, keys, problem):
    try:
        body, signer = decode_signed("checkpoint", raw)
    except Invalid as e:
        problem(f"its checkpoint {e}")
        return
    key = keys.get(h["member"])
    if body.get("member") != h["member"]:
        problem(f"its checkpoint names member {body.get('member')!r}, not {h['member']}")
    elif key is None:
        problem(f"{h['member']} is not in the roster given")
    elif signer != key:
        problem(f"its checkpoint is signed by key {signer.hex()}, not {h['member']}'s roster key {key.hex()}")
    if body.get("seq") != h["last"] or body.get("head") != h["head"]:
        problem(f"its checkpoint covers entry {body.get('seq')}, not its last entry {h['last']} with its head")


def check_link(h, before, problem):
    if before is None:
        if h["first"] != 0:
            problem(f"it is the oldest segment but starts at entry {h['first']}: the segments before it are missing")
        elif h["prev"] != ZERO or h["previous"] != ZERO:
            problem("it starts the log but its prev or previous is not 32 zero bytes")
        return
    (bh, bname, bhash) = before
    if h["first"] > bh["last"] + 1:
        problem(f"entries {bh['last'] + 1} to {h['first'] - 1} are missing after segment {bname} (a segment dropped?)")
    elif h["first"] <= bh["last"]:
        problem(f"it starts at entry {h['first']}, inside segment {bname}: segments overlap or are out of order")
    elif h["prev"] != bh["head"]:
        problem(f"its first entry's prev is not the hash of the last entry of {bname}")
    if h["previous"] != bhash:
        problem(f"it names the previous file's hash {h['previous'].hex()}, but {bname} hashes to {bhash.hex()}")


def main():
    ap = argparse.ArgumentParser(
        description="Check a directory of deltafed provenance segments on its own (docs/audit.md).",
        epilog="Exit status: 0 intact, 1 not intact, 2 unreadable input or bad arguments.",
    )
    ap.add_argument("archive", metavar="ARCHIVE_DIR", help="the directory `deltafed provenance archive` wrote")
    ap.add_argument("--roster", required=True, metavar="ROSTER.cbor", help="the federation's roster")
    args = ap.parse_args()
    try:
        roster, _ = decode_roster(Path(args.roster).read_bytes())
    except (OSError, Invalid) as e:
        print(f"error: the roster {args.roster} cannot be used: {e}", file=sys.stderr)
        return 2
    files = sorted(p for p in Path(args.archive).glob("*.dfseg") if not p.name.startswith("."))
    problems, before, entries = [], None, 0
    if not files:
        problems.append(f"{args.archive} holds no segment files (*.dfseg)")
    for path in files:
        got = check_segment(path, roster_keys(roster), before, problems)
        if got is not None:
            h, digest = got
            entries += h["last"] - h["first"] + 1
            before = (h, path.name, digest)
    for p in problems:
        print(p)
    if problems:
        print(f"NOT INTACT: {len(problems)} problem(s) in {len(files)} segment(s)")
        return 1
    h = before[0]
    print(
        f"intact: {len(files)} segment(s) of {h['member']}, entries 0 to {h['last']} ({entries}), "
        f"last hash {h['head'].hex()}; an export of the live log continues it: "
        f"verify-export.py EXPORT --after {h['last']}:{h['head'].hex()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
