//! Identifiers: member, federation and dataset slugs, dataset references, and random ids.
//!
//! Ids are validated newtypes: a value of one of these types is always well-formed, so code that
//! holds one never re-checks it. Random ids (grants, requests, exchanges, nonces) are 16 bytes
//! supplied by the caller, shown as 32 hex characters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::crypto::fixed_bytes;

/// Why an identifier could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{what} {got:?} is not valid: {rule}")]
    BadSlug { what: &'static str, got: String, rule: &'static str },
    #[error(
        "dataset reference {got:?} is not valid: {why} (expected MEMBER/DATASET or MEMBER/DATASET@VERSION, e.g. zhejiang/licences@2)"
    )]
    BadRef { got: String, why: String },
}

fn check_slug(what: &'static str, s: &str, max: usize, extra: &[char], rule: &'static str) -> Result<(), Error> {
    let bad = || Error::BadSlug { what, got: s.to_string(), rule };
    let mut chars = s.chars();
    let first = chars.next().ok_or_else(bad)?;
    if s.len() > max || !first.is_ascii_lowercase() || s.ends_with('-') {
        return Err(bad());
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c)) {
        return Err(bad());
    }
    Ok(())
}

macro_rules! slug {
    ($(#[$doc:meta])* $name:ident, $what:expr, $max:expr, $extra:expr, $rule:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                check_slug($what, s, $max, $extra, $rule)?;
                Ok(Self(s.to_string()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                check_slug($what, &s, $max, $extra, $rule)?;
                Ok(Self(s))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::try_from(s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

slug!(
    /// A member of the federation, e.g. `zhejiang`: 1-32 characters, lower-case letters, digits
    /// and `-`, starting with a letter.
    MemberId, "member id", 32, &[],
    "use 1-32 lower-case letters, digits and '-', starting with a letter, e.g. zhejiang"
);
slug!(
    /// A federation, e.g. `yrd`.
    FederationId, "federation id", 64, &[],
    "use 1-64 lower-case letters, digits and '-', starting with a letter, e.g. yangtze-delta"
);
slug!(
    /// A dataset within one publisher, e.g. `business-licences`.
    DatasetId, "dataset id", 64, &['.', '_'],
    "use 1-64 lower-case letters, digits, '-', '_' and '.', starting with a letter, e.g. business-licences"
);

/// `MEMBER/DATASET[@VERSION]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DatasetRef {
    pub publisher: MemberId,
    pub dataset: DatasetId,
    pub version: Option<u64>,
}

impl DatasetRef {
    /// The reference without a version: `MEMBER/DATASET`.
    pub fn unversioned(&self) -> DatasetRef {
        DatasetRef { version: None, ..self.clone() }
    }
}

impl fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.publisher, self.dataset)?;
        if let Some(v) = self.version {
            write!(f, "@{v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for DatasetRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: String| Error::BadRef { got: s.to_string(), why };
        let (member, rest) = s.split_once('/').ok_or_else(|| bad("no '/' between member and dataset".into()))?;
        let (dataset, version) = match rest.split_once('@') {
            Some((d, v)) => {
                let v: u64 = v.parse().map_err(|_| bad(format!("version {v:?} is not a whole number")))?;
                if v == 0 {
                    return Err(bad("versions start at 1".into()));
                }
                (d, Some(v))
            }
            None => (rest, None),
        };
        Ok(DatasetRef {
            publisher: member.parse().map_err(|e: Error| bad(e.to_string()))?,
            dataset: dataset.parse().map_err(|e: Error| bad(e.to_string()))?,
            version,
        })
    }
}

impl Serialize for DatasetRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DatasetRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

fixed_bytes!(
    /// A grant's id.
    GrantId, 16, "a grant id"
);
fixed_bytes!(
    /// An access request's id.
    RequestId, 16, "a request id"
);
fixed_bytes!(
    /// An exchange's id; the entries of one exchange carry it on both sides.
    ExchangeId, 16, "an exchange id"
);
fixed_bytes!(
    /// A single-use value that makes a fetch request unique (replay protection).
    Nonce, 16, "a nonce"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids() {
        for ok in ["zhejiang", "a", "anhui-2", "x9"] {
            assert!(ok.parse::<MemberId>().is_ok(), "{ok}");
        }
        for bad in ["", "Zhejiang", "9a", "a_b", "a-", "a b", "zhé", &"a".repeat(33)] {
            assert!(bad.parse::<MemberId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dataset_refs_parse_with_clear_errors() {
        let r: DatasetRef = "zhejiang/licences@2".parse().expect("parses");
        assert_eq!(r.publisher.as_str(), "zhejiang");
        assert_eq!(r.dataset.as_str(), "licences");
        assert_eq!(r.version, Some(2));
        assert_eq!(r.to_string(), "zhejiang/licences@2");
        assert_eq!("zhejiang/licences".parse::<DatasetRef>().expect("parses").version, None);
        let err = "zhejiang".parse::<DatasetRef>().expect_err("no slash").to_string();
        assert!(err.contains("no '/'"), "{err}");
        let err = "zhejiang/x@two".parse::<DatasetRef>().expect_err("bad version").to_string();
        assert!(err.contains("\"two\" is not a whole number"), "{err}");
        assert!("zhejiang/x@0".parse::<DatasetRef>().is_err());
        assert!("Zhejiang/x".parse::<DatasetRef>().is_err());
    }
}
