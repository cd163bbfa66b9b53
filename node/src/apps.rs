//! Local applications of the gateway and their bearer tokens.
//!
//! An application has a name (a slug), the datasets it may call (unversioned references to
//! other members' datasets), a rate (calls per second) and one token. The token is shown once,
//! when it is made; only its BLAKE3 hash (derived under a context of its own) is stored, and a
//! presented token is found by its hash. Since the lookup key is a hash of a 256-bit secret,
//! timing differences of the lookup reveal nothing useful about any token.
//!
//! The registry lives in memory (every gateway call reads it) and in the `apps` column family.
//! Changes take effect in memory in the same step they are written, so a removed or rotated
//! token is refused from the next call on. Call counters are kept in memory and written in one
//! batch by [`Apps::flush_usage`] (every second and at shutdown), never once per call.
//!
//! Layout of `apps`: `def/NAME` → [`Stored`] (JSON); `use/NAME` → calls (8 bytes, big-endian)
//! ++ time of the last call (ms since the epoch, 8 bytes, 0 = never).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deltafed_protocol::{DatasetRef, Timestamp};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::store::{self, Batch, Cf, Store};

/// Every token starts with this, so a leaked one is recognisable (by a secret scanner, in a log).
pub const TOKEN_PREFIX: &str = "dfapp_";
/// The context of the token hash: a stored hash is useless as anything else's hash.
const TOKEN_HASH_CONTEXT: &str = "deltafed 2026-12 gateway application token v1";
/// Highest rate an application may be given, in calls per second.
pub const MAX_RATE: u32 = 1_000_000;
/// Most applications one node keeps (the registry is read on every call and held in memory).
pub const MAX_APPS: usize = 10_000;
/// Most datasets one application may be given.
pub const MAX_DATASETS: usize = 1000;
/// Longest application name.
const MAX_NAME: usize = 32;

const DEF: &[u8] = b"def/";
const USE: &[u8] = b"use/";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "application name {0:?} is not valid: use 1-{MAX_NAME} lower-case letters, digits and '-', starting with a letter, e.g. credit-check"
    )]
    BadName(String),
    #[error(
        "an application named {0} already exists; choose another name, or `deltafed app rotate {0}` for a new token"
    )]
    Exists(String),
    #[error("no application named {0}; see `deltafed app list`")]
    Unknown(String),
    #[error("--rate {0} is out of range: give 1 to {MAX_RATE} calls per second")]
    BadRate(u32),
    #[error("an application may be given at most {MAX_DATASETS} datasets, not {0}")]
    TooManyDatasets(usize),
    #[error("this node already has {MAX_APPS} applications; remove some with `deltafed app remove NAME` first")]
    TooMany,
    #[error("the stored record of application {name} is corrupt: {detail}")]
    Corrupt { name: String, detail: String },
    #[error("cannot draw a random token: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Checks an application name: the same rule as member ids.
pub fn check_name(name: &str) -> Result<(), Error> {
    let bad = || Error::BadName(name.to_string());
    let mut chars = name.chars();
    let first = chars.next().ok_or_else(bad)?;
    if name.len() > MAX_NAME || !first.is_ascii_lowercase() || name.ends_with('-') {
        return Err(bad());
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(bad());
    }
    Ok(())
}

/// A token's stored form.
fn token_hash(token: &str) -> [u8; 32] {
    crate::secret::hash(TOKEN_HASH_CONTEXT, token)
}

/// A new token and its hash.
fn new_token() -> Result<(String, [u8; 32]), Error> {
    crate::secret::new(TOKEN_PREFIX, TOKEN_HASH_CONTEXT).map_err(|e| Error::Random(e.to_string()))
}

/// What is stored of an application (its counters are stored apart, see the module doc).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    datasets: Vec<DatasetRef>,
    rate: u32,
    /// Milliseconds since the epoch.
    created: u64,
    /// Hex of the token's hash.
    token_hash: String,
}

/// Why a call was not admitted by the application's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Over the rate now; this long until the calls would fit.
    Wait(Duration),
    /// More calls at once than the rate allows in a whole second: they never fit.
    TooMany { asked: u32, rate: u32 },
}

