//! Canonical CBOR: the only encoding of signed objects.
//!
//! Signatures are over bytes, so every value must have exactly one encoding. We follow RFC 8949
//! §4.2.1 (core deterministic encoding): definite lengths, shortest integer and length forms, map
//! keys sorted by the bytewise order of their own encodings, no duplicate keys. Encoding goes
//! through serde, then the result is normalised (maps re-sorted) so the order of struct fields in
//! Rust source does not matter. Decoding first normalises the input and insists that it was
//! already normal: anything else (a non-minimal integer, an indefinite length, keys out of order,
//! trailing bytes) is rejected as non-canonical rather than silently accepted, so two honest
//! nodes can never disagree about which bytes were signed.
//!
//! Speed: the objects on the call path are encoded and decoded several times a call. serde's
//! output is checked in one pass first and kept when it already is canonical, which it is for a
//! struct whose fields are declared in canonical key order (shortest name first, then
//! bytewise); the hot objects are declared so (their tests check it). A decode is one parse and
//! one encoding compared with the input, which implies every rule above.

use cbor4ii::core::Value;
use cbor4ii::core::dec::Decode;
use cbor4ii::core::enc::Encode;
use cbor4ii::core::utils::{BufWriter, SliceReader};
use serde::{Serialize, de::DeserializeOwned};

