//! Object-level tests: committed test vectors, round trips, and every rejection path.

use deltafed_protocol::access::{AccessRequest, Decision, Grant, Outcome, Revocation};
use deltafed_protocol::cbor;
use deltafed_protocol::exchange::{FetchRequest, QueryAnswer, QueryRequest, Receipt, Ticket};
use deltafed_protocol::manifest::{Classification, Field, FieldType, Format, Manifest, Sharing, Withdrawal};
use deltafed_protocol::provenance::{Checkpoint, Entry, EntryKind, Evidence};
use deltafed_protocol::roster::{Member, Roster, SignedRoster};
use deltafed_protocol::signed::{self, Error};
use deltafed_protocol::*;
use proptest::prelude::*;

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

fn m(s: &str) -> MemberId {
    s.parse().expect("valid member id")
}

fn d(s: &str) -> DatasetId {
    s.parse().expect("valid dataset id")
}

const T0: Timestamp = Timestamp(1_795_000_000_000);

fn roster() -> Roster {
    let members = [("shanghai", 1u8), ("jiangsu", 2), ("zhejiang", 3), ("anhui", 4)];
    Roster {
        v: 1,
        federation: "yrd".parse().expect("valid"),
        version: 1,
        threshold: 3,
        members: members
            .iter()
            .enumerate()
            .map(|(i, (id, k))| Member {
                id: m(id),
                name: id.to_string(),
                key: key(*k).public(),
                addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 4001 + i)],
            })
            .collect(),
    }
}

fn manifest() -> Manifest {
    Manifest {
        v: 1,
        publisher: m("zhejiang"),
        dataset: d("business-licences"),
        version: 2,
        title: "Business licences".into(),
        description: "浙江省 registered businesses".into(),
        format: Format::Csv,
        schema: vec![
            Field { name: "company_id".into(), ty: FieldType::String },
            Field { name: "employees".into(), ty: FieldType::Integer },
        ],
        key_field: Some("company_id".into()),
        classification: Classification::Important,
        sharing: Sharing::Conditional,
        size: 1234,
        records: 10,
        content_hash: Hash::of(b"data"),
        created: T0,
        live: false,
    }
}

fn grant() -> Grant {
    Grant {
        v: 1,
        id: GrantId([0x11; 16]),
        provider: m("zhejiang"),
        grantee: m("shanghai"),
        dataset: d("business-licences"),
        purpose: "cross-border licence check".into(),
        fields: Some(vec!["company_id".into()]),
        not_before: T0,
        expires: Timestamp(T0.0 + 90 * 86_400_000),
        max_fetches: Some(3),
        max_queries: None,
        request: None,
    }
}

