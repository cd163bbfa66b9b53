//! The provider's side of sharing calls: a batch's one signature checked, its root recomputed,
//! its nonce spent, then each call decided on its own by the policy and answered, and the
//! whole batch logged durably before the answer leaves.

use super::*;

impl Node {
    pub(in crate::node) async fn serve_calls(
        &self,
        from: &MemberId,
        batch: &[u8],
        calls: Vec<WireCall>,
    ) -> wire::Response {
        match self.try_serve_calls(from, batch, calls).await {
            Ok(r) => r,
            Err(r) => self.refuse(from, "call batch", r, batch),
        }
    }

    async fn try_serve_calls(
        &self,
        from: &MemberId,
        batch_bytes: &[u8],
        calls: Vec<WireCall>,
    ) -> Result<wire::Response, Refused> {
        let started = std::time::Instant::now();
        let whole = |reason: String| Refused { reason, dataset: None };
        let batch = Signed::<CallBatch>::decode_from_member_cached(batch_bytes, &self.roster().roster, &self.0.keys)
            .map_err(|e| whole(e.to_string()))?;
        let b = batch.body();
        let me = &self.0.member;
        if &b.requester != from || &b.provider != me {
            return Err(whole("the batch is not from its sender or not for this member".into()));
        }
        if calls.is_empty() || calls.len() > MAX_BATCH || b.count as usize != calls.len() {
            return Err(whole(format!(
                "a batch has 1 to {MAX_BATCH} calls, as many as it signs; this one signs {} and carries {}",
                b.count,
                calls.len()
            )));
        }
        let leaves: Vec<Hash> = calls.iter().map(|c| calls::leaf_of::<Call>(&c.call)).collect();
        if deltafed_protocol::merkle::root(&leaves) != b.root {
            return Err(whole("the calls do not match the batch's signed root".into()));
        }
        self.check_fresh(&b.nonce, b.time).map_err(|e| whole(e.to_string()))?;

        // Each call on its own: decoded, its key checked against its commitment, authorized.
        let mut decided: Vec<Result<(Call, usize), String>> = Vec::with_capacity(calls.len());
        let mut groups: Vec<Group> = Vec::new();
        for c in &calls {
            decided.push(self.decide_call(from, c, &mut groups));
        }
        // The lookups of the calls the policy allows, off the async threads, all in one go; a
        // call whose answer or log record would overflow this batch is deferred to the next.
        let index = self.0.keyindex.clone();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; calls.len()];
        // What a group's calls are looked up by, shared by them rather than copied per call.
        let targets: Vec<Option<LookupTarget>> =
            groups.iter().map(|g| g.auth.as_ref().ok().map(|(m, a)| Arc::new((m.clone(), a.fields.clone())))).collect();
        let mut work: Vec<Lookup> = Vec::new();
        for (i, d) in decided.iter().enumerate() {
            match d {
                Err(reason) => outcomes[i] = Some(Outcome::Refused { reason: reason.clone() }),
                Ok((_, g)) => {
                    if let Some(t) = &targets[*g] {
                        work.push((i, *g, t.clone(), calls[i].key.clone()));
                    }
                }
            }
        }
        let log_bytes: usize = calls.iter().map(|c| c.call.len() + 64).sum();
        // A live dataset's rows come from its database (concurrently, as many at a time as the
        // source's pool has connections), before the accounting below.
        // A live dataset's rows come from its database: one statement per dataset and
        // projection for the whole batch (`Live::lookup_many`), before the accounting below.
        let mut live_groups: Vec<(DatasetId, Option<Vec<String>>, Vec<usize>)> = Vec::new();
        for (w, item) in work.iter().enumerate() {
            let (m, fields) = &*item.2;
            if !m.live {
                continue;
            }
            match live_groups.iter_mut().find(|(d, f, _)| d == &m.dataset && f == fields) {
                Some(group) => group.2.push(w),
                None => live_groups.push((m.dataset.clone(), fields.clone(), vec![w])),
            }
        }
        let live = self.0.live.clone();
        let answers = futures::future::join_all(live_groups.iter().map(|(dataset, fields, members)| {
            let keys: Vec<&str> = members.iter().map(|w| work[*w].3.as_str()).collect();
            let live = live.clone();
            async move {
                let got = live.lookup_many(dataset, &keys, fields.as_deref(), MAX_RECORDS).await;
                (got, now())
            }
        }))
        .await;
        let mut pre: Vec<Option<(LiveGot, Timestamp)>> = (0..work.len()).map(|_| None).collect();
        for ((_, _, members), (got, read)) in live_groups.iter().zip(answers) {
            match got {
                Ok(rows) => {
                    for (w, r) in members.iter().zip(rows) {
                        pre[*w] = Some((Ok(r), read));
                    }
                }
                Err(e) => {
                    for w in members {
                        pre[*w] = Some((Err(e.clone()), read));
                    }
                }
            }
        }
        let work: Vec<(Lookup, Option<(LiveGot, Timestamp)>)> = work.into_iter().zip(pre).collect();
        let found = tokio::task::spawn_blocking(move || {
            let (mut answer_room, mut log_room) = (ANSWER_BYTES, LOG_BYTES.saturating_sub(log_bytes));
            work.into_iter()
                .map(|((i, g, target, key), pre)| {
                    let (m, fields) = &*target;
                    let (got, read) = match pre {
                        Some((got, t)) => (got, Some(t)),
                        None => (
                            index
                                .lookup(&m.content_hash, m.format, &m.schema, &key, fields.as_deref(), MAX_RECORDS)
                                .map_err(|e| LiveError::Invalid(e.to_string())),
                            None,
                        ),
                    };
                    let r = got.and_then(|recs| {
                        serde_json::to_vec(&recs)
                            .map(|b| (recs.len(), b))
                            .map_err(|e| LiveError::Invalid(e.to_string()))
                    });
                    let logged = fields.as_ref().map_or(0, |f| f.iter().map(|x| x.len() + 2).sum::<usize>());
                    let out = match r {
                        Ok((n, bytes)) if bytes.len() > ANSWER_BYTES => (
                            Outcome::Refused {
                                reason: format!("its {n} records are over the {ANSWER_BYTES}-byte limit of one answer"),
                            },
                            Vec::new(),
                        ),
                        Ok((_, bytes)) if bytes.len() > answer_room || logged > log_room => {
                            (Outcome::Deferred, Vec::new())
                        }
                        Ok((n, bytes)) => {
                            answer_room -= bytes.len();
                            log_room -= logged;
                            let o = Outcome::Answered {
                                version: m.version,
                                fields: fields.clone(),
                                records: Hash::of(&bytes),
                                count: n as u64,
                                read,
                            };
                            (o, bytes)
                        }
                        Err(LiveError::Unavailable(reason)) => (Outcome::Unavailable { reason }, Vec::new()),
                        Err(LiveError::Invalid(reason)) => {
                            (Outcome::Refused { reason: format!("cannot answer: {reason}") }, Vec::new())
                        }
                    };
                    (i, g, out)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| whole(format!("the lookups failed: {e}")))?;
        // Query budgets last, so that only calls about to be answered are counted: one write per
        // grant, for as many as it has left (the first ones of the batch); the rest are refused.
        let mut wanted = vec![0u64; groups.len()];
        for (_, g, (o, _)) in &found {
            if matches!(o, Outcome::Answered { .. }) {
                wanted[*g] += 1;
            }
        }
        let mut allowed = wanted.clone();
        let mut budget_reason = vec![None; groups.len()];
        for (g, group) in groups.iter().enumerate() {
            if let (Ok((_, Authorized { grant: Some(id), .. })), true) = (&group.auth, wanted[g] > 0) {
                match self.0.access.count_queries(id, wanted[g]) {
                    Ok(Ok(n)) => allowed[g] = n,
                    Ok(Err(r)) => {
                        allowed[g] = 0;
                        budget_reason[g] = Some(r.to_string());
                    }
                    Err(e) => return Err(whole(Error::from(e).to_string())),
                }
                if allowed[g] < wanted[g] && budget_reason[g].is_none() {
                    budget_reason[g] = Some(self.budget_reason(id));
                }
            }
        }
        let mut records: Vec<Vec<u8>> = vec![Vec::new(); calls.len()];
        for (i, g, (o, bytes)) in found {
            if matches!(o, Outcome::Answered { .. }) {
                if allowed[g] == 0 {
                    let reason = budget_reason[g].clone().unwrap_or_else(|| "the query budget is spent".into());
                    outcomes[i] = Some(Outcome::Refused { reason });
                    continue;
                }
                allowed[g] -= 1;
            }
            outcomes[i] = Some(o);
            records[i] = bytes;
        }
        let outcomes: Vec<Outcome> =
            outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Refused { reason: "not decided".into() })).collect();
        let results: Vec<Vec<u8>> = outcomes
            .iter()
            .zip(&leaves)
            .zip(&decided)
            .map(|((o, leaf), d)| {
                // The call's own salt: a neighbour's result leaf, in one call's proof, cannot be
                // tested against guesses of its outcome without it.
                let salt = d.as_ref().map_or(Salt([0; 16]), |(c, _)| c.salt);
                deltafed_protocol::signed::encode(&CallResult {
                    v: OBJECT_VERSION,
                    call: *leaf,
                    salt,
                    outcome: o.clone(),
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| whole(format!("cannot encode a result: {e}")))?;
        let answer = CallAnswer {
            v: OBJECT_VERSION,
            batch: batch.hash(),
            exchange: ExchangeId(random16().map_err(|e| whole(e.to_string()))?),
            provider: me.clone(),
            requester: from.clone(),
            count: b.count,
            root: calls::root_of::<CallResult>(&results),
            time: now(),
        };
        let answer = Signed::sign(answer, &self.0.key).map_err(|e| whole(e.to_string()))?;
        let datasets = distinct_datasets(me, decided.iter().filter_map(|d| d.as_ref().ok()).map(|(c, _)| &c.dataset));
        let tally = crate::metrics::Tally::of(outcomes.iter());
        for ((d, o), r) in decided.iter().zip(&outcomes).zip(&records) {
            let (dataset, app) = match d {
                Ok((c, _)) => (c.dataset.as_str(), c.app.as_deref()),
                Err(_) => ("(not decoded)", None),
            };
            let answered = matches!(o, Outcome::Answered { .. });
            self.0.metrics.call_done("served", from.as_str(), dataset, app, answered, r.len());
        }
        let logs = calls
            .iter()
            .zip(outcomes)
            .map(|(c, outcome)| CallLog { call: c.call.clone(), outcome, key: audit_hash(&self.0.audit_key, &c.key) })
            .collect();
        self.record(Record::calls_served(&batch, &answer, logs, datasets)).map_err(|e| whole(e.to_string()))?;
        // The nonce, the counts and the record are durable before the answer leaves.
        self.0.durable.sync().await.map_err(|e| whole(e.to_string()))?;
        self.0.batchers.batches_served.fetch_add(1, Ordering::Relaxed);
        self.0.batchers.calls_served.fetch_add(u64::from(b.count), Ordering::Relaxed);
        self.0.metrics.batch_served(from.as_str(), started.elapsed(), &tally);
        Ok(wire::Response::Answers {
            answer: answer.into_bytes(),
            results: results.into_iter().map(serde_bytes::ByteBuf::from).collect(),
            records: records.into_iter().map(serde_bytes::ByteBuf::from).collect(),
        })
    }

    /// Decodes and checks one call, and finds (or adds) the group of calls it is authorized with.
    fn decide_call(&self, from: &MemberId, c: &WireCall, groups: &mut Vec<Group>) -> Result<(Call, usize), String> {
        let call: Call = deltafed_protocol::signed::decode(&c.call).map_err(|e| e.to_string())?;
        if c.key.len() > MAX_KEY_BYTES {
            return Err(format!("the key is over {MAX_KEY_BYTES} bytes"));
        }
        if calls::key_commitment(&c.key_salt, &c.key) != call.key {
            return Err("the key sent does not match the call's signed commitment".into());
        }
        for label in [&call.app, &call.on_behalf_of].into_iter().flatten() {
            if label.len() > MAX_LABEL_BYTES {
                return Err(format!("a label of the call is over {MAX_LABEL_BYTES} bytes"));
            }
        }
        let g = match groups.iter().position(|g| g.dataset == call.dataset && g.grant == call.grant) {
            Some(g) => g,
            None => {
                let target =
                    DatasetRef { publisher: self.0.member.clone(), dataset: call.dataset.clone(), version: None };
                let auth = self.authorize(from, &target, call.grant).and_then(|(m, a)| {
                    policy::may_query(&m, a.fields.as_deref())?;
                    Ok((m, a))
                });
                groups.push(Group {
                    dataset: call.dataset.clone(),
                    grant: call.grant,
                    auth: auth.map_err(|e| e.to_string()),
                    calls: 0,
                });
                groups.len() - 1
            }
        };
        if let Err(reason) = &groups[g].auth {
            return Err(reason.clone());
        }
        groups[g].calls += 1;
        Ok((call, g))
    }

    /// Why a grant's query budget refuses, in the policy's words.
    fn budget_reason(&self, id: &GrantId) -> String {
        match self.0.access.grant(id) {
            Ok(Some(h)) => match policy::query_budget(h.grant.body(), h.queries) {
                Err(r) => r.to_string(),
                Ok(()) => "the grant's query budget is spent".into(),
            },
            _ => "the grant's query budget is spent".into(),
        }
    }
}

/// What one group's calls are looked up by: the manifest and the fields granted.
type LookupTarget = Arc<(Manifest, Option<Vec<String>>)>;
/// One call to look up: its index in the batch, its group, the group's target, its key.
type Lookup = (usize, usize, LookupTarget, String);
/// A live dataset's rows for one call.
type LiveGot = Result<Vec<serde_json::Map<String, serde_json::Value>>, LiveError>;

/// The calls of a batch under one dataset and grant: authorized once, budgeted in one write.
struct Group {
    dataset: DatasetId,
    grant: Option<GrantId>,
    auth: Result<(Manifest, Authorized), String>,
    calls: u64,
}
