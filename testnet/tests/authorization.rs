//! The provider's own authorization, tested through a raw peer (the `rogue` member, see
//! `common::rogue`): the requester's checks are bypassed on purpose, so only the provider's
//! decisions can make these tests pass. The fetch and query refusals run over TCP and over QUIC.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::rogue::*;
use common::{CONNECT, SOON, file};
use deltafed_protocol::access::{Decision, Outcome};
use deltafed_protocol::calls::Outcome as CallOutcome;
use deltafed_protocol::exchange::{FetchRequest, QueryRequest};
use deltafed_protocol::wire::{self, Delivery};
use deltafed_protocol::{GrantId, Nonce, OBJECT_VERSION, Signed, Timestamp};
use deltafed_testnet::Federation;
use deltafed_testnet::peer::{Seen, TestPeer, Transport, member_addr_over};

/// Naming an old version must not get around a withdrawal or a republication with
/// `--sharing none`: the dataset's newest state decides.
#[test]
fn withdrawn_or_unshared_datasets_are_served_in_no_version() -> Result<()> {
    over_both(withdrawn_or_unshared_datasets_are_served_in_no_version_over)
}

fn withdrawn_or_unshared_datasets_are_served_in_no_version_over(transport: Transport) -> Result<()> {
    let fed = federation()?;
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "closing", "--title", "C"])?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "open", "--title", "O", "--sharing", "unconditional"])?;
    let gid = grant(&fed, "closing", &[])?;
    let rogue = Rogue::connect_over(&fed, "zhejiang", fed.base_port(), transport)?;
    ticket(&rogue.fetch("closing", Some(1), Some(gid), 0)?).context("before: version 1 is served under the grant")?;
    ticket(&rogue.fetch("open", Some(1), None, 0)?).context("before: an unconditional dataset needs no grant")?;

    fed.json("zhejiang", &["publish", &lic, "--dataset", "closing", "--title", "C", "--sharing", "none"])?;
    let r = rogue.fetch("closing", Some(1), Some(gid), 0)?;
    assert!(refusal(&r).contains("not shared (sharing: none)"), "version 1 after sharing none: {r:?}");
    let r = rogue.query("closing", Some(gid), "91330100A1")?;
    assert!(!refusal(&r).is_empty(), "no query either: {r:?}");

    fed.json("zhejiang", &["withdraw", "open", "--reason", "superseded"])?;
    let r = rogue.fetch("open", Some(1), None, 0)?;
    assert!(refusal(&r).contains("withdrawn") && refusal(&r).contains("superseded"), "after withdrawal: {r:?}");
    Ok(())
}

/// A grant with `--max-fetches 1` gives one fetch: resumes continue it within a bound, a resume
/// that continues nothing is refused, and no chunk outside a ticket is served.
#[test]
fn max_fetches_cannot_be_bypassed_with_resumes() -> Result<()> {
    over_both(max_fetches_cannot_be_bypassed_with_resumes_over)
}

fn max_fetches_cannot_be_bypassed_with_resumes_over(transport: Transport) -> Result<()> {
    let fed = federation()?;
    let raw = file(&fed, "big.bin", &data(3 * MIB))?;
    fed.json("zhejiang", &["publish", &raw, "--dataset", "big", "--title", "Big"])?;
    let once = grant(&fed, "big", &["--max-fetches", "1"])?;
    let fresh = grant(&fed, "big", &["--max-fetches", "1"])?;
    let rogue = Rogue::connect_over(&fed, "zhejiang", fed.base_port(), transport)?;

    let first = ticket(&rogue.fetch("big", None, Some(once), 0)?)?;
    let r = rogue.fetch("big", None, Some(once), 0)?;
    assert!(refusal(&r).contains("all were used"), "a second fresh fetch: {r:?}");
    let r = rogue.fetch("big", None, Some(fresh), MIB as u64)?;
    assert!(refusal(&r).contains("must resume a fetch counted"), "a resume of nothing: {r:?}");

    // Take the whole first copy, then resume again and again from the second chunk.
    for i in 0..3 {
        assert!(matches!(rogue.chunk(first, i)?, wire::Response::Chunk(_)), "chunk {i} of the counted fetch");
    }
    let mut served = 3 * MIB;
    let mut stopped = None;
    for round in 0..8 {
        let resumed = ticket(&rogue.fetch("big", None, Some(once), MIB as u64)?)?;
        let r = rogue.chunk(resumed, 0)?;
        assert!(refusal(&r).contains("outside this exchange's ticket"), "chunk 0 below a resume's offset: {r:?}");
        for i in 1..3 {
            match rogue.chunk(resumed, i)? {
                wire::Response::Chunk(c) => served += c.len(),
                wire::Response::Refused(reason) => {
                    stopped = Some((round, reason));
                    break;
                }
                other => bail!("unexpected {other:?}"),
            }
        }
        if stopped.is_some() {
            break;
        }
    }
    let (_, reason) = stopped.context("resumes kept serving copies without end")?;
    assert!(reason.contains("moved its limit"), "{reason}");
    assert!(served <= 9 * MIB, "at most three times the data left under one counted fetch ({served} bytes)");
    Ok(())
}

