//! The people who use the dashboard (`deltafed user ...`): a name, one role, and a login secret
//! shown once when the user is added. Only the secret's hash is kept (`Cf::Meta`, `user/NAME` →
//! [`User`] as JSON); a login presents name and secret, and the hash is compared.

use deltafed_protocol::Timestamp;
use serde::{Deserialize, Serialize};

use crate::roles::Role;
use crate::store::{self, Batch, Cf, Store};

/// Every login secret starts with this.
pub const SECRET_PREFIX: &str = "dfuser_";
const SECRET_CONTEXT: &str = "deltafed 2026-12 dashboard user secret v1";
const PREFIX: &[u8] = b"user/";
/// Most users one node keeps.
pub const MAX_USERS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("user name {0:?} is not valid: use 1-32 lower-case letters, digits and '-', starting with a letter")]
    BadName(String),
    #[error("a user named {0} exists; remove it first (`deltafed user remove {0}`)")]
    Exists(String),
    #[error("no user named {0}; see `deltafed user list`")]
    Unknown(String),
    #[error("this node already has {MAX_USERS} users")]
    TooMany,
    #[error("the stored user {name} is unreadable: {detail}")]
    Corrupt { name: String, detail: String },
    #[error("cannot draw a random secret: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub created: Timestamp,
    secret_hash: String,
}

fn key(name: &str) -> Vec<u8> {
    [PREFIX, name.as_bytes()].concat()
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(Error::BadName(name.into())) }
}

/// The users, over the node's database (read at each login; there are few).
#[derive(Clone)]
pub struct Users {
    store: Store,
}

impl Users {
    pub fn new(store: Store) -> Users {
        Users { store }
    }

    /// Adds a user; returns it and its login secret (shown this once). Not yet synced.
    pub fn add(&self, name: &str, role: Role, now: Timestamp) -> Result<(User, String), Error> {
        check_name(name)?;
        if self.store.get(Cf::Meta, &key(name))?.is_some() {
            return Err(Error::Exists(name.into()));
        }
        if self.list()?.len() >= MAX_USERS {
            return Err(Error::TooMany);
        }
        let (secret, hash) =
            crate::secret::new(SECRET_PREFIX, SECRET_CONTEXT).map_err(|e| Error::Random(e.to_string()))?;
        let user = User { name: name.into(), role, created: now, secret_hash: hex::encode(hash) };
        let bytes =
            serde_json::to_vec(&user).map_err(|e| Error::Corrupt { name: name.into(), detail: e.to_string() })?;
        self.store.put(Cf::Meta, &key(name), &bytes)?;
        Ok((user, secret))
    }

    pub fn get(&self, name: &str) -> Result<Option<User>, Error> {
        match self.store.get(Cf::Meta, &key(name))? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Corrupt { name: name.into(), detail: e.to_string() }),
        }
    }

    pub fn list(&self) -> Result<Vec<User>, Error> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan_prefix(Cf::Meta, PREFIX)? {
            let name = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
            out.push(serde_json::from_slice(&v).map_err(|e| Error::Corrupt { name, detail: e.to_string() })?);
        }
        Ok(out)
    }

    pub fn remove(&self, name: &str) -> Result<User, Error> {
        let user = self.get(name)?.ok_or_else(|| Error::Unknown(name.into()))?;
        let mut b = Batch::default();
        b.delete(Cf::Meta, key(name));
        self.store.write(b)?;
        Ok(user)
    }

    /// The user whose name and secret these are, if any. The same work is done for an unknown
    /// name as for a wrong secret.
    pub fn login(&self, name: &str, secret: &str) -> Result<Option<User>, Error> {
        let presented = crate::secret::hash(SECRET_CONTEXT, secret);
        let user = if check_name(name).is_ok() { self.get(name)? } else { None };
        let Some(user) = user else { return Ok(None) };
        let stored = hex::decode(&user.secret_hash).unwrap_or_default();
        // blake3::Hash compares in constant time.
        let matches = <[u8; 32]>::try_from(stored.as_slice())
            .is_ok_and(|s| blake3::Hash::from(s) == blake3::Hash::from(presented));
        Ok((matches && crate::secret::well_formed(SECRET_PREFIX, secret)).then_some(user))
    }
}
