//! Single record queries, provider side: one signed request per key, the protocol of the first
//! release, still answered for members that have not moved to the batched call path
//! (`calls.rs`, which this node itself uses for `deltafed query` and the gateway). Decided by
//! the same `authorize` and `policy::may_query` as a batch's calls.

use deltafed_protocol::exchange::{QueryAnswer, QueryRequest};
use deltafed_protocol::wire;
use deltafed_protocol::{DatasetRef, ExchangeId, Hash, MemberId, OBJECT_VERSION, Signed};

use super::serve::Refused;
use super::{Error, Node, now, random16};
use crate::policy::{self, Authorized};
use crate::provenance::Record;

/// Most records one answer carries.
pub const MAX_RECORDS: usize = 1000;

impl Node {
    pub(super) async fn serve_query(&self, from: &MemberId, bytes: &[u8]) -> wire::Response {
        match self.try_serve_query(from, bytes).await {
            Ok(r) => r,
            Err(r) => self.refuse(from, "query", r, bytes),
        }
    }

    async fn try_serve_query(&self, from: &MemberId, bytes: &[u8]) -> Result<wire::Response, Refused> {
        let req = Signed::<QueryRequest>::decode_from_member(bytes, &self.roster().roster)
            .map_err(|e| Refused { reason: e.to_string(), dataset: None })?;
        let rb = req.body();
        let me = &self.0.member;
        let target = DatasetRef { publisher: me.clone(), dataset: rb.dataset.clone(), version: None };
        let fail = Refused::about(&target);
        if &rb.requester != from || &rb.provider != me {
            return Err(fail(Error::refused("the query is not from its sender or not for this member")));
        }
        self.check_fresh(&rb.nonce, rb.time).map_err(&fail)?;
        let (m, Authorized { grant, fields, purpose }) = self.authorize(from, &target, rb.grant).map_err(&fail)?;
        policy::may_query(&m, fields.as_deref()).map_err(|r| fail(r.into()))?;
        if let Some(g) = &grant {
            self.0.access.count_query(g).map_err(|e| fail(e.into()))?.map_err(|r| fail(r.into()))?;
        }
        let index = self.0.keyindex.clone();
        let (hash, format, schema, key, f2) =
            (m.content_hash, m.format, m.schema.clone(), rb.key.clone(), fields.clone());
        let records =
            tokio::task::spawn_blocking(move || index.lookup(&hash, format, &schema, &key, f2.as_deref(), MAX_RECORDS))
                .await
                .map_err(|e| fail(e.into()))?
                .map_err(|e| fail(e.into()))?;
        let records_bytes = serde_json::to_vec(&records).map_err(|e| fail(Error::internal("encoding records", e)))?;
        let exchange = ExchangeId(random16().map_err(&fail)?);
        let answer = QueryAnswer {
            v: OBJECT_VERSION,
            exchange,
            request: req.hash(),
            provider: me.clone(),
            requester: from.clone(),
            dataset: m.dataset.clone(),
            version: m.version,
            fields,
            records: Hash::of(&records_bytes),
            count: records.len() as u64,
            time: now(),
        };
        let signed = Signed::sign(answer, &self.0.key).map_err(|e| fail(e.into()))?;
        self.record(Record::query_served(&req, &signed, grant, &purpose)).map_err(&fail)?;
        // The nonce, the count and the record are durable before the answer leaves.
        self.0.durable.sync().await.map_err(|e| fail(e.into()))?;
        Ok(wire::Response::Answer { answer: signed.into_bytes(), records: records_bytes })
    }
}