/// Why bytes could not be decoded (or, rarely, a value encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{kind} is {size} bytes, over the limit of {max} bytes")]
    Oversized { kind: &'static str, size: usize, max: usize },
    #[error("{kind} is not well-formed CBOR: {detail}")]
    Malformed { kind: &'static str, detail: String },
    #[error("{kind} is not in canonical CBOR form")]
    NonCanonical { kind: &'static str },
    #[error("{kind} has an unexpected shape: {detail}")]
    Shape { kind: &'static str, detail: String },
    #[error("{kind} has version {found}, this node understands version {supported}")]
    UnknownVersion { kind: &'static str, found: u32, supported: u32 },
    #[error("{kind} could not be encoded: {detail}")]
    Encode { kind: &'static str, detail: String },
}

/// Encodes `value` canonically.
pub fn encode<T: Serialize>(kind: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    let raw = cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| Error::Encode { kind, detail: e.to_string() })?;
    // serde writes struct fields in declaration order, definite lengths and shortest integers:
    // for a struct whose fields are declared in canonical key order that already is the
    // encoding, and one pass over the bytes proves it (the hot objects are declared so).
    if is_canonical(&raw) {
        return Ok(raw);
    }
    normalised(kind, &raw)
}

/// The long way: the bytes as a value tree, every map sorted, written again.
fn normalised(kind: &'static str, raw: &[u8]) -> Result<Vec<u8>, Error> {
    let mut tree = parse_tree(kind, raw)?;
    normalise(&mut tree);
    write_tree(kind, &tree)
}

/// Whether `value` takes the one-pass path of [`encode`] (its fields are declared in
/// canonical order): what the tests of the hot objects check.
#[cfg(test)]
pub(crate) fn encodes_in_one_pass<T: Serialize>(value: &T) -> bool {
    cbor4ii::serde::to_vec(Vec::new(), value).is_ok_and(|raw| is_canonical(&raw))
}

/// Decodes `bytes` as `T`, rejecting input over `max` bytes or not in canonical form.
pub fn decode<T: DeserializeOwned + Serialize>(kind: &'static str, max: usize, bytes: &[u8]) -> Result<T, Error> {
    if bytes.len() > max {
        return Err(Error::Oversized { kind, size: bytes.len(), max });
    }
    // One encoding per value: the bytes must be exactly the value's own canonical encoding (a
    // map that leaves out an optional field is refused too). That one comparison implies every
    // canonical-form rule, so the form is checked on its own only to say what is wrong.
    match cbor4ii::serde::from_slice::<T>(bytes) {
        Ok(value) if encode(kind, &value)? == bytes => Ok(value),
        Ok(_) => {
            check_canonical(kind, max, bytes)?;
            Err(Error::NonCanonical { kind })
        }
        Err(e) => {
            check_canonical(kind, max, bytes)?;
            Err(Error::Shape { kind, detail: e.to_string() })
        }
    }
}

/// Checks size and canonical form without interpreting the value.
pub fn check_canonical(kind: &'static str, max: usize, bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > max {
        return Err(Error::Oversized { kind, size: bytes.len(), max });
    }
    let mut tree = parse_tree(kind, bytes)?;
    if contains_float_or_tag(&tree) {
        return Err(Error::NonCanonical { kind });
    }
    normalise(&mut tree);
    if has_duplicate_keys(&tree) {
        return Err(Error::NonCanonical { kind });
    }
    let again = write_tree(kind, &tree)?;
    if again != bytes {
        return Err(Error::NonCanonical { kind });
    }
    Ok(())
}

/// Whether `bytes` are one data item in the form `encode` writes, decided in one pass without
/// allocating: definite lengths, shortest arguments, map keys in strictly increasing bytewise
/// order of their encodings (so no duplicates), no tags, no floats or simple values beyond
/// false, true and null, nothing after the item. `false` only sends `encode` the long way.
fn is_canonical(bytes: &[u8]) -> bool {
    /// Nesting beyond this is left to the long way (deltafed objects nest a few levels).
    const DEPTH: usize = 32;

    /// The item's head at `at`: (major type, argument, where its content starts).
    fn head(b: &[u8], at: usize) -> Option<(u8, u64, usize)> {
        let first = *b.get(at)?;
        let (major, info) = (first >> 5, first & 0x1f);
        let (arg, next) = match info {
            0..=23 => (u64::from(info), at + 1),
            24..=27 => {
                let n = 1usize << (info - 24);
                let raw = b.get(at + 1..at + 1 + n)?;
                let arg = raw.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
                // Shortest form: the argument would not fit the next smaller one.
                let min = match info {
                    24 => 24,
                    25 => 0x100,
                    26 => 0x1_0000,
                    _ => 0x1_0000_0000,
                };
                if arg < min {
                    return None;
                }
                (arg, at + 1 + n)
            }
            _ => return None,
        };
        Some((major, arg, next))
    }

    /// The end of the item at `at`, if it is canonical.
    fn item(b: &[u8], at: usize, depth: usize) -> Option<usize> {
        if depth > DEPTH {
            return None;
        }
        let (major, arg, next) = head(b, at)?;
        match major {
            0 | 1 => Some(next),
            2 | 3 => {
                let end = next.checked_add(usize::try_from(arg).ok()?)?;
                let content = b.get(next..end)?;
                (major == 2 || std::str::from_utf8(content).is_ok()).then_some(end)
            }
            4 => (0..arg).try_fold(next, |at, _| item(b, at, depth + 1)),
            5 => {
                let mut at = next;
                let mut last: Option<&[u8]> = None;
                for _ in 0..arg {
                    let key_end = item(b, at, depth + 1)?;
                    let key = &b[at..key_end];
                    if last.is_some_and(|l| l >= key) {
                        return None;
                    }
                    last = Some(key);
                    at = item(b, key_end, depth + 1)?;
                }
                Some(at)
            }
            // false, true, null
            7 if (20..=22).contains(&arg) && next == at + 1 => Some(next),
            _ => None,
        }
    }

    item(bytes, 0, 0) == Some(bytes.len())
}

fn parse_tree(kind: &'static str, bytes: &[u8]) -> Result<Value, Error> {
    let mut reader = SliceReader::new(bytes);
    Value::decode(&mut reader).map_err(|e| Error::Malformed { kind, detail: format!("{e:?}") })
}

fn write_tree(kind: &'static str, tree: &Value) -> Result<Vec<u8>, Error> {
    let mut writer = BufWriter::new(Vec::new());
    tree.encode(&mut writer).map_err(|e| Error::Encode { kind, detail: format!("{e:?}") })?;
    Ok(writer.into_inner())
}

/// Sorts every map by the canonical encoding of its keys (RFC 8949 §4.2.1).
fn normalise(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(normalise),
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                normalise(k);
                normalise(v);
            }
            entries.sort_by_cached_key(|(k, _)| key_bytes(k));
        }
        Value::Tag(_, inner) => normalise(inner),
        _ => {}
    }
}

fn key_bytes(key: &Value) -> Vec<u8> {
    let mut writer = BufWriter::new(Vec::new());
    // Encoding into a Vec cannot fail for a value that was just decoded or built in memory.
    match key.encode(&mut writer) {
        Ok(()) => writer.into_inner(),
        Err(_) => Vec::new(),
    }
}

fn has_duplicate_keys(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(has_duplicate_keys),
        Value::Map(entries) => {
            entries.windows(2).any(|w| key_bytes(&w[0].0) == key_bytes(&w[1].0))
                || entries.iter().any(|(k, v)| has_duplicate_keys(k) || has_duplicate_keys(v))
        }
        Value::Tag(_, inner) => has_duplicate_keys(inner),
        _ => false,
    }
}

