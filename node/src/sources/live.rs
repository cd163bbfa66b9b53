//! Live record calls: a dataset published with `--live` answers each call from its table through
//! a prepared statement on the key column, selecting only the granted fields. One connection
//! pool per source, sized by `[sources] pool_size`; every connection has the configured
//! `statement_timeout`, so a slow database is a clear "unavailable", never a hang.
//!
//! Storage (`Cf::Meta`): `live/DATASET` → a [`LiveSpec`] as JSON, written when the dataset is
//! published with `--live` and removed when it is published without it or withdrawn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use deltafed_protocol::DatasetId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::NoTls;
use tokio_postgres::types::{ToSql, Type};

use super::decode::{Cell, Kind, Raw};
use super::{Error, Source, quote_table};
use crate::config::SourcesConfig;
use crate::store::{Cf, Store};

const PREFIX: &[u8] = b"live/";

/// How a live dataset is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSpec {
    pub source: String,
    /// `TABLE` or `SCHEMA.TABLE`.
    pub table: String,
    pub key_field: String,
    /// Every column of the table at publish time, in order, with its mapped kind name.
    pub columns: Vec<(String, String)>,
}

impl LiveSpec {
    fn kind_of(&self, column: &str) -> Option<Kind> {
        self.columns.iter().find(|(n, _)| n == column).and_then(|(_, k)| Kind::from_name(k))
    }
}

/// Why a live call got no rows.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LiveError {
    /// The database is down, slow or refused the statement: the caller may call again.
    #[error("{0}")]
    Unavailable(String),
    /// The call cannot be answered (a field the table no longer has).
    #[error("{0}")]
    Invalid(String),
}

fn key(dataset: &DatasetId) -> Vec<u8> {
    [PREFIX, dataset.as_str().as_bytes()].concat()
}

pub fn put_spec(store: &Store, dataset: &DatasetId, spec: Option<&LiveSpec>) -> Result<(), Error> {
    let mut batch = crate::store::Batch::default();
    match spec {
        Some(spec) => {
            let bytes = serde_json::to_vec(spec)
                .map_err(|e| Error::Corrupt { name: spec.source.clone(), message: e.to_string() })?;
            batch.put(Cf::Meta, key(dataset), bytes);
        }
        None => {
            batch.delete(Cf::Meta, key(dataset));
        }
    }
    store.write(batch)?;
    Ok(())
}

pub fn get_spec(store: &Store, dataset: &DatasetId) -> Result<Option<LiveSpec>, Error> {
    match store.get(Cf::Meta, &key(dataset))? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt { name: dataset.to_string(), message: e.to_string() }),
    }
}

/// The pools of the sources that live datasets read, opened on first use.
#[derive(Clone)]
pub struct Live {
    store: Store,
    config: SourcesConfig,
    pools: Arc<Mutex<HashMap<String, Pool>>>,
}

impl Live {
    pub fn new(store: Store, config: SourcesConfig) -> Live {
        Live { store, config, pools: Arc::default() }
    }

