//! The federation roster: the root of trust.
//!
//! A roster lists the members (id, display name, ed25519 key, reachable multiaddrs) and a
//! threshold k. Version 1 (or whatever version a node first installs) is valid when at least k
//! distinct members of it have signed it. A later version replaces the one in force only when it
//! meets its own threshold *and* is signed by at least k members of the version in force, so no
//! member (unless the federation chose k = 1) can change membership alone. A member signing twice
//! counts once; a signature that does not verify, or one by a key that is neither a member of
//! this version nor of the one it replaces, makes the roster invalid outright: a roster is either
//! clean or refused, never "valid despite".
//!
//! Multiaddrs are carried as text; the node parses them (this crate does not depend on libp2p).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::cbor;
use crate::crypto::{Kind, PublicKey, SecretKey, Signature};
use crate::id::{FederationId, MemberId};
use crate::signed::{self, Object, check_version};

/// Largest accepted roster encoding.
pub const MAX_ROSTER_SIZE: usize = 1 << 20;
/// Most members one roster may list.
pub const MAX_MEMBERS: usize = 1024;
/// Most addresses one member may list.
pub const MAX_ADDRS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: MemberId,
    /// Display name, e.g. "Zhejiang".
    pub name: String,
    pub key: PublicKey,
    /// Multiaddrs where the member accepts connections, as text.
    pub addrs: Vec<String>,
}

/// The signed content of a roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roster {
    pub v: u32,
    pub federation: FederationId,
    pub version: u64,
    pub threshold: u32,
    pub members: Vec<Member>,
}

impl Object for Roster {
    const KIND: Kind = Kind::Roster;
    const MAX_SIZE: usize = MAX_ROSTER_SIZE;
    fn version(&self) -> u32 {
        self.v
    }
}

impl Roster {
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.iter().find(|m| &m.id == id)
    }

    pub fn key_of(&self, id: &MemberId) -> Option<&PublicKey> {
        self.member(id).map(|m| &m.key)
    }

    pub fn member_by_key(&self, key: &PublicKey) -> Option<&Member> {
        self.members.iter().find(|m| &m.key == key)
    }

    /// Structural rules that hold whoever signed.
    pub fn check_structure(&self) -> Result<(), Invalid> {
        if self.version == 0 {
            return Err(Invalid::Structure("roster versions start at 1".into()));
        }
        if self.members.is_empty() {
            return Err(Invalid::Structure("it lists no members".into()));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(Invalid::Structure(format!("it lists {} members, over {MAX_MEMBERS}", self.members.len())));
        }
        let n = self.members.len();
        if self.threshold == 0 || self.threshold as usize > n {
            return Err(Invalid::Structure(format!(
                "threshold {} must be between 1 and the number of members ({n})",
                self.threshold
            )));
        }
        let mut ids = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for m in &self.members {
            if !ids.insert(&m.id) {
                return Err(Invalid::Structure(format!("member {} is listed twice", m.id)));
            }
            if !keys.insert(m.key) {
                return Err(Invalid::Structure(format!("member {} reuses another member's key", m.id)));
            }
            if !m.key.is_valid() {
                return Err(Invalid::Structure(format!("member {} has an invalid public key", m.id)));
            }
            if m.addrs.len() > MAX_ADDRS {
                return Err(Invalid::Structure(format!("member {} lists more than {MAX_ADDRS} addresses", m.id)));
            }
        }
        Ok(())
    }
}

/// One signature on a roster, by the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterSignature {
    pub key: PublicKey,
    pub sig: Signature,
}

/// A roster and the signatures collected on it. Decoding does not validate: validation needs to
/// know the version in force, and `roster show` must be able to say why a roster is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRoster {
    pub roster: Roster,
    pub sigs: Vec<RosterSignature>,
}

/// Why a roster is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Structure(String),
    #[error("the signature by key {0} does not verify")]
    BadSignature(PublicKey),
    #[error("it is signed by key {0}, which is not a member")]
    NonMember(PublicKey),
    #[error("it is signed by {have} distinct member(s) of the {need} its threshold requires{dup}")]
    BelowThreshold { have: usize, need: u32, dup: String },
    #[error("it is for federation {found}, not {expected}")]
    WrongFederation { expected: FederationId, found: FederationId },
    #[error("its version {found} does not replace version {current}, which is in force")]
    NotNewer { current: u64, found: u64 },
    #[error(
        "only {have} member(s) of version {version} (in force) signed it; {need} are required to change the roster"
    )]
    PreviousThreshold { have: usize, need: u32, version: u64 },
}

