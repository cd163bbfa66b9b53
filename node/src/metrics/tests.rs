use std::time::Duration;

use deltafed_protocol::{DatasetRef, GrantId, Hash, MemberId, Timestamp};

use super::*;
use crate::policy::Refusal;

fn member(s: &str) -> MemberId {
    s.parse().expect("member id")
}

fn sample() -> Snapshot {
    Snapshot {
        member: "zhejiang".into(),
        federation: "yrd".into(),
        roster_version: 2,
        members: 4,
        connected: 3,
        catalog_datasets: 7,
        provenance_entries: 42,
        provenance_head_seq: Some(41),
        outbox: vec![("anhui".into(), 2)],
        requests_pending: vec![("incoming", 3), ("outgoing", 1)],
        requests_overdue: vec![("incoming", 1), ("outgoing", 0)],
        grants_active: vec![("issued", 5), ("received", 2)],
        exchanges_serving: 1,
        storage: Some(MemoryUsage { block_cache: 1, block_cache_limit: 2, write_buffers: 3, write_buffers_limit: 4 }),
    }
}

fn traffic(m: &Metrics) {
    m.gossip(&Ingested::Accepted);
    m.gossip(&Ingested::Rejected("bad".into()));
    m.answered("anhui", Rpc::Fetch, &wire::Response::Ticket { ticket: vec![], chunk_hashes: vec![] }, 0);
    m.answered("anhui", Rpc::Chunk, &wire::Response::Chunk(vec![0; 1000]), 0);
    m.answered("anhui", Rpc::Fetch, &wire::Response::Refused("replayed request: its nonce was already used".into()), 0);
    m.answered(
        "anhui",
        Rpc::Calls,
        &wire::Response::Refused("the calls do not match the batch's signed root".into()),
        3,
    );
    let answered = Outcome::Answered { version: 1, fields: None, records: Hash::of(b"[]"), count: 0, read: None };
    let refused = Outcome::Refused { reason: "grant 0 allows 1 record queries and all were used".into() };
    let outcomes = [answered.clone(), answered.clone(), refused.clone()];
    m.batch_served("anhui", Duration::from_millis(2), &Tally::of(outcomes.iter()));
    m.batch_sent("shanghai", Duration::from_millis(3), [(&answered, 10), (&refused, 0)].into_iter());
    m.batch_failed("shanghai", 4, &crate::node::Error::Unavailable("away".into()));
    m.fetch_received("shanghai", FetchOutcome::Ok, Duration::from_millis(250));
    m.chunk_received("shanghai", 500);
}

#[test]
fn renders_every_series_with_help_in_both_formats() {
    let m = Metrics::new();
    traffic(&m);
    let om = m.render(&sample(), Format::OpenMetrics).expect("renders");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let text = m.render(&sample(), Format::Text).expect("renders");
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    for line in [
        "deltafed_gossip_messages_total{result=\"accepted\"} 1",
        "deltafed_gossip_messages_total{result=\"stale\"} 0",
        "deltafed_fetches_total{side=\"served\",peer=\"anhui\",outcome=\"ok\"} 1",
        "deltafed_fetches_total{side=\"served\",peer=\"anhui\",outcome=\"refused\"} 1",
        "deltafed_fetches_total{side=\"received\",peer=\"shanghai\",outcome=\"ok\"} 1",
        "deltafed_calls_total{side=\"served\",peer=\"anhui\",outcome=\"answered\"} 2",
        "deltafed_calls_total{side=\"served\",peer=\"anhui\",outcome=\"refused\"} 4",
        "deltafed_calls_total{side=\"sent\",peer=\"shanghai\",outcome=\"answered\"} 1",
        "deltafed_calls_total{side=\"sent\",peer=\"shanghai\",outcome=\"failed\"} 4",
        "deltafed_data_bytes_total{direction=\"served\",peer=\"anhui\"} 1000",
        "deltafed_data_bytes_total{direction=\"received\",peer=\"shanghai\"} 510",
        "deltafed_refusals_total{request=\"fetch\",reason=\"replay\"} 1",
        "deltafed_refusals_total{request=\"calls\",reason=\"mismatch\"} 1",
        "deltafed_refusals_total{request=\"call\",reason=\"budget_spent\"} 1",
        "deltafed_call_batch_size_count{side=\"served\"} 1",
        "deltafed_call_batch_size_sum{side=\"served\"} 3.0",
        "deltafed_fetch_duration_seconds_count 1",
        "deltafed_build_info{version=\"",
        "deltafed_node_info{member=\"zhejiang\",federation=\"yrd\"} 1",
        "deltafed_members 4",
        "deltafed_members_connected 3",
        "deltafed_catalog_datasets 7",
        "deltafed_provenance_entries_total 42",
        "deltafed_provenance_head_seq 41",
        "deltafed_outbox_deliveries{member=\"anhui\"} 2",
        "deltafed_access_requests_pending{direction=\"incoming\"} 3",
        "deltafed_access_requests_overdue{direction=\"incoming\"} 1",
        "deltafed_grants_active{role=\"issued\"} 5",
        "deltafed_storage_memory_bytes{part=\"block_cache_limit\"} 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
        assert!(om.contains(line), "missing {line:?} in the OpenMetrics text\n{om}");
    }
    // In the text format every family is named as its series are, with help.
    for family in ["deltafed_gossip_messages_total", "deltafed_data_bytes_total", "deltafed_provenance_entries_total"] {
        assert!(text.contains(&format!("# TYPE {family} counter\n")), "{family}\n{text}");
        assert!(text.contains(&format!("# HELP {family} ")), "{family}\n{text}");
    }
    assert!(om.contains("# TYPE deltafed_gossip_messages counter\n"), "{om}");
    for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
        let help = line.splitn(4, ' ').nth(3).unwrap_or_default();
        assert!(help.len() > 10 && !help.contains('\\'), "{line}");
    }
    let mut families = 0;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap_or_default();
        assert!(name.starts_with("deltafed_"), "{line}");
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no help");
        families += 1;
    }
    assert!(families >= 23, "{families} families\n{text}");
}

