//! Record queries, both sides: "the records with this key", authorized, signed and logged like a
//! fetch, answered from the key index built at publish time.

use deltafed_protocol::exchange::{QueryAnswer, QueryRequest};
use deltafed_protocol::provenance::EntryKind;
use deltafed_protocol::wire;
use deltafed_protocol::{DatasetRef, ExchangeId, Hash, MemberId, Nonce, OBJECT_VERSION, Signed};

use super::{Node, ev, fields_note, grant_note, now, random16};
use crate::admin::api;
use crate::provenance::Record;

/// Most records one answer carries.
pub const MAX_RECORDS: usize = 1000;

impl Node {
    pub(super) async fn serve_query(&self, from: &MemberId, bytes: &[u8]) -> wire::Response {
        match self.try_serve_query(from, bytes).await {
            Ok(r) => r,
            Err((reason, dataset)) => self.refuse(from, "query", dataset, reason, bytes),
        }
    }

    async fn try_serve_query(
        &self,
        from: &MemberId,
        bytes: &[u8],
    ) -> Result<wire::Response, (String, Option<DatasetRef>)> {
        let req = Signed::<QueryRequest>::decode_from_member(bytes, &self.roster().roster)
            .map_err(|e| (e.to_string(), None))?;
        let rb = req.body();
        let me = &self.0.member;
        let target = DatasetRef { publisher: me.clone(), dataset: rb.dataset.clone(), version: None };
        let fail = |r: String| (r, Some(target.clone()));
        if &rb.requester != from || &rb.provider != me {
            return Err(fail("the query is not from its sender or not for this member".into()));
        }
        self.check_fresh(&rb.nonce, rb.time).map_err(fail)?;
        let m = self.manifest_for(&target).map_err(fail)?;
        if m.key_field.is_none() {
            return Err(fail(format!("{} has no key field and cannot be queried by key", m.dataset_ref())));
        }
        let super::fetch::Authorized { grant, fields, purpose } =
            self.authorize(from, &m, rb.grant.as_ref()).map_err(fail)?;
        let index = self.0.keyindex.clone();
        let (hash, format, schema, key, f2) =
            (m.content_hash, m.format, m.schema.clone(), rb.key.clone(), fields.clone());
        let records =
            tokio::task::spawn_blocking(move || index.lookup(&hash, format, &schema, &key, f2.as_deref(), MAX_RECORDS))
                .await
                .map_err(|e| fail(format!("internal error: {e}")))?
                .map_err(|e| fail(e.to_string()))?;
        let records_bytes = serde_json::to_vec(&records).map_err(|e| fail(e.to_string()))?;
        let exchange = ExchangeId(random16().map_err(fail)?);
        let answer = QueryAnswer {
            v: OBJECT_VERSION,
            exchange,
            request: req.hash(),
            provider: me.clone(),
            requester: from.clone(),
            dataset: m.dataset.clone(),
            version: m.version,
            fields: fields.clone(),
            records: Hash::of(&records_bytes),
            count: records.len() as u64,
            time: now(),
        };
        let signed = Signed::sign(answer, &self.0.key).map_err(|e| fail(e.to_string()))?;
        self.record(Record {
            time: now(),
            kind: EntryKind::QueryServed,
            dataset: Some(m.dataset_ref()),
            peer: Some(from.clone()),
            exchange: Some(exchange),
            note: format!(
                "{}; purpose: {purpose}; key {:?}; {} record(s); {}",
                grant_note(grant),
                rb.key,
                records.len(),
                fields_note(&fields)
            ),
            objects: vec![ev("query-request", bytes), ev("query-answer", signed.as_bytes())],
        });
        Ok(wire::Response::Answer { answer: signed.into_bytes(), records: records_bytes })
    }

    /// `deltafed query`: the requester's side.
    pub(super) async fn query(&self, target: DatasetRef, key: String) -> Result<api::QueryResult, String> {
        let provider = target.publisher.clone();
        if provider == self.0.member {
            return Err(format!("{target} is this member's own dataset"));
        }
        let m = self.manifest_for(&target.unversioned())?;
        if m.key_field.is_none() {
            return Err(format!("{} was published without --key-field and cannot be queried by key", m.dataset_ref()));
        }
        let grant = self.required_grant(&m)?;
        let peer = self.peer_of_member(&provider).ok_or_else(|| format!("{provider} is not in the roster"))?;
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
        let signed = Signed::sign(req, &self.0.key).map_err(|e| e.to_string())?;
        let rpc = wire::Request::Query(signed.as_bytes().to_vec()).encode().map_err(|e| e.to_string())?;
        let answer = self.0.net.request(peer, rpc).await.map_err(|e| format!("{provider} did not answer: {e}"))?;
        let (answer_bytes, records_bytes) = match wire::Response::decode(&answer).map_err(|e| e.to_string())? {
            wire::Response::Answer { answer, records } => (answer, records),
            wire::Response::Refused(reason) => {
                self.record(Record {
                    time: now(),
                    kind: EntryKind::ExchangeRefused,
                    dataset: Some(m.dataset_ref()),
                    peer: Some(provider.clone()),
                    exchange: None,
                    note: format!("query refused: {reason}"),
                    objects: vec![ev("query-request", signed.as_bytes())],
                });
                return Err(format!("{provider} refused: {reason}"));
            }
            other => return Err(format!("unexpected answer from {provider}: {other:?}")),
        };
        let a = Signed::<QueryAnswer>::decode_from_member(&answer_bytes, &self.roster().roster)
            .map_err(|e| format!("bad answer: {e}"))?;
        let ab = a.body();
        if ab.request != signed.hash() || ab.records != Hash::of(&records_bytes) || ab.requester != self.0.member {
            return Err(format!("the answer from {provider} does not match the query or its records"));
        }
        let records: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(&records_bytes)
            .map_err(|e| format!("the records from {provider} are not JSON objects: {e}"))?;
        if records.len() as u64 != ab.count {
            return Err(format!(
                "the answer from {provider} announces {} records but carries {}",
                ab.count,
                records.len()
            ));
        }
        self.record(Record {
            time: now(),
            kind: EntryKind::QueryAnswered,
            dataset: Some(m.dataset_ref()),
            peer: Some(provider.clone()),
            exchange: Some(ab.exchange),
            note: format!("key {key:?}; {} record(s); hash {}", ab.count, ab.records),
            objects: vec![ev("query-request", signed.as_bytes()), ev("query-answer", a.as_bytes())],
        });
        Ok(api::QueryResult {
            dataset: format!("{}/{}", provider, m.dataset),
            key,
            exchange_id: ab.exchange.to_string(),
            fields: ab.fields.clone(),
            records,
        })
    }
}