impl SignedRoster {
    /// A roster with no signatures yet.
    pub fn unsigned(roster: Roster) -> SignedRoster {
        SignedRoster { roster, sigs: Vec::new() }
    }

    pub fn encode(&self) -> Result<Vec<u8>, cbor::Error> {
        cbor::encode(Kind::Roster.name(), self)
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedRoster, cbor::Error> {
        #[derive(Deserialize)]
        struct Probe {
            roster: ProbeV,
        }
        #[derive(Deserialize)]
        struct ProbeV {
            v: u32,
        }
        let kind = Kind::Roster.name();
        cbor::check_canonical(kind, MAX_ROSTER_SIZE, bytes)?;
        let probe: Probe =
            cbor4ii::serde::from_slice(bytes).map_err(|e| cbor::Error::Shape { kind, detail: e.to_string() })?;
        check_version(kind, probe.roster.v)?;
        cbor::decode(kind, MAX_ROSTER_SIZE, bytes)
    }

    /// The canonical bytes every member signs.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, cbor::Error> {
        signed::encode(&self.roster)
    }

    /// Adds `key`'s signature. Signing twice with the same key is refused by the caller, not
    /// here, so that tests can build such a roster.
    pub fn add_signature(&mut self, key: &SecretKey) -> Result<(), cbor::Error> {
        let sig = key.sign(Kind::Roster, &self.signing_bytes()?);
        self.sigs.push(RosterSignature { key: key.public(), sig });
        Ok(())
    }

    pub fn is_signed_by(&self, key: &PublicKey) -> bool {
        self.sigs.iter().any(|s| &s.key == key)
    }

    /// The member ids (or, for non-members, keys) that signed, in signature order, duplicates kept.
    pub fn signer_names(&self) -> Vec<String> {
        self.sigs
            .iter()
            .map(|s| match self.roster.member_by_key(&s.key) {
                Some(m) => m.id.to_string(),
                None => s.key.to_string(),
            })
            .collect()
    }