/// Under a projected grant, querying by a key that is not among the granted fields would reveal
/// which key each granted value belongs to; it is refused. Queries draw on their own budget.
#[test]
fn queries_need_the_key_field_granted_and_keep_to_their_budget() -> Result<()> {
    over_both(queries_need_the_key_field_granted_and_keep_to_their_budget_over)
}

fn queries_need_the_key_field_granted_and_keep_to_their_budget_over(transport: Transport) -> Result<()> {
    let fed = federation()?;
    publish_keyed(&fed, "lic")?;
    let names_only = grant(&fed, "lic", &["--fields", "name"])?;
    let keyed = grant(&fed, "lic", &["--fields", "company_id,name", "--max-queries", "2"])?;
    let rogue = Rogue::connect_over(&fed, "zhejiang", fed.base_port(), transport)?;

    let r = rogue.query("lic", Some(names_only), "91330100A1")?;
    assert!(refusal(&r).contains("key field company_id"), "key not granted: {r:?}");
    for _ in 0..2 {
        let r = rogue.query("lic", Some(keyed), "91330100A1")?;
        assert!(matches!(r, wire::Response::Answer { .. }), "within budget: {r:?}");
    }
    let r = rogue.query("lic", Some(keyed), "91330100A1")?;
    assert!(refusal(&r).contains("allows 2 record queries"), "over budget: {r:?}");
    let grants = fed.json("zhejiang", &["grants"])?;
    let view = grants.as_array().and_then(|a| a.iter().find(|g| g["grant_id"] == keyed.to_string()));
    let view = view.context("the keyed grant in `grants`")?;
    assert_eq!((view["max_queries"].as_u64(), view["queries"].as_u64()), (Some(2), Some(2)), "{view}");
    Ok(())
}

/// A grant that starts later (`grant --not-before`) opens nothing before its time: the provider
/// itself refuses a fetch, a query and a call under it, with its reason, over TCP and QUIC. A
/// `--not-before` that is not before `--expires` is refused at the CLI.
#[test]
fn the_provider_refuses_a_grant_before_its_not_before() -> Result<()> {
    over_both(the_provider_refuses_a_grant_before_its_not_before_over)
}

