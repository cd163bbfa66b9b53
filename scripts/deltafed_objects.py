"""deltafed's objects as docs/protocol.md defines them, for the independent checkers.

Shared by scripts/check-vectors.py (the test vectors against the page) and
scripts/verify-export.py (an auditor's check of `deltafed provenance export`). Only cbor2
(decoding), PyNaCl (ed25519, libsodium) and blake3: nothing here comes from the Rust code.

The tag table (author field and size limit of every kind) and the entry kinds are written out
below; check-vectors.py compares them with docs/protocol.md, so they cannot drift from the page.
"""

import re

import blake3
import cbor2
import nacl.exceptions
import nacl.signing

PREFIX = "deltafed/v1/"
MAX_TIME = 253402300799999  # 9999-12-31T23:59:59.999Z, as docs/protocol.md says

# docs/protocol.md, "Signatures and domain tags": kind (the tag without deltafed/v1/) ->
# (the body field naming the author, or None, largest encoding in bytes).
KINDS = {
    "roster": (None, 1048576),
    "manifest": ("publisher", 49152),
    "withdrawal": ("publisher", 8192),
    "access-request": ("requester", 16384),
    "decision": ("provider", 8192),
    "grant": ("provider", 16384),
    "revocation": ("provider", 8192),
    "fetch-request": ("requester", 4096),
    "ticket": ("provider", 16384),
    "receipt": ("requester", 4096),
    "query-request": ("requester", 8192),
    "query-answer": ("provider", 16384),
    "call": (None, 2048),
    "call-batch": ("requester", 2048),
    "call-result": (None, 4096),
    "call-answer": ("provider", 2048),
    "checkpoint": ("member", 2048),
    "provenance-entry": (None, 262144),
}

# Kinds in the tag table that are not `Signed` envelopes: the roster collects many signatures,
# an entry is chained, not signed, and a call or a call result is a Merkle leaf under a signed
# batch or answer (its tag prefixes its leaf hash).
UNSIGNED_KINDS = ("roster", "provenance-entry", "call", "call-result")

# docs/protocol.md, "Entry kinds".
ENTRY_KINDS = (
    "roster-installed", "published", "withdrawn", "request-sent", "request-received",
    "decision-made", "decision-received", "grant-issued", "grant-received", "revocation-issued",
    "revocation-received", "exchange-served", "exchange-received", "exchange-refused",
    "receipt-received", "query-served", "query-answered", "calls-served", "calls-answered",
)  # fmt: skip

ENTRY_FIELDS = ("v", "seq", "time", "kind", "dataset", "peer", "exchange", "note", "objects", "prev", "calls")
# Fields of the Entry table marked `or absent`: left out of the encoding when empty.
ENTRY_OPTIONAL = ("calls",)
# The entry kinds that carry `calls` (and a signed call batch and answer).
CALL_ENTRY_KINDS = ("calls-served", "calls-answered")

MEMBER_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
DATASET_ID = re.compile(r"[a-z](?:[a-z0-9._-]{0,62}[a-z0-9._])?")


class Invalid(Exception):
    """Bytes that are not the object they should be; the message says why."""


# --- canonical CBOR (RFC 8949 4.2.1, as docs/protocol.md restricts it) ---------------------------


def head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | extra]) + n.to_bytes(size, "big")
    raise ValueError(f"integer {n} does not fit 64 bits")


def canonical(value):
    if value is None:
        return b"\xf6"
    if value is False or value is True:
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return head(3, len(raw)) + raw
    if isinstance(value, list):
        return head(4, len(value)) + b"".join(canonical(v) for v in value)
    if isinstance(value, dict):
        items = sorted((canonical(k), canonical(v)) for k, v in value.items())
        return head(5, len(items)) + b"".join(k + v for k, v in items)
    raise ValueError(f"{type(value).__name__} has no place in a deltafed object (float or tag?)")


def decode_strict(data, limit):
    """The one value `data` encodes, which must be canonical and at most `limit` bytes."""
    if len(data) > limit:
        raise Invalid(f"is {len(data)} bytes, over the limit of {limit}")
    try:
        value = cbor2.loads(data)
        again = canonical(value)
    except Exception as e:  # noqa: BLE001 - any decoding problem makes the bytes invalid
        raise Invalid(f"cannot be decoded: {e}") from None
    if again != data:
        raise Invalid("does not re-encode to the same bytes: not canonical CBOR")
    return value