/// (name, signer seed byte, encoded signed object) for every signed kind.
fn signed_samples() -> Vec<(&'static str, u8, Vec<u8>)> {
    let zj = key(3);
    let sh = key(1);
    let sign = |r: Result<Vec<u8>, cbor::Error>| r.expect("signs");
    vec![
        ("manifest", 3, sign(Signed::sign(manifest(), &zj).map(Signed::into_bytes))),
        (
            "withdrawal",
            3,
            sign(
                Signed::sign(
                    Withdrawal {
                        v: 1,
                        publisher: m("zhejiang"),
                        dataset: d("business-licences"),
                        version: 2,
                        reason: "superseded".into(),
                        time: T0,
                    },
                    &zj,
                )
                .map(Signed::into_bytes),
            ),
        ),
        (
            "access-request",
            1,
            sign(
                Signed::sign(
                    AccessRequest {
                        v: 1,
                        id: RequestId([0x22; 16]),
                        requester: m("shanghai"),
                        provider: m("zhejiang"),
                        dataset: d("business-licences"),
                        purpose: "licence check".into(),
                        fields: None,
                        time: T0,
                    },
                    &sh,
                )
                .map(Signed::into_bytes),
            ),
        ),
        (
            "decision",
            3,
            sign(
                Signed::sign(
                    Decision {
                        v: 1,
                        request: RequestId([0x22; 16]),
                        provider: m("zhejiang"),
                        requester: m("shanghai"),
                        outcome: Outcome::Denied { reason: "no legal basis".into() },
                        time: T0,
                    },
                    &zj,
                )
                .map(Signed::into_bytes),
            ),
        ),
        ("grant", 3, sign(Signed::sign(grant(), &zj).map(Signed::into_bytes))),
        (
            "revocation",
            3,
            sign(
                Signed::sign(
                    Revocation {
                        v: 1,
                        grant: GrantId([0x11; 16]),
                        provider: m("zhejiang"),
                        grantee: m("shanghai"),
                        time: T0,
                        reason: "purpose fulfilled".into(),
                    },
                    &zj,
                )
                .map(Signed::into_bytes),
            ),
        ),
        (
            "fetch-request",
            1,
            sign(
                Signed::sign(
                    FetchRequest {
                        v: 1,
                        requester: m("shanghai"),
                        provider: m("zhejiang"),
                        dataset: d("business-licences"),
                        version: Some(2),
                        grant: Some(GrantId([0x11; 16])),
                        nonce: Nonce([0x33; 16]),
                        time: T0,
                        offset: 0,
                    },
                    &sh,
                )
                .map(Signed::into_bytes),
            ),
        ),
        (
            "ticket",
            3,
            sign(
                Signed::sign(
                    Ticket {
                        v: 1,
                        exchange: ExchangeId([0x44; 16]),
                        request: Hash::of(b"request"),
                        provider: m("zhejiang"),
                        requester: m("shanghai"),
                        dataset: d("business-licences"),
                        version: 2,
                        fields: Some(vec!["company_id".into()]),
                        content_hash: Hash::of(b"projected"),
                        size: 9,
                        offset: 0,
                        chunk_size: 1 << 20,
                        chunks: Ticket::table_hash(&[Hash::of(b"projected")]),
                        time: T0,
                    },
                    &zj,
                )
                .map(Signed::into_bytes),
            ),
        ),
        (
            "receipt",
            1,
            sign(
                Signed::sign(
                    Receipt {
                        v: 1,
                        exchange: ExchangeId([0x44; 16]),
                        requester: m("shanghai"),
                        provider: m("zhejiang"),
                        content_hash: Hash::of(b"projected"),
                        bytes: 9,
                        time: T0,
                    },
                    &sh,
                )
                .map(Signed::into_bytes),
            ),
        ),
        (
            "query-request",
            1,
            sign(
                Signed::sign(
                    QueryRequest {
                        v: 1,
                        requester: m("shanghai"),
                        provider: m("zhejiang"),
                        dataset: d("business-licences"),
                        grant: Some(GrantId([0x11; 16])),
                        key: "91330000MA27XYZ".into(),
                        nonce: Nonce([0x55; 16]),
                        time: T0,
                    },
                    &sh,
                )
                .map(Signed::into_bytes),
            ),
        ),
        (
            "query-answer",
            3,
            sign(
                Signed::sign(
                    QueryAnswer {
                        v: 1,
                        exchange: ExchangeId([0x66; 16]),
                        request: Hash::of(b"query"),
                        provider: m("zhejiang"),
                        requester: m("shanghai"),
                        dataset: d("business-licences"),
                        version: 2,
                        fields: Some(vec!["company_id".into()]),
                        records: Hash::of(b"[]"),
                        count: 0,
                        time: T0,
                    },
                    &zj,
                )
                .map(Signed::into_bytes),
            ),
        ),
        (
            "checkpoint",
            3,
            sign(
                Signed::sign(
                    Checkpoint { v: 1, member: m("zhejiang"), seq: 41, head: Hash::of(b"head"), time: T0 },
                    &zj,
                )
                .map(Signed::into_bytes),
            ),
        ),
    ]
}

fn roster_sample() -> Vec<u8> {
    let mut s = SignedRoster::unsigned(roster());
    for i in [1, 2, 3, 4] {
        s.add_signature(&key(i)).expect("signs");
    }
    s.encode().expect("encodes")
}