fn the_provider_refuses_a_grant_before_its_not_before_over(transport: Transport) -> Result<()> {
    let fed = federation()?;
    publish_keyed(&fed, "lic")?;
    let o = fed.cli(
        "zhejiang",
        &["grant", "lic", "--to", "rogue", "--purpose", "a", "--not-before", "2d", "--expires", "1d"],
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--not-before") && err.contains("is not before --expires"), "{err}");
    let now_on = grant(&fed, "lic", &[])?;
    let later = grant(&fed, "lic", &["--not-before", "1h"])?;
    let grants = fed.json("zhejiang", &["grants"])?;
    let view = grants.as_array().and_then(|a| a.iter().find(|g| g["grant_id"] == later.to_string()));
    let not_before = view.and_then(|g| g["not_before"].as_str()).context("the later grant's not_before")?;
    let want = format!("grant {later} is not valid before {not_before}");
    let rogue = Rogue::connect_over(&fed, "zhejiang", fed.base_port(), transport)?;

    // Control: the same requests under a grant in force are served.
    assert!(matches!(rogue.fetch("lic", None, Some(now_on), 0)?, wire::Response::Ticket { .. }));
    assert!(matches!(rogue.query("lic", Some(now_on), "91330100A1")?, wire::Response::Answer { .. }));
    let r = rogue.fetch("lic", None, Some(later), 0)?;
    assert_eq!(refusal(&r), want, "fetch: {r:?}");
    let r = rogue.query("lic", Some(later), "91330100A1")?;
    assert!(refusal(&r).contains(&want), "query: {r:?}");
    let out = rogue.batch(vec![rogue.call("lic", Some(later), "91330100A1")?])?;
    assert!(matches!(&out[0], CallOutcome::Refused { reason } if reason.contains(&want)), "call: {:?}", out[0]);
    Ok(())
}

/// The batched call path decides each call by the same policy: the key field must be granted,
/// the budget is counted per call, a call's key must match its signed commitment, and the batch
/// must be signed over exactly the calls it carries, once (its nonce is spent).
#[test]
fn each_call_of_a_batch_is_authorized_and_the_batch_is_bound_to_its_calls() -> Result<()> {
    let fed = federation()?;
    publish_keyed(&fed, "lic")?;
    let names_only = grant(&fed, "lic", &["--fields", "name"])?;
    let keyed = grant(&fed, "lic", &["--fields", "company_id,name", "--max-queries", "3"])?;
    let rogue = Rogue::connect(&fed, "zhejiang", fed.base_port())?;

    // One batch: a call under a grant without the key field, four under a budget of three, a
    // call whose key does not match its commitment, one for a dataset that does not exist.
    let mut forged = rogue.call("lic", Some(keyed), "91330100A1")?;
    forged.key = "91330100B2".into();
    let mut list = vec![rogue.call("lic", Some(names_only), "91330100A1")?];
    for _ in 0..4 {
        list.push(rogue.call("lic", Some(keyed), "91330100B2")?);
    }
    list.push(forged);
    list.push(rogue.call("nothing", None, "x")?);
    let out = rogue.batch(list)?;
    let reason = |o: &CallOutcome| match o {
        CallOutcome::Refused { reason } => reason.clone(),
        other => format!("not refused: {other:?}"),
    };
    assert!(reason(&out[0]).contains("key field company_id"), "{:?}", out[0]);
    for o in &out[1..4] {
        assert!(matches!(o, CallOutcome::Answered { count: 1, .. }), "within budget: {o:?}");
    }
    assert!(reason(&out[4]).contains("allows 3 record queries"), "over budget: {:?}", out[4]);
    assert!(reason(&out[5]).contains("commitment"), "{:?}", out[5]);
    assert!(reason(&out[6]).contains("not in the catalog"), "{:?}", out[6]);
    let grants = fed.json("zhejiang", &["grants"])?;
    let view = grants.as_array().and_then(|a| a.iter().find(|g| g["grant_id"] == keyed.to_string()));
    assert_eq!(view.context("the keyed grant")?["queries"].as_u64(), Some(3));

    // A batch whose calls are not the ones signed, or signed for fewer calls, is refused whole.
    let open = grant(&fed, "lic", &["--fields", "company_id,name"])?;
    let a = rogue.call("lic", Some(open), "91330100A1")?;
    let b = rogue.call("lic", Some(open), "91330100B2")?;
    let r = rogue.ask(&rogue.batch_of(std::slice::from_ref(&a), vec![b.clone()])?)?;
    assert!(refusal(&r).contains("signed root"), "swapped call: {r:?}");
    let r = rogue.ask(&rogue.batch_of(std::slice::from_ref(&a), vec![a.clone(), b.clone()])?)?;
    assert!(refusal(&r).contains("as many as it signs"), "extra call: {r:?}");
    // The same signed batch twice: the second is a replay.
    let req = rogue.batch_of(std::slice::from_ref(&a), vec![a.clone()])?;
    assert!(matches!(rogue.ask(&req)?, wire::Response::Answers { .. }));
    let r = rogue.ask(&req)?;
    assert!(refusal(&r).contains("replayed"), "replay: {r:?}");
    // Revoked: the very next batch is refused per call, with the reason.
    fed.json("zhejiang", &["revoke", &open.to_string(), "--reason", "case closed"])?;
    let out = rogue.batch(vec![rogue.call("lic", Some(open), "91330100A1")?])?;
    assert!(reason(&out[0]).contains("revoked"), "{:?}", out[0]);
    Ok(())
}

/// A decision is only taken from the provider the request was made to.
#[test]
fn a_decision_from_another_member_than_the_provider_is_refused() -> Result<()> {
    let mut fed = Federation::init(&["zhejiang", "shanghai", "rogue"])?;
    fed.start_all_but("rogue")?;
    fed.wait_mesh(&["zhejiang", "shanghai"], CONNECT)?;
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "lic", "--title", "L"])?;
    fed.wait_for("the manifest at shanghai", SOON, |f| Ok(f.catalog("shanghai")?.contains(&"zhejiang/lic@1".into())))?;
    let sent = fed.json("shanghai", &["request", "zhejiang/lic", "--purpose", "checks"])?;
    let request: deltafed_protocol::RequestId = sent["request_id"].as_str().context("request_id")?.parse()?;
    let rogue = Rogue::connect(&fed, "shanghai", fed.base_port() + 1)?;
    let d = Decision {
        v: OBJECT_VERSION,
        request,
        provider: "rogue".parse()?,
        requester: "shanghai".parse()?,
        outcome: Outcome::Approved { grant: GrantId([7; 16]) },
        time: now(),
    };
    let r = rogue.ask(&wire::Request::Deliver(Delivery::Decision(Signed::sign(d, &rogue.key)?.into_bytes())))?;
    assert!(refusal(&r).contains("another provider"), "{r:?}");
    let requests = fed.json("shanghai", &["requests"])?;
    assert_eq!(requests[0]["state"], "pending", "the request is still pending: {requests}");
    Ok(())
}