/// deltafed objects carry no floats or tags; their encodings have several forms, so refuse them.
fn contains_float_or_tag(value: &Value) -> bool {
    match value {
        Value::Float(_) | Value::Tag(..) => true,
        Value::Array(items) => items.iter().any(contains_float_or_tag),
        Value::Map(entries) => entries.iter().any(|(k, v)| contains_float_or_tag(k) || contains_float_or_tag(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Sample {
        zebra: u64,
        a: String,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    }

    fn sample() -> Sample {
        Sample { zebra: 1, a: "x".into(), bytes: vec![1, 2] }
    }

    #[test]
    fn keys_are_sorted_shortest_first_whatever_the_field_order() {
        let bytes = encode("sample", &sample()).expect("encodes");
        // {"a": "x", "bytes": h'0102', "zebra": 1}
        assert_eq!(hex::encode(&bytes), "a361616178656279746573420102657a6562726101");
        let back: Sample = decode("sample", 1024, &bytes).expect("decodes");
        assert_eq!(back, sample());
    }

    #[test]
    fn serde_order_is_rejected_as_non_canonical() {
        let raw = cbor4ii::serde::to_vec(Vec::new(), &sample()).expect("encodes");
        assert_eq!(decode::<Sample>("sample", 1024, &raw), Err(Error::NonCanonical { kind: "sample" }));
    }

    #[test]
    fn non_minimal_integer_is_rejected() {
        let mut bytes = encode("sample", &sample()).expect("encodes");
        // zebra: 1 encoded as 0x01; replace with the two-byte form 0x18 0x01.
        let last = bytes.len() - 1;
        bytes[last] = 0x18;
        bytes.push(0x01);
        assert_eq!(decode::<Sample>("sample", 1024, &bytes), Err(Error::NonCanonical { kind: "sample" }));
    }

    #[test]
    fn trailing_bytes_truncation_and_size_are_rejected() {
        let bytes = encode("sample", &sample()).expect("encodes");
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode::<Sample>("sample", 1024, &longer), Err(Error::NonCanonical { kind: "sample" }));
        assert!(matches!(decode::<Sample>("sample", 1024, &bytes[..bytes.len() - 1]), Err(Error::Malformed { .. })));
        assert!(matches!(decode::<Sample>("sample", 4, &bytes), Err(Error::Oversized { size: 21, max: 4, .. })));
    }

    /// Any CBOR value tree of the kinds deltafed writes: integers, text, bytes, null and
    /// booleans, arrays and maps (text or integer keys, possibly repeated), nested.
    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            any::<u64>().prop_map(|n| Value::Integer(n.into())),
            any::<i64>().prop_map(|n| Value::Integer(n.into())),
            "[a-c]{0,3}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..30).prop_map(Value::Bytes),
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key =
                prop_oneof!["[a-c]{0,3}".prop_map(Value::Text), (0u64..30).prop_map(|n| Value::Integer(n.into()))];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((key, inner), 0..6).prop_map(Value::Map),
            ]
        })
    }

    proptest::proptest! {
        /// The one-pass check accepts exactly what the long way leaves as it is (and refuses
        /// repeated keys, which the long way does not remove): the shortcut never changes an
        /// encoding.
        #[test]
        fn the_one_pass_check_agrees_with_the_long_way(v in any_value()) {
            let raw = write_tree("x", &v).expect("writes");
            let long = normalised("x", &raw).expect("normalises");
            let dup = has_duplicate_keys(&parse_tree("x", &long).expect("parses"));
            proptest::prop_assert_eq!(is_canonical(&raw), raw == long && !dup);
            proptest::prop_assert_eq!(is_canonical(&long), !dup);
        }
    }

    #[test]
    fn the_one_pass_check_refuses_what_the_rules_refuse() {
        let canonical = encode("sample", &sample()).expect("encodes");
        assert!(is_canonical(&canonical));
        assert!(!is_canonical(&cbor4ii::serde::to_vec(Vec::new(), &sample()).expect("raw")), "fields out of order");
        for bad in [
            "1801",               // 1 in two bytes
            "190010",             // 16 in three bytes
            "9f0102ff",           // indefinite array
            "fb3ff8000000000000", // a float
            "c101",               // a tag
            "a2616101616102",     // a repeated key
            "0101",               // trailing bytes
            "62c328",             // text that is not UTF-8
            "83",                 // truncated
            "f7",                 // undefined
        ] {
            assert!(!is_canonical(&hex::decode(bad).expect("hex")), "{bad}");
        }
    }

    #[test]
    fn duplicate_keys_and_indefinite_lengths_are_rejected() {
        // {"a": 1, "a": 2}
        let dup = hex::decode("a2616101616102").expect("hex");
        assert!(check_canonical("x", 64, &dup).is_err());
        // [_ 1, 2] indefinite-length array
        let indef = hex::decode("9f0102ff").expect("hex");
        assert_eq!(check_canonical("x", 64, &indef), Err(Error::NonCanonical { kind: "x" }));
        // 1.5 as a double, and as a half (which the parser does not even accept)
        let float = hex::decode("fb3ff8000000000000").expect("hex");
        assert_eq!(check_canonical("x", 64, &float), Err(Error::NonCanonical { kind: "x" }));
        assert!(check_canonical("x", 64, &hex::decode("f93e00").expect("hex")).is_err());
    }
}
