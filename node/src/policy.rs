//! Access policy: whether a member may receive a dataset now, decided in one place.
//!
//! Every function here is pure: it looks only at the values it is given (the dataset's latest
//! state, the grant held, counters, the time) and answers with what is allowed or a [`Refusal`].
//! Fetch, record queries and every later path that lets data leave a node (or asks for it) call
//! these functions; the callers only look the values up and act on the answer.
//!
//! The rules, provider side:
//! - The dataset's **latest** state decides, whatever version a request names: a withdrawn
//!   dataset, or one whose newest manifest says `sharing = none`, is served in no version.
//! - `unconditional` sharing needs no grant; `conditional` needs a grant issued by this member,
//!   to the requester, for that dataset, inside its validity window and not revoked.
//! - A grant's `max_fetches` counts fresh fetches; a resume continues a fetch already counted.
//! - A record query needs a dataset with a key field, and, under a projected grant, the key field
//!   among the granted fields (otherwise the key would work as an oracle for hidden columns).
//! - A signed request's time must be within the allowed clock skew of ours.

use std::fmt;
use std::time::Duration;

use deltafed_protocol::access::Grant;
use deltafed_protocol::manifest::{Manifest, Sharing};
use deltafed_protocol::{DatasetRef, GrantId, Hash, MemberId, Timestamp};

use crate::access::{HeldGrant, OpenFetch, Role};

/// A dataset's newest state in the catalog, as policy needs it.
#[derive(Debug, Clone, Copy)]
pub enum Latest<'a> {
    Published(&'a Manifest),
    Withdrawn { version: u64, reason: &'a str },
}

/// What authorizes one delivery to a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The grant used; `None` under unconditional sharing without one.
    pub grant: Option<GrantId>,
    /// The projection the grantee may receive (`None`: every field).
    pub fields: Option<Vec<String>>,
    /// The purpose it was granted for.
    pub purpose: String,
}