#[test]
fn every_series_and_reason_is_in_the_operations_guide() {
    let guide = include_str!("../../../docs/operations.md");
    let m = Metrics::new();
    traffic(&m);
    let text = m.render(&sample(), Format::Text).expect("renders");
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap_or_default();
        assert!(guide.contains(&format!("`{name}`")), "docs/operations.md does not list {name}");
    }
    let reasons = [
        Reason::NotMember,
        Reason::Malformed,
        Reason::BadSignature,
        Reason::Mismatch,
        Reason::Replay,
        Reason::ClockSkew,
        Reason::NotFound,
        Reason::NotShared,
        Reason::Withdrawn,
        Reason::NeedsGrant,
        Reason::UnknownGrant,
        Reason::NotCovered,
        Reason::Revoked,
        Reason::NotYetValid,
        Reason::Expired,
        Reason::BudgetSpent,
        Reason::NotAResume,
        Reason::OutsideTicket,
        Reason::NotQueryable,
        Reason::UnknownExchange,
        Reason::TooLarge,
        Reason::Busy,
        Reason::Internal,
        Reason::Other,
    ];
    for r in reasons {
        assert!(guide.contains(&format!("`{}`", r.label())), "docs/operations.md does not list reason {}", r.label());
    }
}

#[test]
fn labels_stay_within_their_sets() {
    let m = Metrics::new();
    traffic(&m);
    let text = m.render(&Snapshot::default(), Format::Text).expect("renders");
    let allowed_peers = ["anhui", "shanghai", OTHER_PEER];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(at) = line.find("peer=\"") {
            let v = &line[at + 6..];
            let v = &v[..v.find('"').unwrap_or(0)];
            assert!(allowed_peers.contains(&v), "{line}");
        }
    }
    assert_eq!(
        Format::from_accept(Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
    assert_eq!(Format::from_accept(None), Format::Text);
}

#[test]
fn every_policy_refusal_has_its_reason() {
    let d: DatasetRef = "zhejiang/licences".parse().expect("dataset");
    let g = GrantId([7; 16]);
    let t = Timestamp(1_700_000_000_000);
    let zj = member("zhejiang");
    let cases = [
        (Refusal::NotShared { dataset: d.clone() }, Reason::NotShared),
        (Refusal::Withdrawn { dataset: d.clone(), reason: "grant 1 expired at noon".into() }, Reason::Withdrawn),
        (Refusal::NeedsGrant { dataset: d.clone() }, Reason::NeedsGrant),
        (Refusal::UnknownGrant { grant: g, provider: zj.clone() }, Reason::UnknownGrant),
        (Refusal::GrantDoesNotCover { grant: g, member: member("anhui"), dataset: d.clone() }, Reason::NotCovered),
        (Refusal::Revoked { grant: g, at: t, reason: "is not shared (sharing: none)".into() }, Reason::Revoked),
        (Refusal::NotYetValid { grant: g, not_before: t }, Reason::NotYetValid),
        (Refusal::Expired { grant: g, at: t }, Reason::Expired),
        (Refusal::FetchesUsed { grant: g, max: 1 }, Reason::BudgetSpent),
        (Refusal::QueriesUsed { grant: g, max: 1 }, Reason::BudgetSpent),
        (Refusal::NotAResume { grant: g }, Reason::NotAResume),
        (Refusal::FetchExhausted { grant: g, limit: 10 }, Reason::BudgetSpent),
        (Refusal::ChunkOutsideTicket { index: 9, first: 0, count: 2 }, Reason::OutsideTicket),
        (Refusal::GrantNotHeld { grant: g }, Reason::UnknownGrant),
        (Refusal::NoKeyField { dataset: d.clone() }, Reason::NotQueryable),
        (Refusal::KeyNotGranted { dataset: d.clone(), key_field: "id".into() }, Reason::NotQueryable),
        (Refusal::ClockSkew { time: t, skew: Duration::from_secs(300) }, Reason::ClockSkew),
        (Refusal::NoValidGrant { provider: zj.clone(), dataset: d.clone(), why: None }, Reason::NeedsGrant),
    ];
    for (refusal, want) in cases {
        let text = refusal.to_string();
        assert_eq!(Reason::of(&text), want, "{text}");
        // What the requester sees is prefixed with who said it; the label stays.
        assert_eq!(Reason::of(&format!("zhejiang refused: {text}")), want, "{text}");
    }
    assert_eq!(Reason::of("replayed request: its nonce was already used"), Reason::Replay);
    assert_eq!(Reason::of("not a member of the roster in force"), Reason::NotMember);
    assert_eq!(Reason::of("the fetch request signature does not verify"), Reason::BadSignature);
    assert_eq!(Reason::of("malformed request: truncated"), Reason::Malformed);
    assert_eq!(Reason::of("zhejiang/x is not in the catalog; see `deltafed catalog`"), Reason::NotFound);
    assert_eq!(Reason::of("something nobody foresaw"), Reason::Other);
}
