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
    "checkpoint": ("member", 2048),
    "provenance-entry": (None, 262144),
}

# docs/protocol.md, "Entry kinds".
ENTRY_KINDS = (
    "roster-installed", "published", "withdrawn", "request-sent", "request-received",
    "decision-made", "decision-received", "grant-issued", "grant-received", "revocation-issued",
    "revocation-received", "exchange-served", "exchange-received", "exchange-refused",
    "receipt-received", "query-served", "query-answered",
)  # fmt: skip

ENTRY_FIELDS = ("v", "seq", "time", "kind", "dataset", "peer", "exchange", "note", "objects", "prev")

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
    if kind not in KINDS or kind in ("roster", "provenance-entry"):
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
