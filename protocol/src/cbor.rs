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
    let mut tree = parse_tree(kind, &raw)?;
    normalise(&mut tree);
    let out = write_tree(kind, &tree)?;
    Ok(out)
}

/// Decodes `bytes` as `T`, rejecting input over `max` bytes or not in canonical form.
pub fn decode<T: DeserializeOwned + Serialize>(kind: &'static str, max: usize, bytes: &[u8]) -> Result<T, Error> {
    check_canonical(kind, max, bytes)?;
    let value: T = cbor4ii::serde::from_slice(bytes).map_err(|e| Error::Shape { kind, detail: e.to_string() })?;
    // One encoding per value: a map that leaves out an optional field is refused too.
    if encode(kind, &value)? != bytes {
        return Err(Error::NonCanonical { kind });
    }
    Ok(value)
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
