//! What the fuzz targets share: the properties every decoded object must have (checked the same
//! way whether the bytes came straight from the fuzzer or out of a network message), an
//! allocation meter for "decoding never allocates without bound", and the committed test vectors
//! (keys, the roster) that give the checks something to sign and verify with.
//!
//! A property that does not hold panics with a message saying which one, so libFuzzer saves the
//! input as a crash like any other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use deltafed_protocol::access::{AccessRequest, Decision, Grant, Revocation};
use deltafed_protocol::exchange::{FetchRequest, QueryAnswer, QueryRequest, Receipt, Ticket};
use deltafed_protocol::manifest::{Manifest, Withdrawal};
use deltafed_protocol::provenance::{Checkpoint, Entry};
use deltafed_protocol::roster::{Roster, SignedRoster};
use deltafed_protocol::wire::{self, Delivery, Gossip, Request, Response};
use deltafed_protocol::{Authored, Object, PublicKey, SecretKey, Signature, Signed, cbor, signed};
use serde::Serialize;

// ---------------------------------------------------------------------------------------------
// Allocation meter

/// Counts the bytes the Rust allocator hands out (C++ allocations, such as RocksDB's, are not
/// seen), and the peak since [`bounded`] last reset it.
struct Metered;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is passed straight to `System`; the counters are only bookkeeping.
unsafe impl GlobalAlloc for Metered {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Metered = Metered;

/// Bytes a decoder may hold at its peak per byte of input: a parsed CBOR value tree costs a few
/// dozen bytes per input byte (one 32-byte `Value` per item, vectors growing by doubling), and
/// then serde builds the typed value beside it.
pub const PER_INPUT_BYTE: usize = 128;
/// Fixed allowance on top: buffers (256 KiB I/O chunks), capped preallocations (serde allows
/// up to 1 MiB per sequence, cbor4ii 256 items per open array), tables built once.
pub const ALLOWANCE: usize = 8 << 20;

/// Runs `f` and panics if it allocated, at its peak, more than [`PER_INPUT_BYTE`] per input
/// byte plus `allowance`: a decoder that sizes something from a length field instead of from
/// the bytes it has (`Vec::with_capacity(n)` for a claimed `n`) fails this long before it
/// exhausts the machine.
pub fn bounded<R>(what: &str, input_len: usize, allowance: usize, f: impl FnOnce() -> R) -> R {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let result = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(start);
    let limit = PER_INPUT_BYTE.saturating_mul(input_len).saturating_add(allowance);
    assert!(
        peak <= limit,
        "unbounded allocation: {what} of a {input_len}-byte input allocated {peak} bytes at its peak, over \
         {PER_INPUT_BYTE} per input byte + {allowance} ({limit})"
    );
    result
}

// ---------------------------------------------------------------------------------------------
// Triage

/// With `DELTAFED_FUZZ_VERBOSE` set, the targets say on stderr what they accepted and why they
/// refused the rest: run a target over a corpus directory with `-runs=0` to see which seeds reach
/// the deep end.
pub fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("DELTAFED_FUZZ_VERBOSE").is_some())
}

