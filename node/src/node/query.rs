//! Record queries, both sides: "the records with this key", authorized, signed and logged like a
//! fetch, answered from the key index built at publish time. Only the granted fields are
//! returned, and a projected grant must include the key field (policy::may_query).

use deltafed_protocol::exchange::{QueryAnswer, QueryRequest};
use deltafed_protocol::wire;
use deltafed_protocol::{DatasetRef, ExchangeId, Hash, MemberId, Nonce, OBJECT_VERSION, Signed};

use super::serve::Refused;
use super::{Error, Node, now, random16};
use crate::policy::{self, Authorized};
use crate::provenance::Record;

/// Most records one answer carries.
pub const MAX_RECORDS: usize = 1000;

/// The records a provider answered with, verified against its signed answer.
pub struct Answered {
    pub answer: Signed<QueryAnswer>,
    pub key: String,
    pub records: Vec<serde_json::Map<String, serde_json::Value>>,
}

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

    /// `deltafed query`: the requester's side.
    pub async fn query(&self, target: DatasetRef, key: String) -> Result<Answered, Error> {
        let provider = target.publisher.clone();
        if provider == self.0.member {
            return Err(Error::invalid("DATASET", format!("{target} is this member's own dataset")));
        }
        let m = self.manifest_for(&target.unversioned())?;
        let grant = self.grant_for(&m)?;
        if let Some(g) = &grant {
            policy::may_query(&m, g.grant.body().fields.as_deref())?;
            policy::query_budget(g.grant.body(), g.queries)?;
        } else {
            policy::may_query(&m, None)?;
        }
        let peer = self
            .peer_of_member(&provider)
            .ok_or_else(|| Error::not_found(format!("{provider} is not in the roster")))?;
        let req = QueryRequest {
            v: OBJECT_VERSION,
            requester: self.0.member.clone(),
            provider: provider.clone(),
            dataset: m.dataset.clone(),
            grant: grant.as_ref().map(|g| g.grant.body().id),
            key: key.clone(),
            nonce: Nonce(random16()?),
            time: now(),
        };
        let signed = Signed::sign(req, &self.0.key)?;
        let (answer_bytes, records_bytes) = match self.0.net.query(peer, signed.as_bytes().to_vec()).await {
            Ok(a) => a,
            Err(e) => {
                let e = Error::from_call(&provider, e);
                if let Error::Refused(reason) = &e {
                    self.record_or_log(Record::failed(
                        "query refused:",
                        &provider,
                        m.dataset_ref(),
                        reason,
                        Some(&signed),
                    ));
                }
                return Err(e);
            }
        };
        let mismatch = || Error::refused(format!("the answer from {provider} does not match the query or its records"));
        let a = Signed::<QueryAnswer>::decode_from_member(&answer_bytes, &self.roster().roster)
            .map_err(|e| Error::refused(format!("bad answer from {provider}: {e}")))?;
        let ab = a.body();
        if ab.request != signed.hash()
            || ab.records != Hash::of(&records_bytes)
            || ab.requester != self.0.member
            || ab.provider != provider
        {
            return Err(mismatch());
        }
        let records: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(&records_bytes)
            .map_err(|e| Error::refused(format!("the records from {provider} are not JSON objects: {e}")))?;
        if records.len() as u64 != ab.count {
            return Err(Error::refused(format!(
                "the answer from {provider} announces {} records but carries {}",
                ab.count,
                records.len()
            )));
        }
        self.record(Record::query_answered(&signed, &a))?;
        if let Some(g) = &grant {
            // The grantee counts too, so `deltafed grants` shows use on both sides.
            let _ = self.0.access.count_query(&g.grant.body().id)?;
        }
        self.0.durable.sync().await?;
        Ok(Answered { answer: a, key, records })
    }
}