/// One registered application, as the gateway sees it on every call.
pub struct App {
    pub name: String,
    /// Unversioned references.
    pub datasets: Vec<DatasetRef>,
    /// Calls per second.
    pub rate: u32,
    pub created: Timestamp,
    calls: AtomicU64,
    /// Milliseconds since the epoch; 0 = never.
    last_call: AtomicU64,
    /// Counters changed since the last flush.
    dirty: AtomicBool,
    limiter: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("name", &self.name).field("rate", &self.rate).finish_non_exhaustive()
    }
}

impl App {
    fn new(name: String, s: &Stored, calls: u64, last_call: u64) -> App {
        let rate = NonZeroU32::new(s.rate.clamp(1, MAX_RATE)).unwrap_or(NonZeroU32::MIN);
        App {
            name,
            datasets: s.datasets.clone(),
            rate: rate.get(),
            created: Timestamp(s.created),
            calls: AtomicU64::new(calls),
            last_call: AtomicU64::new(last_call),
            dirty: AtomicBool::new(false),
            limiter: RateLimiter::direct(Quota::per_second(rate)),
        }
    }

    /// Whether this application was given `dataset` (any version of it).
    pub fn may_call(&self, dataset: &DatasetRef) -> bool {
        self.datasets.iter().any(|d| d.publisher == dataset.publisher && d.dataset == dataset.dataset)
    }

    /// Admits `n` calls against the rate, or says how long to wait. Admitted calls are counted.
    pub fn admit(&self, n: u32, now: Timestamp) -> Result<(), Throttled> {
        let Some(cells) = NonZeroU32::new(n) else { return Ok(()) };
        match self.limiter.check_n(cells) {
            Ok(Ok(())) => {
                self.calls.fetch_add(u64::from(n), Ordering::Relaxed);
                self.last_call.fetch_max(now.0, Ordering::Relaxed);
                self.dirty.store(true, Ordering::Release);
                Ok(())
            }
            Ok(Err(not_until)) => Err(Throttled::Wait(not_until.wait_time_from(DefaultClock::default().now()))),
            Err(_) => Err(Throttled::TooMany { asked: n, rate: self.rate }),
        }
    }

    /// Calls admitted so far and the time of the last one.
    pub fn usage(&self) -> (u64, Option<Timestamp>) {
        let last = self.last_call.load(Ordering::Relaxed);
        (self.calls.load(Ordering::Relaxed), (last > 0).then_some(Timestamp(last)))
    }

    fn usage_bytes(&self) -> [u8; 16] {
        let (calls, last) = self.usage();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&calls.to_be_bytes());
        b[8..].copy_from_slice(&last.map_or(0, |t| t.0).to_be_bytes());
        b
    }
}

struct Entry {
    app: Arc<App>,
    token_hash: [u8; 32],
    stored: Stored,
}

#[derive(Default)]
struct State {
    by_name: BTreeMap<String, Entry>,
    by_token: HashMap<[u8; 32], Arc<App>>,
}

/// A new application or a new token, as made: the token is in clear only here.
#[derive(Debug)]
pub struct Issued {
    pub app: Arc<App>,
    pub token: String,
}

/// The registry of applications.
pub struct Apps {
    store: Store,
    state: RwLock<State>,
}

fn key(prefix: &[u8], name: &str) -> Vec<u8> {
    [prefix, name.as_bytes()].concat()
}

