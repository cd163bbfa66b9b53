//! The `rogue` member: a real member of the roster whose node is not running, played by a raw
//! libp2p swarm under the test's control that signs whatever requests the test wants, so only
//! the provider's own decisions can make a test pass.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use deltafed_protocol::calls::{self, Call, CallBatch, CallResult, Outcome as CallOutcome, Salt};
use deltafed_protocol::exchange::{FetchRequest, QueryRequest};
use deltafed_protocol::wire;
use deltafed_protocol::{ExchangeId, GrantId, Nonce, OBJECT_VERSION, SecretKey, Signed, Timestamp};
use deltafed_testnet::Federation;
use deltafed_testnet::peer::{Seen, TestPeer, Transport, member_addr_over};
use libp2p::PeerId;

use super::{CONNECT, SOON};

pub const MIB: usize = 1 << 20;

pub const LICENCES: &str = "company_id,name,capital\n\
91330100A1,杭州数澜科技,5000000\n\
91330100B2,Quoted Co,120000\n";

/// The `rogue` member, played by a raw peer connected to one provider.
pub struct Rogue {
    pub rt: tokio::runtime::Runtime,
    pub peer: TestPeer,
    pub key: SecretKey,
    pub provider: PeerId,
    nonces: AtomicU64,
    /// The member this peer is.
    pub name: String,
}

impl Rogue {
    pub fn connect(fed: &Federation, provider: &str, port: u16) -> Result<Rogue> {
        Rogue::connect_over(fed, provider, port, Transport::Tcp)
    }

    pub fn connect_over(fed: &Federation, provider: &str, port: u16, transport: Transport) -> Result<Rogue> {
        Rogue::connect_as(fed, "rogue", provider, port, transport)
    }

    pub fn connect_as(fed: &Federation, name: &str, provider: &str, port: u16, transport: Transport) -> Result<Rogue> {
        let key = deltafed_node::keyfile::read(&fed.data_dir(name).join("node.key"))?;
        let rt = tokio::runtime::Runtime::new()?;
        let peer = {
            let _guard = rt.enter();
            TestPeer::spawn(&key, "yrd-testnet")?
        };
        let (pid, addr) = member_addr_over(&fed.data_dir(provider), port, transport)?;
        rt.block_on(peer.dial(addr))?;
        rt.block_on(peer.wait_for(
            "the provider to subscribe",
            CONNECT,
            |s| matches!(s, Seen::Subscribed(p) if *p == pid),
        ))?;
        Ok(Rogue { rt, peer, key, provider: pid, nonces: AtomicU64::new(1), name: name.to_string() })
    }