    /// Forgets a source's pool (its connections close), after `source remove`.
    pub fn forget(&self, source: &str) {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner).remove(source);
    }

    fn pool(&self, source: &Source) -> Result<Pool, LiveError> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pools.get(&source.name) {
            return Ok(p.clone());
        }
        let mut cfg = source.config().map_err(|e| LiveError::Unavailable(e.to_string()))?;
        cfg.connect_timeout(self.config.connect_timeout);
        // The server cancels a statement past the timeout, so no call waits on it for longer.
        cfg.options(format!("-c statement_timeout={}", self.config.statement_timeout.as_millis()));
        let manager = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let wait = self.config.connect_timeout;
        let pool = Pool::builder(manager)
            .max_size(self.config.pool_size)
            .timeouts(Timeouts { wait: Some(wait), create: Some(wait), recycle: Some(wait) })
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| LiveError::Unavailable(format!("cannot set up a pool for source {}: {e}", source.name)))?;
        pools.insert(source.name.clone(), pool.clone());
        Ok(pool)
    }

    /// For each of `keys`, the rows whose key column equals it, with only `fields` (all columns
    /// when `None`), at most `limit` each: one statement for the whole batch (the keys as one
    /// array parameter, each looked up through the index by a lateral join), so a batch of calls
    /// costs the database one round trip, not one per call.
    pub async fn lookup_many(
        &self,
        dataset: &DatasetId,
        keys: &[&str],
        fields: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Vec<Map<String, Value>>>, LiveError> {
        let spec = get_spec(&self.store, dataset)
            .map_err(|e| LiveError::Unavailable(e.to_string()))?
            .ok_or_else(|| LiveError::Invalid(format!("{dataset} has no live source")))?;
        let source = super::Sources::new(self.store.clone())
            .get(&spec.source)
            .map_err(|e| LiveError::Unavailable(format!("the dataset's source: {e}")))?;
        let selected: Vec<(String, Kind)> = match fields {
            None => spec.columns.iter().filter_map(|(n, k)| Kind::from_name(k).map(|k| (n.clone(), k))).collect(),
            Some(fs) => fs
                .iter()
                .map(|f| {
                    spec.kind_of(f)
                        .map(|k| (f.clone(), k))
                        .ok_or_else(|| LiveError::Invalid(format!("the table has no field {f}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let key_kind = spec
            .kind_of(&spec.key_field)
            .ok_or_else(|| LiveError::Invalid(format!("the key field {} is not a column", spec.key_field)))?;
        // The keys are one bound parameter of the key column's type; a key that is not a value
        // of that type matches no row (it never reaches the database as text to parse). `sent`
        // maps each array position back to the call it came from.
        let mut sent: Vec<usize> = Vec::with_capacity(keys.len());
        let (param_type, array, param): (Type, &str, Box<dyn ToSql + Sync + Send>) = match key_kind {
            Kind::Int2 | Kind::Int4 | Kind::Int8 | Kind::Oid => {
                let mut values = Vec::with_capacity(keys.len());
                for (i, k) in keys.iter().enumerate() {
                    if let Ok(v) = k.parse::<i64>() {
                        sent.push(i);
                        values.push(v);
                    }
                }
                (Type::INT8_ARRAY, "int8[]", Box::new(values))
            }
            Kind::Text => {
                sent.extend(0..keys.len());
                (Type::TEXT_ARRAY, "text[]", Box::new(keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()))
            }
            other => {
                return Err(LiveError::Invalid(format!("a key column of type {other:?} cannot be called live")));
            }
        };
        let mut out: Vec<Vec<Map<String, Value>>> = vec![Vec::new(); keys.len()];
        if sent.is_empty() {
            return Ok(out);
        }
        let inner: Vec<String> = selected.iter().map(|(n, _)| quote_ident(n)).collect();
        let outer: Vec<String> = selected.iter().map(|(n, _)| format!("t.{}", quote_ident(n))).collect();
        let sql = format!(
            "SELECT k.i{} FROM unnest($1::{array}) WITH ORDINALITY AS k(v, i) \
             CROSS JOIN LATERAL (SELECT {} FROM {} WHERE {} = k.v LIMIT {limit}) t",
            outer.iter().map(|c| format!(", {c}")).collect::<String>(),
            if inner.is_empty() { "1".to_string() } else { inner.join(", ") },
            quote_table(&spec.table),
            quote_ident(&spec.key_field),
        );
        let pool = self.pool(&source)?;
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            LiveError::Unavailable(format!("source {}: {what}: {e}", source.name))
        };
        let client = pool.get().await.map_err(|e| unavailable("no connection", &e))?;
        let stmt =
            client.prepare_typed_cached(&sql, &[param_type]).await.map_err(|e| unavailable("prepare", &db(&e)))?;
        let rows = client.query(&stmt, &[param.as_ref()]).await.map_err(|e| unavailable("query", &db(&e)))?;
        for row in &rows {
            let at: i64 = row.try_get(0).map_err(|e| LiveError::Invalid(format!("the key position: {e}")))?;
            let Some(call) = usize::try_from(at - 1).ok().and_then(|p| sent.get(p)).copied() else {
                return Err(LiveError::Invalid(format!("the database answered for key position {at}")));
            };
            let mut rec = Map::new();
            for (i, (name, kind)) in selected.iter().enumerate() {
                let raw: Raw = row.try_get(i + 1).map_err(|e| LiveError::Invalid(format!("column {name}: {e}")))?;
                let cell = kind.decode(raw.0).map_err(|e| LiveError::Invalid(format!("column {name}: {e}")))?;
                rec.insert(name.clone(), cell.to_json());
            }
            out[call].push(rec);
        }
        Ok(out)
    }
}

/// The server's own message when there is one (a statement timeout says "canceling statement
/// due to statement timeout").
fn db(e: &tokio_postgres::Error) -> String {
    super::db_message(e)
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Cell {
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(i) => Value::from(*i),
            // Parsed as JSON, as a published file's numbers are.
            Cell::Number(n) => serde_json::from_str(n).unwrap_or_else(|_| Value::String(n.clone())),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Text(s) => Value::String(s.clone()),
        }
    }
}
