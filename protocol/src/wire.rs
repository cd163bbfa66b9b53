//! Network messages that carry signed objects between nodes (not signed themselves: every object
//! inside is signed and verified on its own, so a relay cannot forge anything, only drop it).
//!
//! - Gossip on the federation's catalog topic: a manifest, a withdrawal or a roster.
//! - Request-response RPC: catalog sync (on every new connection, so a node that was down or
//!   cut off catches up without waiting for new gossip).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::cbor;

/// Encodes a network message. These envelopes are not signed (every signed object inside keeps
/// its own canonical bytes), so plain serde CBOR does: the canonical round trip would copy each
/// 1 MiB data chunk several times over for nothing.
fn encode_plain<T: Serialize>(kind: &'static str, value: &T) -> Result<Vec<u8>, cbor::Error> {
    cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| cbor::Error::Encode { kind, detail: e.to_string() })
}

/// Decodes a network message, refusing it over `max` bytes or with trailing bytes.
fn decode_plain<T: DeserializeOwned>(kind: &'static str, max: usize, bytes: &[u8]) -> Result<T, cbor::Error> {
    if bytes.len() > max {
        return Err(cbor::Error::Oversized { kind, size: bytes.len(), max });
    }
    let mut de = cbor4ii::serde::Deserializer::new(cbor4ii::core::utils::SliceReader::new(bytes));
    let value = T::deserialize(&mut de).map_err(|e| cbor::Error::Shape { kind, detail: e.to_string() })?;
    // What is left of the input must be nothing: a message is exactly one value.
    let mut rest = de.into_inner();
    match cbor4ii::core::dec::Read::fill(&mut rest, 1) {
        Ok(r) if r.as_ref().is_empty() => Ok(value),
        _ => Err(cbor::Error::Malformed { kind, detail: "trailing bytes after the message".into() }),
    }
}

/// Largest gossip message: a roster of a large federation must fit.
pub const MAX_GOSSIP_SIZE: usize = 256 * 1024;
/// Largest RPC request.
pub const MAX_RPC_REQUEST: usize = 512 * 1024;
/// Largest RPC response; sync pages stay below [`SYNC_PAGE_BYTES`].
pub const MAX_RPC_RESPONSE: usize = 8 * 1024 * 1024;
/// Sync responses are cut into pages of about this many bytes.
pub const SYNC_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// One gossiped object, in its signed encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gossip {
    Manifest(#[serde(with = "serde_bytes")] Vec<u8>),
    Withdrawal(#[serde(with = "serde_bytes")] Vec<u8>),
    Roster(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Gossip {
    pub fn encode(&self) -> Result<Vec<u8>, cbor::Error> {
        encode_plain("gossip message", self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Gossip, cbor::Error> {
        decode_plain("gossip message", MAX_GOSSIP_SIZE, bytes)
    }

    pub fn len(&self) -> usize {
        match self {
            Gossip::Manifest(b) | Gossip::Withdrawal(b) | Gossip::Roster(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Ask a peer for what it knows: its roster if newer than ours, and its catalog from a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub roster_version: u64,
    /// Continue after this catalog key (`publisher/dataset`); from the start when absent.
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncResponse {
    /// The responder's roster, when newer than the requester's.
    #[serde(with = "serde_bytes")]
    pub roster: Option<Vec<u8>>,
    /// Newest manifest (or withdrawal) of each dataset, in catalog key order.
    pub items: Vec<Gossip>,
    /// Cursor for the next page, when there is more.
    pub next: Option<String>,
}

/// A signed object handed to the member it concerns (grantee, provider, requester, witness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    AccessRequest(#[serde(with = "serde_bytes")] Vec<u8>),
    Decision(#[serde(with = "serde_bytes")] Vec<u8>),
    Grant(#[serde(with = "serde_bytes")] Vec<u8>),
    Revocation(#[serde(with = "serde_bytes")] Vec<u8>),
    Receipt(#[serde(with = "serde_bytes")] Vec<u8>),
    Checkpoint(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Requests of the `/deltafed/rpc/1` protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Request {
    Sync(SyncRequest),
    Deliver(Delivery),
    /// A signed fetch request.
    Fetch(#[serde(with = "serde_bytes")] Vec<u8>),
    /// One chunk of an exchange whose ticket was issued.
    Chunk {
        exchange: crate::ExchangeId,
        index: u64,
    },
    /// A signed query request.
    Query(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The checkpoints of `member` that the responder holds as a witness (a bounded sample
    /// spread over history, newest included).
    WitnessOf {
        member: crate::MemberId,
    },
    /// A batch of sharing calls: the signed [`crate::calls::CallBatch`] and its calls.
    Calls {
        #[serde(with = "serde_bytes")]
        batch: Vec<u8>,
        calls: Vec<WireCall>,
    },
}

/// One call of a batch as it travels: the call's canonical bytes and, beside it, the key asked
/// and the salt of the call's commitment to it (which no log keeps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCall {
    #[serde(with = "serde_bytes")]
    pub call: Vec<u8>,
    pub key: String,
    pub key_salt: crate::calls::Salt,
}

/// Responses of the `/deltafed/rpc/1` protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Sync(SyncResponse),
    /// The delivery was verified and kept.
    Ack,
    /// A signed ticket and the chunk table it names (each chunk's entry, in order; they merge
    /// into the ticket's `content_hash`).
    Ticket {
        #[serde(with = "serde_bytes")]
        ticket: Vec<u8>,
        #[serde(with = "serde_bytes")]
        chunk_hashes: Vec<u8>,
    },
    Chunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A signed query answer and the records it hashes (a JSON array of objects).
    Answer {
        #[serde(with = "serde_bytes")]
        answer: Vec<u8>,
        #[serde(with = "serde_bytes")]
        records: Vec<u8>,
    },
    Witnesses(Vec<serde_bytes::ByteBuf>),
    /// The signed [`crate::calls::CallAnswer`], the results (canonical
    /// [`crate::calls::CallResult`]s, in call order) and the records of each answered call (a
    /// JSON array, empty for the others).
    Answers {
        #[serde(with = "serde_bytes")]
        answer: Vec<u8>,
        results: Vec<serde_bytes::ByteBuf>,
        records: Vec<serde_bytes::ByteBuf>,
    },
    /// The request was understood and refused, with the reason.
    Refused(String),
}

impl Request {
    pub fn encode(&self) -> Result<Vec<u8>, cbor::Error> {
        encode_plain("rpc request", self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Request, cbor::Error> {
        decode_plain("rpc request", MAX_RPC_REQUEST, bytes)
    }
}

impl Response {
    pub fn encode(&self) -> Result<Vec<u8>, cbor::Error> {
        encode_plain("rpc response", self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Response, cbor::Error> {
        decode_plain("rpc response", MAX_RPC_RESPONSE, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let g = Gossip::Manifest(vec![1, 2, 3]);
        assert_eq!(Gossip::decode(&g.encode().expect("enc")).expect("dec"), g);
        let r = Response::Sync(SyncResponse { roster: Some(vec![9]), items: vec![g], next: Some("a/b".into()) });
        assert_eq!(Response::decode(&r.encode().expect("enc")).expect("dec"), r);
        let q = Request::Sync(SyncRequest { roster_version: 3, after: None });
        assert_eq!(Request::decode(&q.encode().expect("enc")).expect("dec"), q);
        assert!(Gossip::decode(&[0xff, 0x00]).is_err());
        let mut longer = q.encode().expect("enc");
        longer.push(0);
        assert!(Request::decode(&longer).is_err(), "trailing bytes are refused");
    }
}