    pub fn nonce(&self) -> Nonce {
        let n = self.nonces.fetch_add(1, Ordering::Relaxed);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.to_be_bytes());
        b[8..].copy_from_slice(&now().0.to_be_bytes());
        Nonce(b)
    }

    pub fn ask(&self, req: &wire::Request) -> Result<wire::Response> {
        let answer = self.rt.block_on(self.peer.call(self.provider, req.encode()?, SOON))?;
        Ok(wire::Response::decode(&answer)?)
    }

    pub fn fetch(
        &self,
        dataset: &str,
        version: Option<u64>,
        grant: Option<GrantId>,
        offset: u64,
    ) -> Result<wire::Response> {
        let r = FetchRequest {
            v: OBJECT_VERSION,
            requester: self.name.parse()?,
            provider: "zhejiang".parse()?,
            dataset: dataset.parse()?,
            version,
            grant,
            nonce: self.nonce(),
            time: now(),
            offset,
        };
        self.ask(&wire::Request::Fetch(Signed::sign(r, &self.key)?.into_bytes()))
    }

    pub fn query(&self, dataset: &str, grant: Option<GrantId>, key: &str) -> Result<wire::Response> {
        let r = QueryRequest {
            v: OBJECT_VERSION,
            requester: self.name.parse()?,
            provider: "zhejiang".parse()?,
            dataset: dataset.parse()?,
            grant,
            key: key.into(),
            nonce: self.nonce(),
            time: now(),
        };
        self.ask(&wire::Request::Query(Signed::sign(r, &self.key)?.into_bytes()))
    }

    /// A call as the rogue signs it: `(call bytes, key, key salt)`.
    pub fn call(&self, dataset: &str, grant: Option<GrantId>, key: &str) -> Result<wire::WireCall> {
        let key_salt = Salt(self.nonce().0);
        let c = Call {
            v: OBJECT_VERSION,
            salt: Salt(self.nonce().0),
            dataset: dataset.parse()?,
            grant,
            key: calls::key_commitment(&key_salt, key),
            app: Some("rogue-app".into()),
            on_behalf_of: None,
        };
        Ok(wire::WireCall { call: deltafed_protocol::signed::encode(&c)?, key: key.into(), key_salt })
    }

    /// A signed batch over `signed_calls` (its root, count and a fresh nonce) carrying `sent`.
    pub fn batch_of(&self, signed_calls: &[wire::WireCall], sent: Vec<wire::WireCall>) -> Result<wire::Request> {
        let b = CallBatch {
            v: OBJECT_VERSION,
            requester: self.name.parse()?,
            provider: "zhejiang".parse()?,
            nonce: self.nonce(),
            time: now(),
            count: u32::try_from(signed_calls.len())?,
            root: calls::root_of::<Call>(&signed_calls.iter().map(|c| c.call.clone()).collect::<Vec<_>>()),
        };
        Ok(wire::Request::Calls { batch: Signed::sign(b, &self.key)?.into_bytes(), calls: sent })
    }

    /// Sends `calls` as one honest batch; the outcomes, in order.
    pub fn batch(&self, calls: Vec<wire::WireCall>) -> Result<Vec<CallOutcome>> {
        let req = self.batch_of(&calls, calls.clone())?;
        match self.ask(&req)? {
            wire::Response::Answers { results, .. } => {
                results.iter().map(|r| Ok(deltafed_protocol::signed::decode::<CallResult>(r)?.outcome)).collect()
            }
            other => bail!("expected answers, got {other:?}"),
        }
    }

    /// An access request for zhejiang's `lic`, signed by the rogue, as a delivery.
    pub fn access_request(&self, id: u8) -> Result<wire::Request> {
        let r = deltafed_protocol::access::AccessRequest {
            v: OBJECT_VERSION,
            id: deltafed_protocol::RequestId([id; 16]),
            requester: self.name.parse()?,
            provider: "zhejiang".parse()?,
            dataset: "lic".parse()?,
            purpose: "flood".into(),
            fields: None,
            time: now(),
        };
        Ok(wire::Request::Deliver(wire::Delivery::AccessRequest(Signed::sign(r, &self.key)?.into_bytes())))
    }

    pub fn chunk(&self, exchange: ExchangeId, index: u64) -> Result<wire::Response> {
        self.ask(&wire::Request::Chunk { exchange, index })
    }
}

pub fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

pub fn ticket(r: &wire::Response) -> Result<ExchangeId> {
    match r {
        wire::Response::Ticket { ticket, .. } => {
            Ok(Signed::<deltafed_protocol::exchange::Ticket>::from_trusted_bytes(ticket)?.body().exchange)
        }
        other => bail!("expected a ticket, got {other:?}"),
    }
}

pub fn refusal(r: &wire::Response) -> &str {
    match r {
        wire::Response::Refused(reason) => reason,
        _ => "",
    }
}

pub fn grant(fed: &Federation, dataset: &str, extra: &[&str]) -> Result<GrantId> {
    let mut args = vec!["grant", dataset, "--to", "rogue", "--purpose", "audit"];
    args.extend_from_slice(extra);
    let g = fed.json("zhejiang", &args)?;
    g["grant_id"].as_str().context("grant_id")?.parse().context("grant id")
}

/// Deterministic bytes that do not compress to nothing.
pub fn data(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = *blake3::hash(b"deltafed test data").as_bytes();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = *blake3::hash(&block).as_bytes();
    }
    out.truncate(len);
    out
}

pub fn federation() -> Result<Federation> {
    let mut fed = Federation::init(&["zhejiang", "anhui", "rogue"])?;
    fed.start_all_but("rogue")?;
    fed.wait_mesh(&["zhejiang", "anhui"], CONNECT)?;
    Ok(fed)
}

/// Zhejiang publishes the licences as `dataset`, keyed by `company_id`, so it takes queries.
pub fn publish_keyed(fed: &Federation, dataset: &str) -> Result<()> {
    let lic = super::file(fed, &format!("{dataset}.csv"), LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", dataset, "--title", "L", "--key-field", "company_id"])?;
    Ok(())
}

/// Runs an adversarial test over TCP and then over QUIC.
pub fn over_both(test: impl Fn(Transport) -> Result<()>) -> Result<()> {
    for transport in [Transport::Tcp, Transport::Quic] {
        test(transport).with_context(|| format!("over {transport:?}"))?;
    }
    Ok(())
}
