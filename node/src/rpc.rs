//! Typed calls over `/deltafed/rpc/1`: one [`NetHandle::call`] encodes the request, waits for the
//! answer, decodes it and turns a peer's `Refused` into [`Error::Refused`], so no call site
//! handles bytes or refusals by hand. The typed helpers below name the one answer each request
//! expects; anything else is [`Error::Unexpected`].

use deltafed_protocol::wire::{Delivery, Request, Response, SyncRequest, SyncResponse, WireCall};
use deltafed_protocol::{ExchangeId, MemberId, cbor};
use libp2p::PeerId;

use crate::net::{self, NetHandle};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer understood the request and said no; the text is its reason.
    #[error("{0}")]
    Refused(String),
    /// No answer: not connected, the connection broke, or the request timed out.
    #[error("no answer: {0}")]
    Unreachable(#[source] net::Error),
    #[error("cannot encode the request: {0}")]
    Encode(#[source] cbor::Error),
    #[error("malformed answer: {0}")]
    Malformed(#[source] cbor::Error),
    #[error("unexpected answer ({got}) to a {asked} request")]
    Unexpected { asked: &'static str, got: &'static str },
}

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Sync(_) => "sync",
        Request::Deliver(_) => "deliver",
        Request::Fetch(_) => "fetch",
        Request::Chunk { .. } => "chunk",
        Request::Query(_) => "query",
        Request::WitnessOf { .. } => "witness-of",
        Request::Calls { .. } => "calls",
    }
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Sync(_) => "sync",
        Response::Ack => "ack",
        Response::Ticket { .. } => "ticket",
        Response::Chunk(_) => "chunk",
        Response::Answer { .. } => "answer",
        Response::Witnesses(_) => "witnesses",
        Response::Answers { .. } => "answers",
        Response::Refused(_) => "refused",
    }
}

impl NetHandle {
    /// Sends `req` to a connected member; a `Refused` answer is an error. Cancel-safe.
    pub async fn call(&self, peer: PeerId, req: &Request) -> Result<Response, Error> {
        let bytes = req.encode().map_err(Error::Encode)?;
        let answer = self.request(peer, bytes).await.map_err(Error::Unreachable)?;
        match Response::decode(&answer).map_err(Error::Malformed)? {
            Response::Refused(reason) => Err(Error::Refused(reason)),
            other => Ok(other),
        }
    }

    pub async fn sync(&self, peer: PeerId, req: SyncRequest) -> Result<SyncResponse, Error> {
        let req = Request::Sync(req);
        match self.call(peer, &req).await? {
            Response::Sync(page) => Ok(page),
            other => Err(unexpected(&req, &other)),
        }
    }

    /// Hands a delivery over; `Ok` once the member acknowledged it.
    pub async fn deliver(&self, peer: PeerId, d: Delivery) -> Result<(), Error> {
        let req = Request::Deliver(d);
        match self.call(peer, &req).await? {
            Response::Ack => Ok(()),
            other => Err(unexpected(&req, &other)),
        }
    }

    /// Sends a signed fetch request; answers the signed ticket and the chunk table.
    pub async fn fetch(&self, peer: PeerId, signed: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let req = Request::Fetch(signed);
        match self.call(peer, &req).await? {
            Response::Ticket { ticket, chunk_hashes } => Ok((ticket, chunk_hashes)),
            other => Err(unexpected(&req, &other)),
        }
    }

    pub async fn chunk(&self, peer: PeerId, exchange: ExchangeId, index: u64) -> Result<Vec<u8>, Error> {
        let req = Request::Chunk { exchange, index };
        match self.call(peer, &req).await? {
            Response::Chunk(bytes) => Ok(bytes),
            other => Err(unexpected(&req, &other)),
        }
    }

    /// Sends a signed query request; answers the signed answer and the records it hashes.
    pub async fn query(&self, peer: PeerId, signed: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let req = Request::Query(signed);
        match self.call(peer, &req).await? {
            Response::Answer { answer, records } => Ok((answer, records)),
            other => Err(unexpected(&req, &other)),
        }
    }

    /// Sends a signed batch of calls; answers the signed answer, the encoded results and the
    /// records of each call.
    pub async fn calls(&self, peer: PeerId, batch: Vec<u8>, calls: Vec<WireCall>) -> Result<Answers, Error> {
        let req = Request::Calls { batch, calls };
        match self.call(peer, &req).await? {
            Response::Answers { answer, results, records } => Ok(Answers {
                answer,
                results: results.into_iter().map(|b| b.into_vec()).collect(),
                records: records.into_iter().map(|b| b.into_vec()).collect(),
            }),
            other => Err(unexpected(&req, &other)),
        }
    }

    /// The checkpoints of `member` that `peer` keeps as a witness.
    pub async fn witnesses_of(&self, peer: PeerId, member: MemberId) -> Result<Vec<Vec<u8>>, Error> {
        let req = Request::WitnessOf { member };
        match self.call(peer, &req).await? {
            Response::Witnesses(list) => Ok(list.into_iter().map(|b| b.into_vec()).collect()),
            other => Err(unexpected(&req, &other)),
        }
    }
}

/// A provider's answer to a batch of calls, as received (verified by the caller).
pub struct Answers {
    pub answer: Vec<u8>,
    pub results: Vec<Vec<u8>>,
    pub records: Vec<Vec<u8>>,
}

fn unexpected(req: &Request, got: &Response) -> Error {
    Error::Unexpected { asked: request_name(req), got: response_name(got) }
}
