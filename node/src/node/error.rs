//! What a node operation can fail with. The admin API, and later the application gateway, map
//! each kind once (a refusal, a missing object, bad input, a peer away, an internal fault)
//! instead of matching message text.

use std::error::Error as StdError;

use crate::policy::Refusal;
use crate::{access, blobs, catalog, keyindex, net, provenance, rosterfile, rpc, store};

type Source = Box<dyn StdError + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Policy or the other member said no; the text is the reason.
    #[error("{0}")]
    Refused(String),
    /// What the operation names does not exist here.
    #[error("{0}")]
    NotFound(String),
    /// The caller's input is wrong; `flag` names what to change.
    #[error("{message}")]
    Invalid { flag: &'static str, message: String },
    /// A member the operation needs did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A fault on this node (disk, database, a task that died); `context` says what it was doing.
    #[error("{context}: {source}")]
    Internal { context: &'static str, source: Source },
}

impl Error {
    pub fn refused(msg: impl Into<String>) -> Error {
        Error::Refused(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Error {
        Error::NotFound(msg.into())
    }

    pub fn invalid(flag: &'static str, msg: impl Into<String>) -> Error {
        Error::Invalid { flag, message: msg.into() }
    }

    pub fn internal(context: &'static str, source: impl Into<Source>) -> Error {
        Error::Internal { context, source: source.into() }
    }

    /// The kind as the admin API reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Refused(_) => "refused",
            Error::NotFound(_) => "not_found",
            Error::Invalid { .. } => "invalid",
            Error::Unavailable(_) => "unavailable",
            Error::Internal { .. } => "internal",
        }
    }

    /// The same error again, for each of several waiters (an internal fault keeps its text).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Refused(s) => Error::Refused(s.clone()),
            Error::NotFound(s) => Error::NotFound(s.clone()),
            Error::Invalid { flag, message } => Error::Invalid { flag, message: message.clone() },
            Error::Unavailable(s) => Error::Unavailable(s.clone()),
            Error::Internal { context, source } => Error::Internal { context, source: source.to_string().into() },
        }
    }

    /// A call to `member` that failed: its refusal keeps its words, prefixed with who said it.
    pub fn from_call(member: &deltafed_protocol::MemberId, e: rpc::Error) -> Error {
        match e {
            rpc::Error::Refused(reason) => Error::Refused(format!("{member} refused: {reason}")),
            rpc::Error::Unreachable(e) => Error::Unavailable(format!("{member} did not answer: {e}")),
            other => Error::Internal { context: "a call to another member", source: Box::new(other) },
        }
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        Error::Refused(r.to_string())
    }
}

/// Module errors become internal faults, each with the part of the node it came from.
macro_rules! internal_from {
    ($($ty:ty => $context:literal),* $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Error {
                Error::Internal { context: $context, source: Box::new(e) }
            }
        }
    )*};
}

internal_from! {
    store::Error => "the database",
    access::Error => "the access records",
    catalog::Error => "the catalog",
    provenance::Error => "the provenance log",
    blobs::Error => "the data store",
    keyindex::Error => "the key index",
    net::Error => "the network",
    rosterfile::Error => "the roster file",
    deltafed_protocol::cbor::Error => "encoding",
    tokio::task::JoinError => "a worker task",
}