# --- hashes, keys and signatures -------------------------------------------------------------


def b3(data):
    return blake3.blake3(data).digest()


def entry_hash(raw):
    """BLAKE3("deltafed/v1/provenance-entry" || 0x00 || canonical(entry))."""
    return b3((PREFIX + "provenance-entry").encode() + b"\x00" + raw)


def signature_ok(key, tag, body_bytes, sig):
    """Whether `sig` by `key` verifies over `tag || 0x00 || body_bytes`."""
    try:
        nacl.signing.VerifyKey(key).verify(tag.encode() + b"\x00" + body_bytes, sig)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        return False


def peer_id(public_key):
    """libp2p PeerId text: base58btc of the identity multihash of the protobuf public key."""
    proto = bytes([0x08, 0x01, 0x12, 0x20]) + public_key
    raw = bytes([0x00, len(proto)]) + proto
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n, text = int.from_bytes(raw, "big"), ""
    while n:
        n, r = divmod(n, 58)
        text = alphabet[r] + text
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + text


def is_uint(value, bits=64):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << bits


def is_bytes(value, n=None):
    return isinstance(value, bytes) and (n is None or len(value) == n)


# --- signed objects --------------------------------------------------------------------------


def decode_signed(kind, data):
    """A `Signed` envelope of `kind`: canonical, `{body, signer, sig}`, `v` = 1, and a signature
    that verifies under `signer`. Returns (body, signer); whether the signer is the author's
    roster key is the caller's question (author field: KINDS[kind][0])."""
    if kind not in KINDS or kind in UNSIGNED_KINDS:
        raise Invalid(f"{kind!r} is not a kind of signed object")
    env = decode_strict(data, KINDS[kind][1])
    if not isinstance(env, dict) or set(env) != {"body", "signer", "sig"}:
        got = sorted(env) if isinstance(env, dict) else type(env).__name__
        raise Invalid(f"is not a Signed envelope {{body, signer, sig}} (has {got})")
    body, signer, sig = env["body"], env["signer"], env["sig"]
    if not isinstance(body, dict):
        raise Invalid("its body is not a map")
    if body.get("v") != 1:
        raise Invalid(f"its body has v = {body.get('v')!r}, not 1")
    if not is_bytes(signer, 32) or not is_bytes(sig, 64):
        raise Invalid("signer must be 32 bytes and sig 64 bytes")
    if not signature_ok(signer, PREFIX + kind, canonical(body), sig):
        raise Invalid(f"the signature does not verify over {PREFIX}{kind} || 0x00 || body with its signer key")
    return body, signer


def decode_roster(data):
    """A `SignedRoster`, valid on its own (docs/trust-model.md): canonical, its members' keys
    unique, every signature verifying, at least `threshold` distinct members of it signed.
    Returns (roster, keys of the distinct valid signers)."""
    sr = decode_strict(data, KINDS["roster"][1])
    if not isinstance(sr, dict) or set(sr) != {"roster", "sigs"}:
        raise Invalid("is not a SignedRoster {roster, sigs}")
    roster, sigs = sr["roster"], sr["sigs"]
    if not isinstance(roster, dict) or set(roster) != {"v", "federation", "version", "threshold", "members"}:
        raise Invalid("its roster does not have the fields v, federation, version, threshold, members")
    if roster["v"] != 1:
        raise Invalid(f"its roster has v = {roster['v']!r}, not 1")
    members = roster["members"]
    if not isinstance(members, list) or not members:
        raise Invalid("its roster lists no members")
    for m in members:
        if not isinstance(m, dict) or set(m) != {"id", "name", "key", "addrs"} or not is_bytes(m["key"], 32):
            raise Invalid("a member is not {id, name, key (32 bytes), addrs}")
        if not isinstance(m["id"], str) or not MEMBER_ID.fullmatch(m["id"]):
            raise Invalid(f"member id {m['id']!r} is not a member id")
    ids, keys = [m["id"] for m in members], [m["key"] for m in members]
    if len(set(ids)) != len(ids) or len(set(keys)) != len(keys):
        raise Invalid("its roster lists a member id or key twice")
    threshold = roster["threshold"]
    if not is_uint(threshold, 32) or not 1 <= threshold <= len(members):
        raise Invalid(f"threshold {threshold!r} is not between 1 and the number of members")
    if not isinstance(sigs, list):
        raise Invalid("sigs is not a list")
    body = canonical(roster)
    signers = set()
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or set(s) != {"key", "sig"} or not is_bytes(s["key"], 32):
            raise Invalid(f"sigs[{i}] is not {{key, sig}}")
        if not is_bytes(s["sig"], 64) or not signature_ok(s["key"], PREFIX + "roster", body, s["sig"]):
            raise Invalid(f"sigs[{i}] does not verify")
        signers.add(s["key"])
    own = signers & set(keys)
    if len(own) < threshold:
        raise Invalid(f"only {len(own)} distinct members signed it, below its threshold of {threshold}")
    return roster, signers