/// Says (when [`verbose`]) that `what` was accepted, or refused and why.
pub fn outcome<T, E: std::fmt::Display>(what: &str, result: &Result<T, E>) {
    if verbose() {
        match result {
            Ok(_) => eprintln!("{what}: accepted"),
            Err(e) => eprintln!("{what}: refused: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Test vectors and keys

const VECTORS: &str = include_str!("../../protocol/tests/vectors.json");

/// The encoded bytes of vector `name` in `protocol/tests/vectors.json`.
pub fn vector(name: &str) -> Vec<u8> {
    static PARSED: OnceLock<BTreeMap<String, serde_json::Value>> = OnceLock::new();
    let all = PARSED.get_or_init(|| serde_json::from_str(VECTORS).expect("vectors.json parses"));
    let encoded = all.get(name).and_then(|v| v.get("encoded")).and_then(|v| v.as_str()).expect("vector present");
    hex::decode(encoded).expect("vector is hex")
}

/// The vectors' keys: seed `[i; 32]`, for i in 1..=4 (shanghai, jiangsu, zhejiang, anhui).
pub fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

/// The roster of the vectors (4 members, threshold 3): the roster in force for author checks.
pub fn vector_roster() -> &'static Roster {
    static ROSTER: OnceLock<Roster> = OnceLock::new();
    ROSTER.get_or_init(|| SignedRoster::decode(&vector("roster")).expect("the roster vector decodes").roster)
}

/// At most the first 2 KiB of `bytes` in hex, for panic messages (the full input is the saved
/// crash file).
pub fn short_hex(bytes: &[u8]) -> String {
    let cut = bytes.len().min(2048);
    let more = if cut < bytes.len() { format!("... ({} bytes)", bytes.len()) } else { String::new() };
    format!("{}{more}", hex::encode(&bytes[..cut]))
}

// ---------------------------------------------------------------------------------------------
// Signed objects

/// The envelope's fields as they are written (`cbor::encode` sorts the keys).
#[derive(Serialize)]
struct Envelope<'a, T> {
    body: &'a T,
    signer: &'a PublicKey,
    sig: &'a Signature,
}

/// Keys the canonical re-encoding has and the input lacks (or the other way round), top level
/// and inside `body`: says at once whether a mismatch is an omitted field.
fn key_difference(input: &[u8], again: &[u8]) -> String {
    fn parse(bytes: &[u8]) -> Option<cbor4ii::core::Value> {
        use cbor4ii::core::dec::Decode;
        cbor4ii::core::Value::decode(&mut cbor4ii::core::utils::SliceReader::new(bytes)).ok()
    }
    fn keys(v: &cbor4ii::core::Value) -> Vec<String> {
        match v {
            cbor4ii::core::Value::Map(entries) => entries.iter().map(|(k, _)| format!("{k:?}")).collect(),
            _ => Vec::new(),
        }
    }
    fn body(v: &cbor4ii::core::Value) -> Option<&cbor4ii::core::Value> {
        match v {
            cbor4ii::core::Value::Map(entries) => {
                entries.iter().find(|(k, _)| matches!(k, cbor4ii::core::Value::Text(t) if t == "body")).map(|(_, v)| v)
            }
            _ => None,
        }
    }
    let (Some(a), Some(b)) = (parse(input), parse(again)) else {
        return String::new();
    };
    let mut notes = Vec::new();
    let mut compare = |level: &str, a: &cbor4ii::core::Value, b: &cbor4ii::core::Value| {
        let (ka, kb) = (keys(a), keys(b));
        let lacks: Vec<_> = kb.iter().filter(|k| !ka.contains(k)).cloned().collect();
        let extra: Vec<_> = ka.iter().filter(|k| !kb.contains(k)).cloned().collect();
        if !lacks.is_empty() {
            notes.push(format!("{level}: the input lacks {}", lacks.join(", ")));
        }
        if !extra.is_empty() {
            notes.push(format!("{level}: the input has {} the re-encoding drops", extra.join(", ")));
        }
    };
    compare("top level", &a, &b);
    if let (Some(ba), Some(bb)) = (body(&a), body(&b)) {
        compare("body", ba, bb);
    }
    notes.join("; ")
}

/// Decodes `bytes` as a `Signed<T>` as a node would, and when it is accepted checks what that
/// promises: within the kind's limit, keeps exactly its input bytes, re-encodes canonically to
/// exactly those bytes (one encoding per object), decodes the same again and from trusted bytes,
/// and the roster check agrees with `decode_from_member`.
pub fn check_signed<T>(bytes: &[u8]) -> Option<Signed<T>>
where
    T: Authored + PartialEq + Debug,
{
    let kind = T::KIND.name();
    let decoded = Signed::<T>::decode(bytes);
    outcome(kind, &decoded);
    let from_member = Signed::<T>::decode_from_member(bytes, vector_roster());
    let s = match decoded {
        Ok(s) => s,
        Err(e) => {
            assert!(from_member.is_err(), "{kind}: decode refused ({e}) what decode_from_member accepted");
            let _ = e.to_string();
            return None;
        }
    };
    assert!(bytes.len() <= T::MAX_SIZE, "{kind}: accepted {} bytes, over its limit of {}", bytes.len(), T::MAX_SIZE);
    assert_eq!(s.as_bytes(), bytes, "{kind}: the decoded object does not keep its input bytes");
    let again = cbor::encode(kind, &Envelope { body: s.body(), signer: s.signer(), sig: s.signature() })
        .unwrap_or_else(|e| panic!("{kind}: an accepted object does not encode again: {e}"));
    if again != bytes {
        panic!(
            "{kind}: accepted a signed object that does not re-encode to its input (two encodings of one \
             signed object: its hash and stored bytes depend on who relayed it). {}\ninput      {}\nre-encoded {}",
            key_difference(bytes, &again),
            short_hex(bytes),
            short_hex(&again)
        );
    }
    let trusted = Signed::<T>::from_trusted_bytes(bytes)
        .unwrap_or_else(|e| panic!("{kind}: accepted bytes do not decode as trusted bytes: {e}"));
    assert_eq!(trusted, s, "{kind}: trusted decoding disagrees");
    assert_eq!(Signed::<T>::decode(s.as_bytes()).as_ref(), Ok(&s), "{kind}: decoding is not deterministic");
    match (s.check_signer(vector_roster()), from_member) {
        (Ok(()), Ok(m)) => assert_eq!(m, s, "{kind}: decode_from_member returned another object"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("{kind}: check_signer ({a:?}) and decode_from_member ({:?}) disagree", b.map(|_| ())),
    }
    let _ = s.hash();
    Some(s)
}

/// The bytes of a `Signed` envelope around `body`, exactly as given (not re-encoded), with the
/// canonical key order `sig`, `body`, `signer`.
pub fn splice_envelope(body: &[u8], sig: &Signature, signer: &PublicKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 120);
    out.extend_from_slice(&[0xa3, 0x63]);
    out.extend_from_slice(b"sig");
    out.extend_from_slice(&[0x58, 0x40]);
    out.extend_from_slice(&sig.0);
    out.push(0x64);
    out.extend_from_slice(b"body");
    out.extend_from_slice(body);
    out.push(0x66);
    out.extend_from_slice(b"signer");
    out.extend_from_slice(&[0x58, 0x20]);
    out.extend_from_slice(&signer.0);
    out
}

/// Treats `bytes` as the body of a `T`, so the fuzzer works on the object's fields without first
/// having to forge a signature:
/// 1. the body spliced byte for byte into an envelope whose signature is valid for what the body
///    decodes to must, if accepted, be canonical ([`check_signed`]): this is how a relay would
///    try to give a signed object a second encoding;
/// 2. signing a decoded body and decoding the result gives the same object back.
///
/// (`signed::decode` on its own is the decoder of unsigned objects; the node never uses it for a
/// signed kind's body, so what it accepts there is not a property of the node.)
pub fn check_body<T>(bytes: &[u8])
where
    T: Authored + PartialEq + Debug,
{
    let kind = T::KIND.name();
    let signer = key(3);
    let body = signed::decode::<T>(bytes).ok();
    // The signature a node would check: over the body as it re-encodes.
    let sig = body
        .as_ref()
        .and_then(|body| signed::encode(body).ok())
        .map(|canonical| signer.sign(T::KIND, &canonical))
        .unwrap_or(Signature([0; 64]));
    check_signed::<T>(&splice_envelope(bytes, &sig, &signer.public()));

    let Some(body) = body else {
        return;
    };
    if let Ok(s) = Signed::sign(body.clone(), &signer) {
        let back = check_signed::<T>(s.as_bytes()).unwrap_or_else(|| {
            panic!("{kind}: a freshly signed object is refused: {:?}", Signed::<T>::decode(s.as_bytes()))
        });
        assert_eq!(back.body(), &body, "{kind}: signing and decoding changed the body");
    }
}

/// The unsigned object kinds (the provenance entry): accepted bytes re-encode to themselves.
pub fn check_unsigned<T>(bytes: &[u8]) -> Option<T>
where
    T: Object + PartialEq + Debug,
{
    let kind = T::KIND.name();
    let value = signed::decode::<T>(bytes);
    outcome(kind, &value);
    let value = value.ok()?;
    assert!(bytes.len() <= T::MAX_SIZE, "{kind}: accepted {} bytes, over its limit of {}", bytes.len(), T::MAX_SIZE);
    let again = signed::encode(&value).unwrap_or_else(|e| panic!("{kind}: a decoded object does not encode: {e}"));
    if again != bytes {
        panic!(
            "{kind}: accepted bytes that do not re-encode to themselves (its hash would depend on the encoding). \
             {}\ninput      {}\nre-encoded {}",
            key_difference(bytes, &again),
            short_hex(bytes),
            short_hex(&again)
        );
    }
    assert_eq!(signed::decode::<T>(&again).as_ref(), Ok(&value), "{kind}: decoding is not deterministic");
    Some(value)
}

/// The signed object kinds, in the order the `signed_objects` target's first byte selects them.
pub const KINDS: [&str; 13] = [
    "manifest",
    "withdrawal",
    "access-request",
    "decision",
    "grant",
    "revocation",
    "fetch-request",
    "ticket",
    "receipt",
    "query-request",
    "query-answer",
    "checkpoint",
    "provenance-entry",
];

/// Runs [`check_signed`] (envelope) or [`check_body`] (body) for kind `index` of [`KINDS`].
pub fn check_kind(index: usize, body_mode: bool, bytes: &[u8]) {
    macro_rules! dispatch {
        ($($i:pat => $t:ty),+ $(,)?) => {
            match index {
                $($i => if body_mode { check_body::<$t>(bytes) } else { check_signed::<$t>(bytes); },)+
                _ => { check_unsigned::<Entry>(bytes); }
            }
        };
    }
    dispatch!(
        0 => Manifest,
        1 => Withdrawal,
        2 => AccessRequest,
        3 => Decision,
        4 => Grant,
        5 => Revocation,
        6 => FetchRequest,
        7 => Ticket,
        8 => Receipt,
        9 => QueryRequest,
        10 => QueryAnswer,
        11 => Checkpoint,
    );
}

// ---------------------------------------------------------------------------------------------
// Roster

/// Decodes a `SignedRoster` as a node would; when accepted, it re-encodes to exactly its input,
/// and validating it (alone, and as a successor of the vectors' roster) answers without
/// panicking, consistently with its structure.
pub fn check_roster(bytes: &[u8]) -> Option<SignedRoster> {
    let roster = SignedRoster::decode(bytes);
    outcome("roster", &roster);
    let roster = roster.ok()?;
    assert!(bytes.len() <= deltafed_protocol::roster::MAX_ROSTER_SIZE, "roster: accepted over its limit");
    let again = roster.encode().unwrap_or_else(|e| panic!("roster: an accepted roster does not encode: {e}"));
    if again != bytes {
        panic!(
            "roster: accepted a roster that does not re-encode to its input. {}\ninput      {}\nre-encoded {}",
            key_difference(bytes, &again),
            short_hex(bytes),
            short_hex(&again)
        );
    }
    assert_eq!(SignedRoster::decode(&again).as_ref(), Ok(&roster), "roster: decoding is not deterministic");
    let alone = roster.validate();
    let successor = roster.validate_successor(vector_roster());
    if alone.is_ok() {
        let r = &roster.roster;
        assert!(r.check_structure().is_ok(), "roster: valid but its structure is not");
        let distinct: std::collections::BTreeSet<_> =
            roster.sigs.iter().filter(|s| r.member_by_key(&s.key).is_some()).map(|s| s.key).collect();
        assert!(distinct.len() >= r.threshold as usize, "roster: valid below its threshold");
    }
    if successor.is_ok() {
        assert!(roster.roster.version > vector_roster().version, "roster: a successor that is not newer");
        assert_eq!(roster.roster.federation, vector_roster().federation, "roster: a successor of another federation");
    }
    let _ = (alone.map_err(|e| e.to_string()), successor.map_err(|e| e.to_string()), roster.signer_names());
    Some(roster)
}

// ---------------------------------------------------------------------------------------------
// Network messages: what a node decodes from each, down to the signed objects inside

pub fn check_gossip(g: &Gossip) {
    match g {
        Gossip::Manifest(b) => {
            check_signed::<Manifest>(b);
        }
        Gossip::Withdrawal(b) => {
            check_signed::<Withdrawal>(b);
        }
        Gossip::Roster(b) => {
            check_roster(b);
        }
    }
}

pub fn check_request(r: &Request) {
    match r {
        Request::Deliver(d) => match d {
            Delivery::AccessRequest(b) => drop(check_signed::<AccessRequest>(b)),
            Delivery::Decision(b) => drop(check_signed::<Decision>(b)),
            Delivery::Grant(b) => drop(check_signed::<Grant>(b)),
            Delivery::Revocation(b) => drop(check_signed::<Revocation>(b)),
            Delivery::Receipt(b) => drop(check_signed::<Receipt>(b)),
            Delivery::Checkpoint(b) => drop(check_signed::<Checkpoint>(b)),
        },
        Request::Fetch(b) => drop(check_signed::<FetchRequest>(b)),
        Request::Query(b) => drop(check_signed::<QueryRequest>(b)),
        Request::Calls { batch, calls } => {
            drop(check_signed::<deltafed_protocol::calls::CallBatch>(batch));
            for c in calls {
                let _ = deltafed_protocol::signed::decode::<deltafed_protocol::calls::Call>(&c.call);
            }
        }
        Request::Sync(_) | Request::Chunk { .. } | Request::WitnessOf { .. } => {}
    }
}

pub fn check_response(r: &Response) {
    match r {
        Response::Sync(s) => {
            if let Some(roster) = &s.roster {
                check_roster(roster);
            }
            s.items.iter().for_each(check_gossip);
        }
        Response::Ticket { ticket, chunk_hashes: _ } => drop(check_signed::<Ticket>(ticket)),
        Response::Answer { answer, records } => {
            check_signed::<QueryAnswer>(answer);
            // The requester reads the records as a JSON array of objects.
            let _ = serde_json::from_slice::<Vec<serde_json::Map<String, serde_json::Value>>>(records);
        }
        Response::Witnesses(items) => items.iter().for_each(|b| drop(check_signed::<Checkpoint>(b))),
        Response::Answers { answer, results, records } => {
            drop(check_signed::<deltafed_protocol::calls::CallAnswer>(answer));
            for r in results {
                let _ = deltafed_protocol::signed::decode::<deltafed_protocol::calls::CallResult>(r);
            }
            for r in records {
                let _ = serde_json::from_slice::<Vec<serde_json::Map<String, serde_json::Value>>>(r);
            }
        }
        Response::Ack | Response::Chunk(_) | Response::Refused(_) => {}
    }
}

/// Which of the three message types `selector` names, and a check that a decoded one encodes
/// and decodes back to an equal message (the envelopes are not canonical, so equal values, not
/// equal bytes), then the checks of what it carries.
pub fn check_wire(selector: u8, bytes: &[u8]) {
    match selector % 3 {
        0 => {
            let g = Gossip::decode(bytes);
            outcome("gossip message", &g);
            if let Ok(g) = g {
                let again = g.encode().unwrap_or_else(|e| panic!("gossip: a decoded message does not encode: {e}"));
                // Definite lengths can take a few bytes more than the indefinite ones accepted.
                if again.len() <= wire::MAX_GOSSIP_SIZE {
                    assert_eq!(Gossip::decode(&again).as_ref(), Ok(&g), "gossip: encode/decode round trip changed it");
                }
                check_gossip(&g);
            }
        }
        1 => {
            let r = Request::decode(bytes);
            outcome("rpc request", &r);
            if let Ok(r) = r {
                let again =
                    r.encode().unwrap_or_else(|e| panic!("rpc request: a decoded request does not encode: {e}"));
                if again.len() <= wire::MAX_RPC_REQUEST {
                    assert_eq!(Request::decode(&again).as_ref(), Ok(&r), "rpc request: round trip changed it");
                }
                check_request(&r);
            }
        }
        _ => {
            let r = Response::decode(bytes);
            outcome("rpc response", &r);
            if let Ok(r) = r {
                let again =
                    r.encode().unwrap_or_else(|e| panic!("rpc response: a decoded response does not encode: {e}"));
                if again.len() <= wire::MAX_RPC_RESPONSE {
                    assert_eq!(Response::decode(&again).as_ref(), Ok(&r), "rpc response: round trip changed it");
                }
                check_response(&r);
            }
        }
    }
}

/// Splits reads into pieces of at most `step` bytes, so a streaming parser refills its buffers
/// at every possible boundary (a file or a socket hands out whatever it has).
pub struct Trickle<'a> {
    pub data: &'a [u8],
    pub step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.max(1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[cfg(feature = "node")]
pub mod node;