fn entry_sample() -> Vec<u8> {
    let e = Entry {
        v: 1,
        seq: 0,
        time: T0,
        kind: EntryKind::GrantIssued,
        dataset: Some("zhejiang/business-licences".parse().expect("valid")),
        peer: Some(m("shanghai")),
        exchange: None,
        note: "purpose: cross-border licence check".into(),
        objects: vec![Evidence {
            kind: "grant".into(),
            bytes: Signed::sign(grant(), &key(3)).expect("signs").into_bytes(),
        }],
        prev: Hash([0; 32]),
        calls: Vec::new(),
    };
    signed::encode(&e).expect("encodes")
}

/// The committed vectors: every object's exact bytes. Another implementation that produces the
/// same bytes from the same inputs (keys are `[seed; 32]`) agrees with this one.
#[test]
fn committed_test_vectors_match() {
    let mut actual = serde_json::Map::new();
    for (name, seed, bytes) in signed_samples() {
        actual.insert(
            name.to_string(),
            serde_json::json!({ "signer_seed": hex::encode([seed; 32]), "encoded": hex::encode(&bytes) }),
        );
    }
    let roster_seeds: Vec<String> = [1u8, 2, 3, 4].iter().map(|i| hex::encode([*i; 32])).collect();
    actual.insert(
        "roster".into(),
        serde_json::json!({ "signer_seeds": roster_seeds, "encoded": hex::encode(roster_sample()) }),
    );
    let entry = entry_sample();
    actual.insert(
        "provenance-entry".into(),
        serde_json::json!({ "encoded": hex::encode(&entry), "hash": provenance::Entry::hash_of_encoding(&entry).to_string() }),
    );
    let actual = serde_json::Value::Object(actual);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
    let stored = std::fs::read_to_string(path);
    if std::env::var_os("DELTAFED_WRITE_VECTORS").is_some() {
        // Writing is not checking: the vectors just written would only be compared with
        // themselves. Write, say what changed, and fail, so a run with the variable set is never
        // mistaken for a passing comparison.
        let before: serde_json::Value =
            stored.ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::Value::Null);
        let text = serde_json::to_string_pretty(&actual).expect("json") + "\n";
        std::fs::write(path, text).expect("write vectors");
        panic!(
            "DELTAFED_WRITE_VECTORS is set: wrote {path} ({}); nothing was compared. Review the \
             diff, then run again without DELTAFED_WRITE_VECTORS to check the vectors",
            vector_changes(&before, &actual)
        );
    }
    let committed: serde_json::Value =
        serde_json::from_str(&stored.expect("tests/vectors.json is committed")).expect("json");
    assert_eq!(
        actual, committed,
        "encodings changed: this breaks every other implementation and every stored signature"
    );
}

/// Which vectors differ between two versions of vectors.json, in one phrase.
fn vector_changes(before: &serde_json::Value, after: &serde_json::Value) -> String {
    let empty = serde_json::Map::new();
    let old = before.as_object().unwrap_or(&empty);
    let new = after.as_object().unwrap_or(&empty);
    let mut changed: Vec<&str> = new
        .iter()
        .filter(|(name, v)| old.get(name.as_str()) != Some(*v))
        .map(|(name, _)| name.as_str())
        .chain(old.keys().filter(|name| !new.contains_key(name.as_str())).map(String::as_str))
        .collect();
    changed.sort_unstable();
    if changed.is_empty() { "no vector changed".to_string() } else { format!("changed: {}", changed.join(", ")) }
}