def roster_keys(roster):
    """Member id -> public key."""
    return {m["id"]: m["key"] for m in roster["members"]}


# --- sharing calls: the Merkle tree of a batch (docs/protocol.md, "Sharing calls") ---------------


def merkle_leaf(kind, data):
    """BLAKE3(0x00 || "deltafed/v1/" + kind || 0x00 || data): the leaf of one encoded call or result."""
    return b3(b"\x00" + (PREFIX + kind).encode() + b"\x00" + data)


def merkle_node(left, right):
    """BLAKE3(0x01 || left || right)."""
    return b3(b"\x01" + left + right)


def _split(n):
    """The largest power of two strictly below n (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def merkle_root(leaves):
    """RFC 6962 section 2.1 with BLAKE3; the empty tree's root is BLAKE3 of nothing."""
    if not leaves:
        return b3(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return merkle_node(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def merkle_proof(leaves, index):
    """The audit path of leaf `index`: sibling hashes from the leaf up to the root."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} of a tree of {len(leaves)}")
    siblings, lo, hi = [], 0, len(leaves)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            siblings.append(merkle_root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            siblings.append(merkle_root(leaves[lo : lo + k]))
            lo += k
    return siblings[::-1]


def merkle_verify(leaf, index, size, path, root):
    """Whether `leaf` is leaf `index` of a tree of `size` leaves with `root`, by the audit path
    `path` (RFC 9162 section 2.1.3.2, verifying an inclusion proof)."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = merkle_node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = merkle_node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def key_commitment(salt, key):
    """What a call holds instead of its key: BLAKE3 derive-key("deltafed/v1/call-key") over
    salt || key. The salt travels beside the call and is never logged."""
    return blake3.blake3(salt + key.encode("utf-8"), derive_key_context=PREFIX + "call-key").digest()


CALL_FIELDS = ("v", "salt", "dataset", "grant", "key", "app", "on_behalf_of")
MAX_BATCH = 256  # most calls in one batch
MAX_LABEL_BYTES = 256  # an app name or on-behalf-of value


def outcome_problem(o):
    """None when `o` is a call `Outcome` (docs/protocol.md, `CallOutcome`), else why not."""
    if o == "deferred":
        return None
    if not isinstance(o, dict) or len(o) != 1 or next(iter(o)) not in ("answered", "refused"):
        return f"{o!r:.60} is not an outcome ({{answered: ...}}, {{refused: ...}} or \"deferred\")"
    (variant, data), = o.items()
    if variant == "refused":
        if not isinstance(data, dict) or set(data) != {"reason"} or not isinstance(data["reason"], str):
            return "a refused outcome is not {reason: text}"
        return None
    if not isinstance(data, dict) or set(data) != {"version", "fields", "records", "count"}:
        return "an answered outcome is not {version, fields, records, count}"
    if not is_uint(data["version"]) or not is_uint(data["count"]) or not is_bytes(data["records"], 32):
        return "an answered outcome needs version and count uints and records of 32 bytes"
    f = data["fields"]
    if f is not None and not (isinstance(f, list) and all(isinstance(x, str) for x in f)):
        return "an answered outcome's fields are not a list of text or null"
    return None


def decode_call(data):
    """A `Call` in its canonical bytes (a leaf of a signed batch). Returns the map."""
    c = decode_strict(data, KINDS["call"][1])
    if not isinstance(c, dict) or set(c) != set(CALL_FIELDS):
        got = sorted(c) if isinstance(c, dict) else type(c).__name__
        raise Invalid(f"is not a Call: its fields are {got}, not {sorted(CALL_FIELDS)}")
    if c["v"] != 1:
        raise Invalid(f"is a call of v = {c['v']!r}, not 1")
    if not is_bytes(c["salt"], 16) or not is_bytes(c["key"], 32):
        raise Invalid("is not a Call: salt must be 16 bytes and key 32")
    if not isinstance(c["dataset"], str) or not DATASET_ID.fullmatch(c["dataset"]):
        raise Invalid(f"is not a Call: dataset {c['dataset']!r} is not a dataset id")
    if c["grant"] is not None and not is_bytes(c["grant"], 16):
        raise Invalid("is not a Call: grant is not 16 bytes or null")
    for f in ("app", "on_behalf_of"):
        if c[f] is not None and not isinstance(c[f], str):
            raise Invalid(f"is not a Call: {f} is not text or null")
    return c


def call_salt(call_bytes):
    """The salt a call's result repeats: the call's own, or zeros for a call that does not
    decode (as the provider writes it)."""
    try:
        return decode_call(call_bytes)["salt"]
    except Invalid:
        return bytes(16)


def result_of(leaf, call_bytes, outcome):
    """The canonical `CallResult` bytes of a logged call (its leaf, its salt, its outcome)."""
    return canonical({"v": 1, "call": leaf, "salt": call_salt(call_bytes), "outcome": outcome})


def decode_call_result(data):
    """A `CallResult` in its canonical bytes (a leaf of a signed answer). Returns the map."""
    r = decode_strict(data, KINDS["call-result"][1])
    if not isinstance(r, dict) or set(r) != {"v", "call", "salt", "outcome"}:
        got = sorted(r) if isinstance(r, dict) else type(r).__name__
        raise Invalid(f"is not a CallResult: its fields are {got}, not ['call', 'outcome', 'salt', 'v']")
    if r["v"] != 1:
        raise Invalid(f"is a call result of v = {r['v']!r}, not 1")
    if not is_bytes(r["call"], 32) or not is_bytes(r["salt"], 16):
        raise Invalid("is not a CallResult: call is not 32 bytes or salt not 16")
    why = outcome_problem(r["outcome"])
    if why:
        raise Invalid(f"is not a CallResult: {why}")
    return r


def check_call_pair(batch_bytes, answer_bytes):
    """The signed `CallBatch` and `CallAnswer` of one exchange of calls: each decoded and its
    signature verified (the signers' roster keys are the caller's question), and the answer is
    for exactly this batch. Returns (batch body, batch signer, answer body, answer signer,
    problems): the bodies are None when an object does not verify."""
    problems = []
    batch = answer = bsigner = asigner = None
    try:
        batch, bsigner = decode_signed("call-batch", batch_bytes)
        if set(batch) != {"v", "requester", "provider", "nonce", "time", "count", "root"}:
            raise Invalid(f"is not a CallBatch: its fields are {sorted(batch)}")
        if not is_uint(batch["count"]) or not 1 <= batch["count"] <= MAX_BATCH or not is_bytes(batch["root"], 32):
            raise Invalid(f"is not a CallBatch: count must be 1 to {MAX_BATCH} and root 32 bytes")
        if not is_uint(batch["time"]) or batch["time"] > MAX_TIME:
            raise Invalid("is not a CallBatch: time is not a time")
    except Invalid as e:
        problems.append(f"the call-batch {e}")
        batch = None
    try:
        answer, asigner = decode_signed("call-answer", answer_bytes)
        if set(answer) != {"v", "batch", "exchange", "provider", "requester", "count", "root", "time"}:
            raise Invalid(f"is not a CallAnswer: its fields are {sorted(answer)}")
        if not is_bytes(answer["batch"], 32) or not is_bytes(answer["root"], 32) or not is_uint(answer["count"], 32):
            raise Invalid("is not a CallAnswer: batch and root must be 32 bytes and count a uint")
        if not is_uint(answer["time"]) or answer["time"] > MAX_TIME:
            raise Invalid("is not a CallAnswer: time is not a time")
    except Invalid as e:
        problems.append(f"the call-answer {e}")
        answer = None
    if batch is not None and answer is not None:
        if answer["batch"] != b3(batch_bytes):
            problems.append(
                f"the call-answer names batch {answer['batch'].hex()[:16]}…, not this call-batch "
                f"(BLAKE3 of its bytes: {b3(batch_bytes).hex()[:16]}…)"
            )
        for f in ("requester", "provider", "count"):
            if answer[f] != batch[f]:
                problems.append(f"the call-answer's {f} is {answer[f]!r}, the call-batch's {batch[f]!r}")
    return batch, bsigner, answer, asigner, problems


def check_call_proofs(view, batch, answer):
    """One call of an export line (its `index`, `call`, `leaf`, `proof`, `result`, `result_leaf`,
    `result_proof`) against the signed batch and answer bodies. Nothing else of the batch is
    needed. Returns (call, result, problems): call and result decoded, or None."""
    problems = []
    count = batch["count"]

    def hexes(name, n=None):
        v = view.get(name)
        try:
            out = [bytes.fromhex(h) for h in v] if n is None else bytes.fromhex(v)
        except (TypeError, ValueError, AttributeError):
            problems.append(f"{name} is not {'a list of hex hashes' if n is None else 'hex'}")
            return None
        if n is None and not all(len(h) == 32 for h in out):
            problems.append(f"{name} holds a value that is not a 32-byte hash")
            return None
        return out

    index = view.get("index")
    if not is_uint(index):
        problems.append(f"index {index!r} is not a number")
        return None, None, problems
    if index >= count:
        problems.append(f"index {index} is not below the signed batch's count, {count}")
    call_bytes = hexes("call", 0)
    proof = hexes("proof")
    call = result = None
    leaf = None
    if call_bytes is not None:
        leaf = merkle_leaf("call", call_bytes)
        try:
            call = decode_call(call_bytes)
        except Invalid as e:
            problems.append(f"the call {e}")
        if view.get("leaf") != leaf.hex():
            problems.append(
                f"leaf {str(view.get('leaf'))[:16]}… is not the leaf hash of call "
                f"(BLAKE3(0x00 || \"deltafed/v1/call\" || 0x00 || call) = {leaf.hex()[:16]}…)"
            )
        if proof is not None and not merkle_verify(leaf, index, count, proof, batch["root"]):
            problems.append(
                f"the proof does not verify the call's leaf {leaf.hex()[:16]}… at index {index} of {count} under "
                f"the signed batch's root {batch['root'].hex()[:16]}…: this call is not the one "
                f"{batch['requester']} signed at that place"
            )
    result_bytes = hexes("result", 0)
    result_proof = hexes("result_proof")
    if result_bytes is not None:
        rleaf = merkle_leaf("call-result", result_bytes)
        try:
            result = decode_call_result(result_bytes)
        except Invalid as e:
            problems.append(f"the result {e}")
        if result is not None and leaf is not None and result["call"] != leaf:
            problems.append(
                f"the result answers call {result['call'].hex()[:16]}…, not this call ({leaf.hex()[:16]}…)"
            )
        if view.get("result_leaf") != rleaf.hex():
            problems.append(
                f"result_leaf {str(view.get('result_leaf'))[:16]}… is not the leaf hash of result "
                f"({rleaf.hex()[:16]}…)"
            )
        if result_proof is not None and not merkle_verify(rleaf, index, count, result_proof, answer["root"]):
            problems.append(
                f"result_proof does not verify the result's leaf {rleaf.hex()[:16]}… at index {index} of {count} "
                f"under the signed answer's root {answer['root'].hex()[:16]}…: this is not the outcome "
                f"{answer['provider']} signed for it"
            )
    return call, result, problems
