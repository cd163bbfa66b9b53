//! # deltafed protocol
//!
//! The objects members of a deltafed federation say to each other, their one canonical encoding,
//! and their signatures. This crate does no I/O, reads no clock and draws no randomness: callers
//! pass in the time, nonces and ids, which keeps every function here deterministic and testable
//! against committed vectors (`tests/vectors.json`).
//!
//! ## Participants
//! Members, each with one ed25519 key that is both its libp2p identity and its signing key. The
//! [`roster::SignedRoster`] lists them and is itself signed by a threshold of them.
//!
//! ## Objects
//! | object | signed by | purpose |
//! |---|---|---|
//! | [`roster::SignedRoster`] | k members | membership, keys, addresses |
//! | [`manifest::Manifest`] | publisher | one version of a dataset, bound to its content hash |
//! | [`manifest::Withdrawal`] | publisher | removes a dataset from catalogs |
//! | [`access::AccessRequest`] | requester | asks for access, with a purpose |
//! | [`access::Decision`] | provider | approves (naming the grant) or denies (with a reason) |
//! | [`access::Grant`] | provider | permission: grantee, dataset, purpose, fields, window, count |
//! | [`access::Revocation`] | provider | ends a grant |
//! | [`exchange::FetchRequest`] | requester | one fetch under a grant: nonce, time, resume offset |
//! | [`exchange::Ticket`] | provider | the exact hash and size about to be sent |
//! | [`exchange::Receipt`] | requester | what was received |
//! | [`calls::CallBatch`] | requester | a Merkle root over a batch of sharing calls, one nonce |
//! | [`calls::CallAnswer`] | provider | a Merkle root over the results of those calls |
//! | [`provenance::Entry`] | (chained) | one step in a node's append-only log |
//! | [`provenance::Checkpoint`] | member | a signed log head, kept by peers as a witness |
//!
//! ## Encoding and signatures
//! Canonical CBOR ([`cbor`]), RFC 8949 deterministic encoding; every object has a `v` field (1).
//! A signature covers `tag || 0x00 || canonical body`, with a tag per kind ([`crypto::Kind::tag`]).
//! Decoders reject: input over the kind's size limit, non-canonical input, trailing bytes,
//! unknown versions, unknown fields, bad signatures, and (with a roster) a signer key that is not
//! the key of the member the object names as its author.

pub mod access;
pub mod calls;
pub mod cbor;
pub mod crypto;
pub mod exchange;
pub mod id;
pub mod manifest;
pub mod merkle;
pub mod provenance;
pub mod roster;
pub mod signed;
pub mod time;
pub mod wire;

pub use crypto::{Hash, Kind, PublicKey, SecretKey, Signature};
pub use id::{DatasetId, DatasetRef, ExchangeId, FederationId, GrantId, MemberId, Nonce, RequestId};
pub use signed::{Authored, OBJECT_VERSION, Object, Signed};
pub use time::Timestamp;