/// A witness checkpoint is taken only from the member whose log it seals: a member relaying
/// another member's checkpoint is refused before anything of it is kept.
#[test]
fn a_checkpoint_relayed_by_another_member_is_refused() -> Result<()> {
    use std::sync::{Arc, Mutex};
    let fed = federation()?;
    let key = deltafed_node::keyfile::read(&fed.data_dir("rogue").join("node.key"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    // The raw member keeps the checkpoint zhejiang sends it on connecting.
    let kept: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let keep = kept.clone();
    let answer = move |bytes: &[u8]| -> Option<Vec<u8>> {
        // Anhui sends its own too when the peer connects to it; only zhejiang's is kept.
        if let Ok(wire::Request::Deliver(Delivery::Checkpoint(cp))) = wire::Request::decode(bytes)
            && Signed::<deltafed_protocol::provenance::Checkpoint>::from_trusted_bytes(&cp)
                .is_ok_and(|c| c.body().member.as_str() == "zhejiang")
        {
            *keep.lock().unwrap_or_else(|p| p.into_inner()) = Some(cp);
        }
        wire::Response::Ack.encode().ok()
    };
    let peer = TestPeer::spawn_answering(&key, "yrd-testnet", Arc::new(answer))?;
    for (member, port) in [("zhejiang", fed.base_port()), ("anhui", fed.base_port() + 1)] {
        let (pid, addr) = member_addr_over(&fed.data_dir(member), port, Transport::Tcp)?;
        rt.block_on(peer.dial(addr))?;
        rt.block_on(peer.wait_for(
            &format!("{member} to subscribe"),
            CONNECT,
            |s| matches!(s, Seen::Subscribed(p) if *p == pid),
        ))?;
    }
    let deadline = std::time::Instant::now() + SOON;
    let cp = loop {
        if let Some(cp) = kept.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            break cp;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "zhejiang sent no checkpoint on connecting");
        std::thread::sleep(Duration::from_millis(50));
    };
    let author = Signed::<deltafed_protocol::provenance::Checkpoint>::from_trusted_bytes(&cp)?.body().member.clone();
    assert_eq!(author.as_str(), "zhejiang", "the checkpoint is zhejiang's own");
    let (anhui, _) = member_addr_over(&fed.data_dir("anhui"), fed.base_port() + 1, Transport::Tcp)?;
    let relayed = wire::Request::Deliver(Delivery::Checkpoint(cp)).encode()?;
    let answer = wire::Response::decode(&rt.block_on(peer.call(anhui, relayed, SOON))?)?;
    assert!(refusal(&answer).contains("a checkpoint of another member"), "{answer:?}");
    Ok(())
}

/// Who asks, for what, and when: the provider checks each itself.
#[test]
fn the_provider_checks_sender_addressee_grantee_exchange_and_freshness() -> Result<()> {
    let mut fed = Federation::init(&["zhejiang", "anhui", "rogue", "other"])?;
    fed.start("zhejiang")?;
    fed.start("anhui")?;
    fed.wait_mesh(&["zhejiang", "anhui"], CONNECT)?;
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    publish_keyed(&fed, "lic")?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "open", "--title", "O", "--sharing", "unconditional"])?;
    let anhuis = {
        let g = fed.json("zhejiang", &["grant", "lic", "--to", "anhui", "--purpose", "p"])?;
        g["grant_id"].as_str().context("grant_id")?.parse::<GrantId>()?
    };
    let rogue = Rogue::connect(&fed, "zhejiang", fed.base_port())?;
    let other = Rogue::connect_as(&fed, "other", "zhejiang", fed.base_port(), Transport::Quic)?;

    let r = rogue.fetch("lic", None, Some(anhuis), 0)?;
    assert!(refusal(&r).contains("does not cover rogue"), "another member's grant: {r:?}");
    let r = rogue.query("lic", Some(anhuis), "91330100A1")?;
    assert!(refusal(&r).contains("does not cover rogue"), "another member's grant, query: {r:?}");

    // Signed by `other`, sent on rogue's connection.
    let open_fetch = |requester: &str, provider: &str| -> Result<FetchRequest> {
        Ok(FetchRequest {
            v: OBJECT_VERSION,
            requester: requester.parse()?,
            provider: provider.parse()?,
            dataset: "open".parse()?,
            version: None,
            grant: None,
            nonce: rogue.nonce(),
            time: now(),
            offset: 0,
        })
    };
    let r =
        rogue.ask(&wire::Request::Fetch(Signed::sign(open_fetch("other", "zhejiang")?, &other.key)?.into_bytes()))?;
    assert!(refusal(&r).contains("signed by other but came from rogue"), "{r:?}");
    let r = rogue.ask(&wire::Request::Fetch(Signed::sign(open_fetch("rogue", "anhui")?, &rogue.key)?.into_bytes()))?;
    assert!(refusal(&r).contains("addressed to anhui"), "{r:?}");

    // `other`'s exchange is not rogue's to read.
    let theirs = ticket(&other.fetch("open", None, None, 0)?)?;
    let r = rogue.chunk(theirs, 0)?;
    assert!(refusal(&r).contains("belongs to another member"), "{r:?}");
    assert!(matches!(other.chunk(theirs, 0)?, wire::Response::Chunk(_)), "the owner reads it");

    // Query replay and clock skew, as for fetch.
    let signed = |nonce: Nonce, time: Timestamp| -> Result<wire::Request> {
        let q = QueryRequest {
            v: OBJECT_VERSION,
            requester: "rogue".parse()?,
            provider: "zhejiang".parse()?,
            dataset: "open".parse()?,
            grant: None,
            key: "k".into(),
            nonce,
            time,
        };
        Ok(wire::Request::Query(Signed::sign(q, &rogue.key)?.into_bytes()))
    };
    let once = signed(rogue.nonce(), now())?;
    let r = rogue.ask(&once)?;
    assert!(
        refusal(&r).contains("without --key-field"),
        "open has no key field, so the query is refused after the freshness checks: {r:?}"
    );
    let r = rogue.ask(&once)?;
    assert!(refusal(&r).contains("replayed"), "the same query again: {r:?}");
    let r = rogue.ask(&signed(rogue.nonce(), Timestamp(now().0 - 3_600_000))?)?;
    assert!(refusal(&r).contains("clock"), "an hour-old query: {r:?}");
    Ok(())
}