#[test]
fn every_vector_decodes_and_verifies() {
    let r = roster();
    for (name, _, bytes) in signed_samples() {
        let ok = match name {
            "manifest" => Signed::<Manifest>::decode_from_member(&bytes, &r).map(|_| ()),
            "withdrawal" => Signed::<Withdrawal>::decode_from_member(&bytes, &r).map(|_| ()),
            "access-request" => Signed::<AccessRequest>::decode_from_member(&bytes, &r).map(|_| ()),
            "decision" => Signed::<Decision>::decode_from_member(&bytes, &r).map(|_| ()),
            "grant" => Signed::<Grant>::decode_from_member(&bytes, &r).map(|_| ()),
            "revocation" => Signed::<Revocation>::decode_from_member(&bytes, &r).map(|_| ()),
            "fetch-request" => Signed::<FetchRequest>::decode_from_member(&bytes, &r).map(|_| ()),
            "ticket" => Signed::<Ticket>::decode_from_member(&bytes, &r).map(|_| ()),
            "receipt" => Signed::<Receipt>::decode_from_member(&bytes, &r).map(|_| ()),
            "checkpoint" => Signed::<Checkpoint>::decode_from_member(&bytes, &r).map(|_| ()),
            "query-request" => Signed::<QueryRequest>::decode_from_member(&bytes, &r).map(|_| ()),
            "query-answer" => Signed::<QueryAnswer>::decode_from_member(&bytes, &r).map(|_| ()),
            other => panic!("no decoder for {other}"),
        };
        assert_eq!(ok, Ok(()), "{name}");
    }
    assert_eq!(SignedRoster::decode(&roster_sample()).expect("decodes").validate(), Ok(()));
    let e: Entry = signed::decode(&entry_sample()).expect("decodes");
    assert_eq!(e.kind, EntryKind::GrantIssued);
}

#[test]
fn tampered_byte_is_rejected() {
    let bytes = Signed::sign(grant(), &key(3)).expect("signs").into_bytes();
    // Flip one bit in each byte in turn: never accepted as the same signed grant.
    for i in 0..bytes.len() {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        if let Ok(g) = Signed::<Grant>::decode_from_member(&t, &roster()) {
            panic!("byte {i} flipped and still accepted: {:?}", g.body());
        }
    }
}

#[test]
fn wrong_key_and_wrong_author_are_rejected() {
    // Signed by shanghai's key but claims zhejiang as provider.
    let forged = Signed::sign(grant(), &key(1)).expect("signs").into_bytes();
    assert_eq!(
        Signed::<Grant>::decode_from_member(&forged, &roster()),
        Err(Error::WrongSigner { kind: "grant", member: m("zhejiang") })
    );
    // Signed by a key nobody knows, claiming a member nobody knows.
    let mut g = grant();
    g.provider = m("hubei");
    let stranger = Signed::sign(g, &key(9)).expect("signs").into_bytes();
    assert!(matches!(Signed::<Grant>::decode_from_member(&stranger, &roster()), Err(Error::UnknownAuthor { .. })));
}

#[test]
fn signature_of_one_kind_does_not_verify_as_another() {
    // A revocation body shaped exactly like a grant does not exist, so take the grant's signature
    // and body and present it as a ticket envelope: the shape check or the tag stops it.
    let g = Signed::sign(grant(), &key(3)).expect("signs");
    let as_revocation = Signed::<Revocation>::decode(g.as_bytes());
    assert!(as_revocation.is_err());
    let body = signed::encode(&grant()).expect("encodes");
    let sig = key(3).sign(Kind::Revocation, &body);
    assert!(key(3).public().verify(Kind::Grant, &body, &sig).is_err());
}

#[test]
fn non_canonical_truncated_and_oversized_are_rejected() {
    let bytes = Signed::sign(grant(), &key(3)).expect("signs").into_bytes();
    // Truncated.
    for cut in [1, 10, bytes.len() / 2] {
        assert!(Signed::<Grant>::decode(&bytes[..bytes.len() - cut]).is_err());
    }
    // Trailing byte.
    let mut longer = bytes.clone();
    longer.push(0xf6);
    assert_eq!(Signed::<Grant>::decode(&longer), Err(Error::Cbor(cbor::Error::NonCanonical { kind: "grant" })));
    // Oversized.
    let mut g = grant();
    g.purpose = "x".repeat(20 * 1024);
    assert!(matches!(Signed::sign(g, &key(3)), Err(cbor::Error::Oversized { .. })));
    let huge = vec![0u8; 64 * 1024];
    assert!(matches!(Signed::<Grant>::decode(&huge), Err(Error::Cbor(cbor::Error::Oversized { .. }))));
    // Non-canonical: serde's field order instead of sorted keys.
    let raw = cbor4ii::serde::to_vec(Vec::new(), &grant()).expect("encodes");
    assert!(matches!(signed::decode::<Grant>(&raw), Err(cbor::Error::NonCanonical { .. })));
}