/// Why something is not allowed. The `Display` text is the sentence the other side sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The dataset's newest manifest says `sharing = none`.
    NotShared {
        dataset: DatasetRef,
    },
    /// The publisher withdrew the dataset.
    Withdrawn {
        dataset: DatasetRef,
        reason: String,
    },
    /// Conditional sharing and no grant was named.
    NeedsGrant {
        dataset: DatasetRef,
    },
    /// The grant named was not issued by this provider.
    UnknownGrant {
        grant: GrantId,
        provider: MemberId,
    },
    /// The grant exists but is for another member or dataset.
    GrantDoesNotCover {
        grant: GrantId,
        member: MemberId,
        dataset: DatasetRef,
    },
    Revoked {
        grant: GrantId,
        at: Timestamp,
        reason: String,
    },
    NotYetValid {
        grant: GrantId,
        not_before: Timestamp,
    },
    Expired {
        grant: GrantId,
        at: Timestamp,
    },
    FetchesUsed {
        grant: GrantId,
        max: u64,
    },
    QueriesUsed {
        grant: GrantId,
        max: u64,
    },
    /// A resume (offset > 0) that continues no counted fetch of the same data.
    NotAResume {
        grant: GrantId,
    },
    /// The counted fetch moved as much as it may, over all its resumes.
    FetchExhausted {
        grant: GrantId,
        limit: u64,
    },
    /// A chunk request for a chunk the exchange's ticket does not cover.
    ChunkOutsideTicket {
        index: u64,
        first: u64,
        count: u64,
    },
    GrantNotHeld {
        grant: GrantId,
    },
    /// The dataset was published without a key field.
    NoKeyField {
        dataset: DatasetRef,
    },
    /// A projected grant that does not include the key field.
    KeyNotGranted {
        dataset: DatasetRef,
        key_field: String,
    },
    /// The request's time is too far from ours.
    ClockSkew {
        time: Timestamp,
        skew: Duration,
    },
    /// Requester side: no valid grant is held (`why` is the newest grant's refusal, if any).
    NoValidGrant {
        provider: MemberId,
        dataset: DatasetRef,
        why: Option<Box<Refusal>>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotShared { dataset } => write!(f, "{dataset} is not shared (sharing: none)"),
            Refusal::Withdrawn { dataset, reason } => write!(f, "{dataset} was withdrawn by its publisher ({reason})"),
            Refusal::NeedsGrant { dataset } => {
                write!(f, "{dataset} is shared only under a grant; ask with `deltafed request {dataset} --purpose ...`")
            }
            Refusal::UnknownGrant { grant, provider } => write!(f, "no grant {grant} was issued by {provider}"),
            Refusal::GrantDoesNotCover { grant, member, dataset } => {
                write!(f, "grant {grant} does not cover {member} for {dataset}")
            }
            Refusal::Revoked { grant, at, reason } => write!(f, "grant {grant} was revoked at {at}: {reason}"),
            Refusal::NotYetValid { grant, not_before } => write!(f, "grant {grant} is not valid before {not_before}"),
            Refusal::Expired { grant, at } => write!(f, "grant {grant} expired at {at}"),
            Refusal::FetchesUsed { grant, max } => write!(f, "grant {grant} allows {max} fetch(es) and all were used"),
            Refusal::QueriesUsed { grant, max } => {
                write!(f, "grant {grant} allows {max} record queries and all were used")
            }
            Refusal::NotAResume { grant } => write!(
                f,
                "a fetch from a non-zero offset must resume a fetch counted under grant {grant} of the same data; start from offset 0"
            ),
            Refusal::FetchExhausted { grant, limit } => {
                write!(
                    f,
                    "the fetch counted under grant {grant} has moved its limit of {limit} bytes; start a new fetch"
                )
            }
            Refusal::ChunkOutsideTicket { index, first, count } => write!(
                f,
                "chunk {index} is outside this exchange's ticket (chunks {first} to {})",
                count.saturating_sub(1)
            ),
            Refusal::GrantNotHeld { grant } => write!(f, "grant {grant} is no longer held"),
            Refusal::NoKeyField { dataset } => {
                write!(f, "{dataset} was published without --key-field and cannot be queried by key")
            }
            Refusal::KeyNotGranted { dataset, key_field } => write!(
                f,
                "the grant for {dataset} does not include its key field {key_field}, so it cannot be queried by key"
            ),
            Refusal::ClockSkew { time, skew } => write!(
                f,
                "the request's time {time} is more than {} away from the provider's clock",
                humantime::format_duration(*skew)
            ),
            Refusal::NoValidGrant { provider, dataset, why } => {
                let ask = format!("ask with `deltafed request {dataset} --purpose ...`");
                match why {
                    Some(why) => write!(f, "no valid grant from {provider} for {}: {why}; {ask}", dataset.dataset),
                    None => {
                        write!(f, "this member holds no valid grant from {provider} for {}; {ask}", dataset.dataset)
                    }
                }
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// Whether the latest state of a dataset lets it be served at all (in any version).
pub fn servable(latest: Latest<'_>, dataset: &DatasetRef) -> Result<(), Refusal> {
    match latest {
        Latest::Withdrawn { reason, .. } => {
            Err(Refusal::Withdrawn { dataset: dataset.unversioned(), reason: reason.to_string() })
        }
        Latest::Published(m) if m.sharing == Sharing::None => {
            Err(Refusal::NotShared { dataset: dataset.unversioned() })
        }
        Latest::Published(_) => Ok(()),
    }
}

/// Whether a grant is in force at `now`: not revoked, inside its window.
pub fn grant_in_force(held: &HeldGrant, now: Timestamp) -> Result<(), Refusal> {
    let g = held.grant.body();
    if let Some(r) = &held.revocation {
        return Err(Refusal::Revoked { grant: g.id, at: r.body().time, reason: r.body().reason.clone() });
    }
    if now < g.not_before {
        return Err(Refusal::NotYetValid { grant: g.id, not_before: g.not_before });
    }
    if now >= g.expires {
        return Err(Refusal::Expired { grant: g.id, at: g.expires });
    }
    Ok(())
}

/// Provider side: may `requester` receive `manifest` (the version asked for) now?
///
/// `latest` is the dataset's newest state; `named` is the grant id the request carries and
/// `held` the grant this node holds under that id, if any.
pub fn may_serve(
    provider: &MemberId,
    requester: &MemberId,
    latest: Latest<'_>,
    manifest: &Manifest,
    named: Option<GrantId>,
    held: Option<&HeldGrant>,
    now: Timestamp,
) -> Result<Authorized, Refusal> {
    let dataset = manifest.dataset_ref();
    servable(latest, &dataset)?;
    // The newest manifest's sharing attribute governs every version.
    let sharing = match latest {
        Latest::Published(m) => m.sharing,
        Latest::Withdrawn { .. } => Sharing::None,
    };
    let Some(id) = named else {
        if sharing == Sharing::Unconditional {
            return Ok(Authorized { grant: None, fields: None, purpose: "unconditional sharing".into() });
        }
        return Err(Refusal::NeedsGrant { dataset: dataset.unversioned() });
    };
    let Some(held) = held else {
        return Err(Refusal::UnknownGrant { grant: id, provider: provider.clone() });
    };
    let g = held.grant.body();
    if held.role != Role::Issued || g.id != id || &g.grantee != requester || g.dataset != manifest.dataset {
        return Err(Refusal::GrantDoesNotCover { grant: id, member: requester.clone(), dataset });
    }
    grant_in_force(held, now)?;
    Ok(Authorized { grant: Some(id), fields: g.fields.clone(), purpose: g.purpose.clone() })
}

/// Whether one more fresh fetch fits the grant's budget, given the fetches already counted.
pub fn fetch_budget(grant: &Grant, used: u64) -> Result<(), Refusal> {
    match grant.max_fetches {
        Some(max) if used >= max => Err(Refusal::FetchesUsed { grant: grant.id, max }),
        _ => Ok(()),
    }
}

/// A counted fetch may move at most this many times its size over all its resumes: enough for
/// a requester that lost its unsynced tail a couple of times, never an unlimited number of copies.
pub const FETCH_COPIES: u64 = 3;

/// Whether a fetch from a non-zero offset continues the counted, unreceipted fetch `open` of the
/// same `content` under `grant`. Unlimited grants allow any resume.
pub fn resume(grant: &Grant, open: Option<&OpenFetch>, content: &Hash) -> Result<(), Refusal> {
    if grant.max_fetches.is_none() {
        return Ok(());
    }
    match open {
        Some(o) if o.content == content.0 => Ok(()),
        _ => Err(Refusal::NotAResume { grant: grant.id }),
    }
}

/// Accounts `bytes` more leaving under the counted fetch of a grant with a fetch budget, and
/// refuses once it would exceed [`FETCH_COPIES`] times the data's size. Unlimited grants are not
/// accounted (`None`: nothing to record).
pub fn serve_more(grant: &Grant, open: Option<&OpenFetch>, bytes: u64) -> Result<Option<OpenFetch>, Refusal> {
    if grant.max_fetches.is_none() {
        return Ok(None);
    }
    let Some(o) = open else {
        return Err(Refusal::NotAResume { grant: grant.id });
    };
    let limit = o.size.max(1).saturating_mul(FETCH_COPIES);
    let served = o.served.saturating_add(bytes);
    if served > limit {
        return Err(Refusal::FetchExhausted { grant: grant.id, limit });
    }
    Ok(Some(OpenFetch { served, ..*o }))
}

/// Whether one more record query fits the grant's query budget.
pub fn query_budget(grant: &Grant, used: u64) -> Result<(), Refusal> {
    match grant.max_queries {
        Some(max) if used >= max => Err(Refusal::QueriesUsed { grant: grant.id, max }),
        _ => Ok(()),
    }
}

/// Whether chunk `index` lies within a ticket that starts at chunk `first` and has `count`
/// chunks in all.
pub fn chunk_in_ticket(index: u64, first: u64, count: u64) -> Result<(), Refusal> {
    if index < first || index >= count {
        return Err(Refusal::ChunkOutsideTicket { index, first, count });
    }
    Ok(())
}

/// Whether a dataset may be queried by key under the projection `fields`.
pub fn may_query(manifest: &Manifest, fields: Option<&[String]>) -> Result<(), Refusal> {
    let dataset = manifest.dataset_ref();
    let Some(key) = &manifest.key_field else {
        return Err(Refusal::NoKeyField { dataset });
    };
    match fields {
        Some(f) if !f.iter().any(|x| x == key) => Err(Refusal::KeyNotGranted { dataset, key_field: key.clone() }),
        _ => Ok(()),
    }
}

/// Whether a signed request's time is close enough to ours.
pub fn fresh(time: Timestamp, now: Timestamp, skew: Duration) -> Result<(), Refusal> {
    if now.abs_diff(time) > skew { Err(Refusal::ClockSkew { time, skew }) } else { Ok(()) }
}

/// Requester side: the grant to use for receiving `manifest` from its publisher, chosen among
/// the grants this member holds. None is needed for unconditional sharing (one held is still
/// used, for its projection); one is required otherwise. When none is valid, the refusal says
/// why, with the provider's own words if it revoked the newest one.
pub fn choose_grant<'g>(
    manifest: &Manifest,
    grants: &'g [HeldGrant],
    now: Timestamp,
) -> Result<Option<&'g HeldGrant>, Refusal> {
    let dataset = manifest.dataset_ref();
    if manifest.sharing == Sharing::None {
        return Err(Refusal::NotShared { dataset: dataset.unversioned() });
    }
    let received = || {
        grants.iter().filter(|h| {
            let b = h.grant.body();
            h.role == Role::Received && b.provider == manifest.publisher && b.dataset == manifest.dataset
        })
    };
    let usable = received().filter(|h| grant_in_force(h, now).is_ok()).max_by_key(|h| h.grant.body().expires);
    if usable.is_some() || manifest.sharing == Sharing::Unconditional {
        return Ok(usable);
    }
    let newest = received().max_by_key(|h| h.grant.body().not_before);
    Err(Refusal::NoValidGrant {
        provider: manifest.publisher.clone(),
        dataset: dataset.unversioned(),
        why: newest.and_then(|h| grant_in_force(h, now).err()).map(Box::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltafed_protocol::access::Revocation;
    use deltafed_protocol::manifest::{Classification, Field, FieldType, Format};
    use deltafed_protocol::{DatasetId, Hash, OBJECT_VERSION, SecretKey, Signed};

    const T: Timestamp = Timestamp(1_700_000_000_000);
    const DAY: u64 = 86_400_000;

    fn member(s: &str) -> MemberId {
        s.parse().expect("member id")
    }

    fn manifest(version: u64, sharing: Sharing, key_field: Option<&str>) -> Manifest {
        Manifest {
            v: OBJECT_VERSION,
            publisher: member("zhejiang"),
            dataset: "licences".parse::<DatasetId>().expect("dataset id"),
            version,
            title: "t".into(),
            description: String::new(),
            format: Format::Csv,
            schema: ["id", "name", "capital"]
                .iter()
                .map(|n| Field { name: (*n).into(), ty: FieldType::String })
                .collect(),
            key_field: key_field.map(String::from),
            classification: Classification::General,
            sharing,
            size: 10,
            records: 1,
            content_hash: Hash([7; 32]),
            created: T,
            live: false,
        }
    }

    struct G {
        role: Role,
        grantee: &'static str,
        dataset: &'static str,
        fields: Option<Vec<String>>,
        not_before: Timestamp,
        expires: Timestamp,
        max_fetches: Option<u64>,
        max_queries: Option<u64>,
        revoked: bool,
    }

    impl Default for G {
        fn default() -> G {
            G {
                role: Role::Issued,
                grantee: "shanghai",
                dataset: "licences",
                fields: None,
                not_before: Timestamp(T.0 - DAY),
                expires: Timestamp(T.0 + DAY),
                max_fetches: None,
                max_queries: None,
                revoked: false,
            }
        }
    }

    fn held(g: G) -> HeldGrant {
        let key = SecretKey::from_seed([1; 32]);
        let grant = Grant {
            v: OBJECT_VERSION,
            id: GrantId([9; 16]),
            provider: member("zhejiang"),
            grantee: member(g.grantee),
            dataset: g.dataset.parse().expect("dataset id"),
            purpose: "licence checks".into(),
            fields: g.fields,
            not_before: g.not_before,
            expires: g.expires,
            max_fetches: g.max_fetches,
            request: None,
            max_queries: g.max_queries,
        };
        let revocation = g.revoked.then(|| {
            let r = Revocation {
                v: OBJECT_VERSION,
                grant: GrantId([9; 16]),
                provider: member("zhejiang"),
                grantee: member(g.grantee),
                time: T,
                reason: "purpose fulfilled".into(),
            };
            Signed::sign(r, &key).expect("sign")
        });
        HeldGrant {
            grant: Signed::sign(grant, &key).expect("sign"),
            role: g.role,
            revocation,
            fetches: 0,
            delivered: true,
            queries: 0,
            open: None,
        }
    }

    fn serve(latest: Latest<'_>, asked: &Manifest, named: bool, h: Option<&HeldGrant>) -> Result<Authorized, Refusal> {
        may_serve(&member("zhejiang"), &member("shanghai"), latest, asked, named.then_some(GrantId([9; 16])), h, T)
    }

    #[test]
    fn serve_decisions_table() {
        let cond = manifest(1, Sharing::Conditional, Some("id"));
        let uncond = manifest(1, Sharing::Unconditional, None);
        let none2 = manifest(2, Sharing::None, None);
        let cond2 = manifest(2, Sharing::Conditional, None);
        let ok = held(G::default());
        let projected = held(G { fields: Some(vec!["name".into()]), ..G::default() });
        type Expect = fn(&Result<Authorized, Refusal>) -> bool;
        let cases: Vec<(&str, Result<Authorized, Refusal>, Expect)> = vec![
            ("conditional with a valid grant", serve(Latest::Published(&cond), &cond, true, Some(&ok)), |r| {
                r.as_ref().is_ok_and(|a| a.grant.is_some() && a.fields.is_none() && a.purpose == "licence checks")
            }),
            (
                "the grant's projection is carried",
                serve(Latest::Published(&cond), &cond, true, Some(&projected)),
                |r| r.as_ref().is_ok_and(|a| a.fields == Some(vec!["name".to_string()])),
            ),
            ("unconditional without a grant", serve(Latest::Published(&uncond), &uncond, false, None), |r| {
                r.as_ref().is_ok_and(|a| a.grant.is_none())
            }),
            ("conditional without a grant", serve(Latest::Published(&cond), &cond, false, None), |r| {
                matches!(r, Err(Refusal::NeedsGrant { .. }))
            }),
            ("sharing none", serve(Latest::Published(&none2), &none2, true, Some(&ok)), |r| {
                matches!(r, Err(Refusal::NotShared { .. }))
            }),
            ("old version after sharing none", serve(Latest::Published(&none2), &cond, true, Some(&ok)), |r| {
                matches!(r, Err(Refusal::NotShared { .. }))
            }),
            (
                "old version after withdrawal",
                serve(Latest::Withdrawn { version: 2, reason: "superseded" }, &cond, true, Some(&ok)),
                |r| matches!(r, Err(Refusal::Withdrawn { reason, .. }) if reason == "superseded"),
            ),
            (
                "old unconditional version after a conditional one",
                serve(Latest::Published(&cond2), &uncond, false, None),
                |r| matches!(r, Err(Refusal::NeedsGrant { .. })),
            ),
            ("grant not held", serve(Latest::Published(&cond), &cond, true, None), |r| {
                matches!(r, Err(Refusal::UnknownGrant { .. }))
            }),
            (
                "grant for another member",
                serve(Latest::Published(&cond), &cond, true, Some(&held(G { grantee: "anhui", ..G::default() }))),
                |r| matches!(r, Err(Refusal::GrantDoesNotCover { .. })),
            ),
            (
                "grant for another dataset",
                serve(Latest::Published(&cond), &cond, true, Some(&held(G { dataset: "other", ..G::default() }))),
                |r| matches!(r, Err(Refusal::GrantDoesNotCover { .. })),
            ),
            (
                "a grant this node received, not issued",
                serve(Latest::Published(&cond), &cond, true, Some(&held(G { role: Role::Received, ..G::default() }))),
                |r| matches!(r, Err(Refusal::GrantDoesNotCover { .. })),
            ),
            (
                "revoked",
                serve(Latest::Published(&cond), &cond, true, Some(&held(G { revoked: true, ..G::default() }))),
                |r| matches!(r, Err(Refusal::Revoked { reason, .. }) if reason == "purpose fulfilled"),
            ),
            (
                "before not_before",
                serve(
                    Latest::Published(&cond),
                    &cond,
                    true,
                    Some(&held(G { not_before: Timestamp(T.0 + 1), ..G::default() })),
                ),
                |r| matches!(r, Err(Refusal::NotYetValid { .. })),
            ),
            (
                "at expiry",
                serve(Latest::Published(&cond), &cond, true, Some(&held(G { expires: T, ..G::default() }))),
                |r| matches!(r, Err(Refusal::Expired { .. })),
            ),
        ];
        for (name, got, expect) in &cases {
            assert!(expect(got), "{name}: {got:?}");
        }
    }

    #[test]
    fn budgets_keys_and_clocks() {
        let g = held(G { max_fetches: Some(2), ..G::default() });
        assert!(fetch_budget(g.grant.body(), 1).is_ok());
        assert!(matches!(fetch_budget(g.grant.body(), 2), Err(Refusal::FetchesUsed { max: 2, .. })));
        assert!(fetch_budget(held(G::default()).grant.body(), u64::MAX).is_ok(), "no maximum");

        let g = held(G { max_fetches: Some(1), ..G::default() });
        let (data, other) = (Hash([1; 32]), Hash([2; 32]));
        let open = OpenFetch { content: data.0, size: 100, served: 0 };
        assert!(resume(g.grant.body(), Some(&open), &data).is_ok(), "a resume of the counted fetch");
        assert!(matches!(resume(g.grant.body(), None, &data), Err(Refusal::NotAResume { .. })), "nothing counted");
        assert!(matches!(resume(g.grant.body(), Some(&open), &other), Err(Refusal::NotAResume { .. })), "other data");
        assert!(resume(held(G::default()).grant.body(), None, &data).is_ok(), "unlimited grants resume freely");
        let after = serve_more(g.grant.body(), Some(&open), 300).expect("three copies").expect("accounted");
        assert_eq!(after.served, 300);
        assert!(matches!(serve_more(g.grant.body(), Some(&after), 1), Err(Refusal::FetchExhausted { limit: 300, .. })));
        assert_eq!(serve_more(held(G::default()).grant.body(), None, 1 << 40), Ok(None), "unlimited: not accounted");
        let q = held(G { max_queries: Some(2), ..G::default() });
        assert!(query_budget(q.grant.body(), 1).is_ok());
        assert!(matches!(query_budget(q.grant.body(), 2), Err(Refusal::QueriesUsed { max: 2, .. })));
        assert!(chunk_in_ticket(3, 3, 5).is_ok() && chunk_in_ticket(4, 3, 5).is_ok());
        assert!(
            matches!(chunk_in_ticket(2, 3, 5), Err(Refusal::ChunkOutsideTicket { .. })),
            "below the ticket's offset"
        );
        assert!(matches!(chunk_in_ticket(5, 3, 5), Err(Refusal::ChunkOutsideTicket { .. })), "past the end");

        let keyed = manifest(1, Sharing::Conditional, Some("id"));
        assert!(may_query(&keyed, None).is_ok(), "unprojected");
        assert!(may_query(&keyed, Some(&["id".into(), "name".into()])).is_ok(), "key among the fields");
        let err = may_query(&keyed, Some(&["name".into()])).expect_err("key not granted");
        assert!(matches!(err, Refusal::KeyNotGranted { .. }) && err.to_string().contains("key field id"), "{err}");
        let unkeyed = manifest(1, Sharing::Conditional, None);
        assert!(matches!(may_query(&unkeyed, None), Err(Refusal::NoKeyField { .. })));

        let skew = Duration::from_secs(300);
        assert!(fresh(Timestamp(T.0 - 300_000), T, skew).is_ok());
        assert!(fresh(Timestamp(T.0 + 300_000), T, skew).is_ok());
        assert!(matches!(fresh(Timestamp(T.0 + 300_001), T, skew), Err(Refusal::ClockSkew { .. })));
        assert!(fresh(Timestamp(T.0 - 300_001), T, skew).expect_err("too old").to_string().contains("clock"));
    }

    #[test]
    fn requester_chooses_a_valid_grant() {
        let cond = manifest(1, Sharing::Conditional, None);
        let recv = |g: G| held(G { role: Role::Received, ..g });
        let valid = recv(G::default());
        let grants = vec![recv(G { expires: Timestamp(T.0 - 1), ..G::default() }), valid];
        assert!(choose_grant(&cond, &grants, T).is_ok_and(|g| g.is_some()));

        let revoked = vec![recv(G { revoked: true, ..G::default() })];
        let err = choose_grant(&cond, &revoked, T).expect_err("revoked");
        assert!(err.to_string().contains("revoked") && err.to_string().contains("purpose fulfilled"), "{err}");
        assert!(err.to_string().contains("deltafed request zhejiang/licences"), "{err}");

        let err = choose_grant(&cond, &[], T).expect_err("none held");
        assert!(err.to_string().contains("holds no valid grant"), "{err}");
        let issued = vec![held(G::default())];
        assert!(choose_grant(&cond, &issued, T).is_err(), "a grant we issued is not one we hold");

        let uncond = manifest(1, Sharing::Unconditional, None);
        assert!(choose_grant(&uncond, &[], T).is_ok_and(|g| g.is_none()));
        let none = manifest(1, Sharing::None, None);
        assert!(matches!(choose_grant(&none, &grants, T), Err(Refusal::NotShared { .. })));
    }
}