impl Apps {
    /// Loads every application from the store.
    pub fn open(store: Store) -> Result<Apps, Error> {
        let mut state = State::default();
        let mut usage: HashMap<String, (u64, u64)> = HashMap::new();
        for (k, v) in store.scan_prefix(Cf::Apps, USE)? {
            let name = String::from_utf8_lossy(&k[USE.len()..]).to_string();
            if v.len() == 16 {
                let calls = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
                let last = u64::from_be_bytes(v[8..].try_into().unwrap_or([0; 8]));
                usage.insert(name, (calls, last));
            }
        }
        for (k, v) in store.scan_prefix(Cf::Apps, DEF)? {
            let name = String::from_utf8_lossy(&k[DEF.len()..]).to_string();
            let corrupt = |detail: String| Error::Corrupt { name: name.clone(), detail };
            let stored: Stored = serde_json::from_slice(&v).map_err(|e| corrupt(e.to_string()))?;
            let hash: [u8; 32] = hex::decode(&stored.token_hash)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| corrupt("the token hash is not 32 bytes of hex".into()))?;
            let (calls, last) = usage.get(&name).copied().unwrap_or((0, 0));
            let app = Arc::new(App::new(name.clone(), &stored, calls, last));
            state.by_token.insert(hash, app.clone());
            state.by_name.insert(name, Entry { app, token_hash: hash, stored });
        }
        Ok(Apps { store, state: RwLock::new(state) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an application. `datasets` must already be checked (unversioned, other
    /// members'); they are kept sorted and without duplicates. Not yet synced: the caller makes
    /// it durable before reporting it done.
    pub fn add(&self, name: &str, datasets: Vec<DatasetRef>, rate: u32, now: Timestamp) -> Result<Issued, Error> {
        check_name(name)?;
        if rate == 0 || rate > MAX_RATE {
            return Err(Error::BadRate(rate));
        }
        let mut datasets: Vec<DatasetRef> = datasets.iter().map(DatasetRef::unversioned).collect();
        datasets.sort();
        datasets.dedup();
        if datasets.len() > MAX_DATASETS {
            return Err(Error::TooManyDatasets(datasets.len()));
        }
        let (token, hash) = new_token()?;
        let stored = Stored { datasets, rate, created: now.0, token_hash: hex::encode(hash) };
        let mut st = self.write();
        if st.by_name.contains_key(name) {
            return Err(Error::Exists(name.to_string()));
        }
        if st.by_name.len() >= MAX_APPS {
            return Err(Error::TooMany);
        }
        let app = Arc::new(App::new(name.to_string(), &stored, 0, 0));
        let mut b = Batch::default();
        b.put(Cf::Apps, key(DEF, name), encode(&stored)?).put(Cf::Apps, key(USE, name), app.usage_bytes().to_vec());
        self.store.write(b)?;
        st.by_token.insert(hash, app.clone());
        st.by_name.insert(name.to_string(), Entry { app: app.clone(), token_hash: hash, stored });
        Ok(Issued { app, token })
    }

    /// A new token for `name`; the old one is refused from now on.
    pub fn rotate(&self, name: &str) -> Result<Issued, Error> {
        let (token, hash) = new_token()?;
        let mut st = self.write();
        let entry = st.by_name.get(name).ok_or_else(|| Error::Unknown(name.to_string()))?;
        let (old, app) = (entry.token_hash, entry.app.clone());
        let stored = Stored { token_hash: hex::encode(hash), ..entry.stored.clone() };
        self.store.put(Cf::Apps, &key(DEF, name), &encode(&stored)?)?;
        st.by_token.remove(&old);
        st.by_token.insert(hash, app.clone());
        if let Some(e) = st.by_name.get_mut(name) {
            e.token_hash = hash;
            e.stored = stored;
        }
        Ok(Issued { app, token })
    }

    /// Removes `name`; its token is refused from now on.
    pub fn remove(&self, name: &str) -> Result<Arc<App>, Error> {
        let mut st = self.write();
        let hash = st.by_name.get(name).map(|e| e.token_hash).ok_or_else(|| Error::Unknown(name.to_string()))?;
        let mut b = Batch::default();
        b.delete(Cf::Apps, key(DEF, name)).delete(Cf::Apps, key(USE, name));
        self.store.write(b)?;
        st.by_token.remove(&hash);
        st.by_name.remove(name).map(|e| e.app).ok_or_else(|| Error::Unknown(name.to_string()))
    }

    /// Every application, by name.
    pub fn list(&self) -> Vec<Arc<App>> {
        self.read().by_name.values().map(|e| e.app.clone()).collect()
    }

    /// The application a presented token belongs to, if any.
    pub fn by_token(&self, token: &str) -> Option<Arc<App>> {
        // Anything not shaped like a token is not looked up at all.
        if !crate::secret::well_formed(TOKEN_PREFIX, token) {
            return None;
        }
        self.read().by_token.get(&token_hash(token)).cloned()
    }

    /// Writes the counters that changed since the last flush, in one unsynced batch.
    pub fn flush_usage(&self) -> Result<usize, Error> {
        // The read lock is held across the write so a removal cannot interleave and leave a
        // counter row behind for an application that no longer exists.
        let st = self.read();
        let mut b = Batch::default();
        let mut n = 0;
        for (name, e) in &st.by_name {
            if e.app.dirty.swap(false, Ordering::AcqRel) {
                b.put(Cf::Apps, key(USE, name), e.app.usage_bytes().to_vec());
                n += 1;
            }
        }
        if n > 0
            && let Err(err) = self.store.write(b)
        {
            // Written next time instead.
            for e in st.by_name.values() {
                e.app.dirty.store(true, Ordering::Release);
            }
            return Err(err.into());
        }
        Ok(n)
    }
}

fn encode(s: &Stored) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(s).map_err(|e| Error::Corrupt { name: String::new(), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    fn refs(list: &[&str]) -> Vec<DatasetRef> {
        list.iter().map(|s| s.parse().expect("ref")).collect()
    }

    #[test]
    fn names_follow_the_slug_rule() {
        for ok in ["a", "credit-check", "app2", "a-b-c"] {
            check_name(ok).expect(ok);
        }
        for bad in ["", "Credit", "2app", "app-", "a_b", "a/b", "ä", &"a".repeat(33)] {
            assert!(matches!(check_name(bad), Err(Error::BadName(_))), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_stored_hashed_and_survive_a_reopen_rotate_and_remove_take_effect_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let apps = Apps::open(store.clone()).expect("open");
        let issued =
            apps.add("credit-check", refs(&["zhejiang/licences", "zhejiang/licences"]), 5, t(1000)).expect("add");
        assert!(issued.token.starts_with(TOKEN_PREFIX) && issued.token.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(issued.app.datasets, refs(&["zhejiang/licences"]), "deduplicated");
        assert!(matches!(apps.add("credit-check", vec![], 5, t(1)), Err(Error::Exists(_))));
        assert!(matches!(apps.add("other", vec![], 0, t(1)), Err(Error::BadRate(0))));
        // The token itself is nowhere in the database.
        let rows = store.scan_prefix(Cf::Apps, b"").expect("scan");
        let hex_part = &issued.token[TOKEN_PREFIX.len()..];
        assert!(rows.iter().all(|(k, v)| !String::from_utf8_lossy(v).contains(hex_part) && !k.is_empty()));
        assert_eq!(apps.by_token(&issued.token).map(|a| a.name.clone()), Some("credit-check".into()));
        assert!(apps.by_token("dfapp_00").is_none());
        assert!(apps.by_token(&issued.token.to_uppercase()).is_none());

        // Counters: admitted calls count, flushed in one batch, kept across a reopen.
        let app = apps.by_token(&issued.token).expect("app");
        app.admit(3, t(2000)).expect("within the rate");
        assert!(matches!(app.admit(3, t(2001)), Err(Throttled::Wait(_))), "over the burst of 5");
        assert!(matches!(app.admit(6, t(2002)), Err(Throttled::TooMany { asked: 6, rate: 5 })));
        assert_eq!(apps.flush_usage().expect("flush"), 1);
        assert_eq!(apps.flush_usage().expect("flush"), 0, "nothing changed since");
        drop((apps, app));
        let apps = Apps::open(store.clone()).expect("reopen");
        let app = apps.by_token(&issued.token).expect("token still valid after a reopen");
        assert_eq!(app.usage(), (3, Some(t(2000))));

        // Rotate: the old token dies at once, the new one works, counters stay.
        let rotated = apps.rotate("credit-check").expect("rotate");
        assert!(apps.by_token(&issued.token).is_none());
        assert_eq!(apps.by_token(&rotated.token).map(|a| a.usage().0), Some(3));
        assert!(matches!(apps.rotate("nope"), Err(Error::Unknown(_))));
        // Remove: gone at once, and from the database.
        apps.remove("credit-check").expect("remove");
        assert!(apps.by_token(&rotated.token).is_none());
        assert!(apps.list().is_empty());
        assert!(matches!(apps.remove("credit-check"), Err(Error::Unknown(_))));
        assert!(store.scan_prefix(Cf::Apps, b"").expect("scan").is_empty());
    }
}