#[test]
fn unknown_object_version_is_refused() {
    let mut g = grant();
    g.v = 2;
    let s = Signed::sign(g, &key(3)).expect("signs");
    assert_eq!(
        Signed::<Grant>::decode(s.as_bytes()),
        Err(Error::Cbor(cbor::Error::UnknownVersion { kind: "grant", found: 2, supported: 1 }))
    );
}

fn arb_text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

prop_compose! {
    fn arb_grant()(purpose in arb_text(), fields in proptest::option::of(proptest::collection::vec("[a-z_]{1,12}", 0..6)),
                   nb in 0u64..Timestamp::MAX.0 / 2, span in 0u64..Timestamp::MAX.0 / 2, max in proptest::option::of(any::<u64>()),
                   queries in proptest::option::of(any::<u64>()), id in any::<[u8; 16]>()) -> Grant {
        Grant { purpose, fields, not_before: Timestamp(nb), expires: Timestamp(nb + span), max_fetches: max, max_queries: queries, id: GrantId(id), ..grant() }
    }
}

prop_compose! {
    fn arb_manifest()(title in arb_text(), description in arb_text(), version in 1u64.., size in any::<u64>(),
                      records in any::<u64>(), key_field in proptest::option::of("[a-z]{1,8}"), hash in any::<[u8; 32]>()) -> Manifest {
        Manifest { title, description, version, size, records, key_field, content_hash: Hash(hash), ..manifest() }
    }
}

proptest! {
    #[test]
    fn grant_round_trips(g in arb_grant(), seed in any::<[u8; 32]>()) {
        let k = SecretKey::from_seed(seed);
        let s = Signed::sign(g.clone(), &k).expect("signs");
        let back = Signed::<Grant>::decode(s.as_bytes()).expect("decodes");
        prop_assert_eq!(back.body(), &g);
        prop_assert_eq!(back.signer(), &k.public());
        // Encoding is a function of the value.
        let again = Signed::sign(g, &k).expect("signs");
        prop_assert_eq!(again.as_bytes(), s.as_bytes());
    }

    #[test]
    fn manifest_round_trips(mf in arb_manifest()) {
        let s = Signed::sign(mf.clone(), &key(3)).expect("signs");
        let back = Signed::<Manifest>::decode_from_member(s.as_bytes(), &roster()).expect("decodes");
        prop_assert_eq!(back.body(), &mf);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Signed::<Grant>::decode(&bytes);
        let _ = Signed::<Manifest>::decode(&bytes);
        let _ = SignedRoster::decode(&bytes);
        let _ = signed::decode::<Entry>(&bytes);
    }

    #[test]
    fn dataset_refs_round_trip(p in "[a-z][a-z0-9-]{0,10}[a-z0-9]", ds in "[a-z]([a-z0-9._-]{0,19}[a-z0-9._])?", v in proptest::option::of(1u64..)) {
        let text = match v { Some(v) => format!("{p}/{ds}@{v}"), None => format!("{p}/{ds}") };
        let r: DatasetRef = text.parse().expect("parses");
        prop_assert_eq!(r.to_string(), text);
    }
}

/// Found by fuzzing: a provenance entry that leaves out its (null) `exchange` decoded to the same
/// value as the entry that writes it, so two encodings (and two hashes) named one entry.
#[test]
fn an_entry_leaving_out_an_optional_field_is_refused() {
    let bytes = include_bytes!("entry-without-exchange.cbor");
    let err = deltafed_protocol::signed::decode::<deltafed_protocol::provenance::Entry>(bytes)
        .expect_err("a second encoding of an entry");
    assert!(err.to_string().contains("canonical"), "{err}");
}