    /// Validates this roster on its own (first install): structure, every signature, threshold.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.validate_inner(None)
    }

    /// Validates this roster as the successor of `current`, the roster in force.
    pub fn validate_successor(&self, current: &Roster) -> Result<(), Invalid> {
        self.validate_inner(Some(current))
    }

    fn validate_inner(&self, current: Option<&Roster>) -> Result<(), Invalid> {
        let r = &self.roster;
        r.check_structure()?;
        if let Some(cur) = current {
            if cur.federation != r.federation {
                return Err(Invalid::WrongFederation { expected: cur.federation.clone(), found: r.federation.clone() });
            }
            if r.version <= cur.version {
                return Err(Invalid::NotNewer { current: cur.version, found: r.version });
            }
        }
        let body = self.signing_bytes().map_err(|e| Invalid::Structure(e.to_string()))?;
        for s in &self.sigs {
            let known = r.member_by_key(&s.key).is_some() || current.is_some_and(|c| c.member_by_key(&s.key).is_some());
            if !known {
                return Err(Invalid::NonMember(s.key));
            }
            if s.key.verify(Kind::Roster, &body, &s.sig).is_err() {
                return Err(Invalid::BadSignature(s.key));
            }
        }
        let distinct_in = |roster: &Roster| -> BTreeSet<PublicKey> {
            self.sigs.iter().filter(|s| roster.member_by_key(&s.key).is_some()).map(|s| s.key).collect()
        };
        let own = distinct_in(r);
        if own.len() < r.threshold as usize {
            let dup = self.duplicate_note();
            return Err(Invalid::BelowThreshold { have: own.len(), need: r.threshold, dup });
        }
        if let Some(cur) = current {
            let prev = distinct_in(cur);
            if prev.len() < cur.threshold as usize {
                return Err(Invalid::PreviousThreshold { have: prev.len(), need: cur.threshold, version: cur.version });
            }
        }
        Ok(())
    }

    fn duplicate_note(&self) -> String {
        let mut seen = BTreeSet::new();
        let mut dups = BTreeSet::new();
        for (s, name) in self.sigs.iter().zip(self.signer_names()) {
            if !seen.insert(s.key) {
                dups.insert(name);
            }
        }
        if dups.is_empty() {
            String::new()
        } else {
            let names: Vec<_> = dups.into_iter().collect();
            format!(" ({} signed more than once, which counts once)", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SecretKey {
        SecretKey::from_seed([i; 32])
    }

    fn roster(version: u64, threshold: u32, members: &[(&str, u8)]) -> Roster {
        Roster {
            v: 1,
            federation: "yrd".parse().expect("valid"),
            version,
            threshold,
            members: members
                .iter()
                .map(|(id, k)| Member {
                    id: id.parse().expect("valid"),
                    name: id.to_string(),
                    key: key(*k).public(),
                    addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 4000 + u16::from(*k))],
                })
                .collect(),
        }
    }

    fn signed(r: Roster, signers: &[u8]) -> SignedRoster {
        let mut s = SignedRoster::unsigned(r);
        for i in signers {
            s.add_signature(&key(*i)).expect("signs");
        }
        s
    }

    const FOUR: [(&str, u8); 4] = [("shanghai", 1), ("jiangsu", 2), ("zhejiang", 3), ("anhui", 4)];

    #[test]
    fn threshold_met_is_valid_and_round_trips() {
        let s = signed(roster(1, 3, &FOUR), &[1, 2, 3]);
        assert_eq!(s.validate(), Ok(()));
        let bytes = s.encode().expect("encodes");
        assert_eq!(SignedRoster::decode(&bytes).expect("decodes"), s);
    }

    #[test]
    fn one_short_of_threshold_is_invalid() {
        let s = signed(roster(1, 3, &FOUR), &[1, 2]);
        assert_eq!(s.validate(), Err(Invalid::BelowThreshold { have: 2, need: 3, dup: String::new() }));
    }

    #[test]
    fn double_signature_counts_once() {
        let s = signed(roster(1, 2, &FOUR), &[1, 1]);
        let err = s.validate().expect_err("one distinct signer");
        assert!(err.to_string().contains("shanghai signed more than once"), "{err}");
    }

    #[test]
    fn non_member_and_bad_signatures_are_invalid() {
        let s = signed(roster(1, 1, &FOUR), &[1, 9]);
        assert_eq!(s.validate(), Err(Invalid::NonMember(key(9).public())));
        let mut s = signed(roster(1, 1, &FOUR), &[1, 2]);
        s.roster.threshold = 2; // changed after signing
        assert_eq!(s.validate(), Err(Invalid::BadSignature(key(1).public())));
    }

    #[test]
    fn structure_rules() {
        assert!(signed(roster(1, 0, &FOUR), &[1]).validate().is_err());
        assert!(signed(roster(1, 5, &FOUR), &[1, 2, 3, 4]).validate().is_err());
        assert!(signed(roster(1, 1, &[("a", 1), ("a", 2)]), &[1]).validate().is_err());
        assert!(signed(roster(1, 1, &[("a", 1), ("b", 1)]), &[1]).validate().is_err());
        assert!(signed(roster(0, 1, &FOUR), &[1]).validate().is_err());
    }

    #[test]
    fn successor_needs_the_threshold_of_the_version_in_force() {
        let v1 = roster(1, 3, &FOUR);
        // v2 removes anhui, adds nanjing (key 5), threshold 2 of its own.
        let members = [("shanghai", 1), ("jiangsu", 2), ("zhejiang", 3), ("nanjing", 5)];
        let two = signed(roster(2, 2, &members), &[1, 5]);
        assert_eq!(two.validate(), Ok(()), "valid on its own");
        assert_eq!(two.validate_successor(&v1), Err(Invalid::PreviousThreshold { have: 1, need: 3, version: 1 }));
        // A removed member (anhui, key 4) may still sign as a member of v1.
        let ok = signed(roster(2, 2, &members), &[1, 2, 4]);
        assert_eq!(ok.validate_successor(&v1), Ok(()));
        let same = signed(roster(1, 2, &members), &[1, 2, 3]);
        assert_eq!(same.validate_successor(&v1), Err(Invalid::NotNewer { current: 1, found: 1 }));
    }

    #[test]
    fn unknown_version_is_reported_as_such() {
        let mut s = signed(roster(1, 1, &FOUR), &[1]);
        s.roster.v = 2;
        let bytes = cbor::encode("roster", &s).expect("encodes");
        assert_eq!(
            SignedRoster::decode(&bytes),
            Err(cbor::Error::UnknownVersion { kind: "roster", found: 2, supported: 1 })
        );
    }
}
