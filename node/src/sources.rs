//! Database sources (`deltafed source ...`): named PostgreSQL connections kept in the node's
//! database, and the export of a table or query to a data file that is then published like any
//! other (node/src/node/sources.rs).
//!
//! Storage (`Cf::Meta`): `source/NAME` → a [`Source`] as JSON. A password written in the URL is
//! kept there (the database is the node's alone, mode 0700); a password file or environment
//! variable is kept as a reference and read at each connection. The password is never part of
//! any view or log line: [`Source::redacted_url`] is what leaves the node.
//!
//! The export reads through a server-side cursor (a portal fetched [`BATCH_ROWS`] rows at a time
//! inside a read-only transaction), so memory stays flat whatever the table's size. Column types
//! map to the manifest's field types as docs/sources.md documents ([`Kind`]).

mod decode;
pub mod live;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use deltafed_protocol::manifest::{Field, FieldType, Format};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;
use tokio_postgres::types::Type;

use crate::store::{Cf, Store};

pub use decode::Kind;

const PREFIX: &[u8] = b"source/";
/// Rows fetched from the cursor at a time: the most the export holds in memory.
pub const BATCH_ROWS: i32 = 1000;
/// Most sources a node keeps.
const MAX_SOURCES: usize = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid source name {0:?}: use 1-64 lower-case letters, digits and '-'")]
    BadName(String),
    #[error("a source named {0} exists; remove it first (`deltafed source remove {0}`)")]
    Exists(String),
    #[error("no source named {0} (see `deltafed source list`)")]
    Unknown(String),
    #[error("too many sources (at most {MAX_SOURCES})")]
    TooMany,
    #[error("invalid --url: {0}")]
    BadUrl(String),
    #[error("{0}")]
    Password(String),
    #[error("cannot connect to source {source_name} ({url}): {error}")]
    Connect { source_name: String, url: String, error: tokio_postgres::Error },
    #[error("source {source_name}: {error}")]
    Query { source_name: String, error: String },
    #[error(
        "column {column} has type {ty}, which has no mapping (docs/sources.md); select it cast to text, e.g. --sql \"SELECT {column}::text ...\""
    )]
    Unsupported { column: String, ty: String },
    #[error("the query returns two columns named {0}; give each a unique name (AS ...)")]
    DuplicateColumn(String),
    #[error("the query returns no columns")]
    NoColumns,
    #[error(
        "--live looks rows up by {column}, which no index of {table} starts with; create one first (CREATE INDEX ON {table} ({column}))"
    )]
    NotIndexed { table: String, column: String },
    #[error("--live needs --table (a live dataset reads one table by its key) and --key-field")]
    LiveNeedsTable,
    #[error("--live: the key column {column} has type {ty}; a live key is an integer or text column")]
    LiveKeyType { column: String, ty: String },
    #[error("cannot write the export to {file}: {source}")]
    Write { file: String, source: std::io::Error },
    #[error("the stored source {name} is unreadable: {message}")]
    Corrupt { name: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Where the password comes from, besides the URL itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum PasswordRef {
    /// In the URL, or none at all (trust or peer authentication).
    Url,
    /// A file the node reads at each connection (its first line).
    File { path: PathBuf },
    /// An environment variable of the node's process, read at each connection.
    Env { var: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    /// As given, the password included when it was written there. Never shown.
    url: String,
    pub password: PasswordRef,
    /// RFC 3339.
    pub created: String,
}

impl Source {
    /// The URL with any password replaced by `***`: the only form that is shown or logged.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// `url` for display, `file:PATH`, `env:VAR`, `url` (a password in the URL) or `none`.
    pub fn password_label(&self) -> String {
        match &self.password {
            PasswordRef::Url if url_has_password(&self.url) => "url".into(),
            PasswordRef::Url => "none".into(),
            PasswordRef::File { path } => format!("file:{}", path.display()),
            PasswordRef::Env { var } => format!("env:{var}"),
        }
    }

    pub(crate) fn config(&self) -> Result<tokio_postgres::Config, Error> {
        let mut cfg = parse_url(&self.url)?;
        match &self.password {
            PasswordRef::Url => {}
            PasswordRef::File { path } => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Password(format!(
                        "source {}: cannot read the password file {}: {e}",
                        self.name,
                        path.display()
                    ))
                })?;
                cfg.password(text.lines().next().unwrap_or_default());
            }
            PasswordRef::Env { var } => {
                let value = std::env::var(var).map_err(|_| {
                    Error::Password(format!(
                        "source {}: the node's environment has no variable {var} (set it where `deltafed run` starts)",
                        self.name
                    ))
                })?;
                cfg.password(value);
            }
        }
        cfg.connect_timeout(CONNECT_TIMEOUT);
        cfg.application_name("deltafed");
        Ok(cfg)
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, Error> {
        let cfg = self.config()?;
        let (client, conn) = cfg.connect(NoTls).await.map_err(|error| Error::Connect {
            source_name: self.name.clone(),
            url: self.redacted_url(),
            error,
        })?;
        let name = self.name.clone();
        // The connection ends when the client is dropped; an error here is a lost connection,
        // which the export also sees as a failed fetch.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(source = %name, error = %e, "source connection closed");
            }
        });
        Ok(client)
    }
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, Error> {
    if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
        return Err(Error::BadUrl(format!(
            "{} is not a postgresql:// URL (e.g. postgresql://USER@HOST:5432/DB)",
            redact(url)
        )));
    }
    // The parser's message never holds the password (it names the part that failed).
    tokio_postgres::Config::from_str(url).map_err(|e| Error::BadUrl(format!("{}: {e}", redact(url))))
}

fn url_has_password(url: &str) -> bool {
    redact(url) != url
}

/// Replaces the password of a `postgresql://user:password@host/db?password=...` URL by `***`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return "(not a URL)".into();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn key(name: &str) -> Vec<u8> {
    [PREFIX, name.as_bytes()].concat()
}

/// The sources, over the node's database (every call reads it: sources change rarely and are
/// read once per publish).
#[derive(Clone)]
pub struct Sources {
    store: Store,
}

impl Sources {
    pub fn new(store: Store) -> Sources {
        Sources { store }
    }

    pub fn add(&self, name: &str, url: String, password: PasswordRef, created: String) -> Result<Source, Error> {
        if !valid_name(name) {
            return Err(Error::BadName(name.into()));
        }
        parse_url(&url)?;
        if password != PasswordRef::Url && url_has_password(&url) {
            return Err(Error::Password(
                "the URL holds a password and a password file or variable is given too: give it once".into(),
            ));
        }
        if let PasswordRef::File { path } = &password
            && !path.is_absolute()
        {
            return Err(Error::Password(format!("--password-file {} must be an absolute path", path.display())));
        }
        if self.store.get(Cf::Meta, &key(name))?.is_some() {
            return Err(Error::Exists(name.into()));
        }
        if self.list()?.len() >= MAX_SOURCES {
            return Err(Error::TooMany);
        }
        let source = Source { name: name.into(), url, password, created };
        let bytes =
            serde_json::to_vec(&source).map_err(|e| Error::Corrupt { name: name.into(), message: e.to_string() })?;
        self.store.put(Cf::Meta, &key(name), &bytes)?;
        Ok(source)
    }

    pub fn get(&self, name: &str) -> Result<Source, Error> {
        let bytes = self.store.get(Cf::Meta, &key(name))?.ok_or_else(|| Error::Unknown(name.into()))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt { name: name.into(), message: e.to_string() })
    }

    pub fn list(&self) -> Result<Vec<Source>, Error> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan_prefix(Cf::Meta, PREFIX)? {
            let name = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
            out.push(serde_json::from_slice(&v).map_err(|e| Error::Corrupt { name, message: e.to_string() })?);
        }
        Ok(out)
    }

    pub fn remove(&self, name: &str) -> Result<Source, Error> {
        let source = self.get(name)?;
        let mut batch = crate::store::Batch::default();
        batch.delete(Cf::Meta, key(name));
        self.store.write(batch)?;
        Ok(source)
    }
}

/// What to read from a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// `TABLE` or `SCHEMA.TABLE`, quoted as identifiers.
    Table(String),
    /// One SELECT statement, run as given in a read-only transaction.
    Sql(String),
}

impl Selection {
    fn statement(&self) -> String {
        match self {
            Selection::Table(t) => format!("SELECT * FROM {}", quote_table(t)),
            Selection::Sql(q) => q.trim().trim_end_matches(';').to_string(),
        }
    }
}

/// `TABLE` or `SCHEMA.TABLE`, each part quoted as an identifier (never spliced as SQL).
pub(crate) fn quote_table(t: &str) -> String {
    t.split('.').map(live::quote_ident).collect::<Vec<_>>().join(".")
}

/// The export's outcome: rows written and the schema from the column types.
#[derive(Debug, Clone)]
pub struct Exported {
    pub records: u64,
    pub schema: Vec<Field>,
    pub columns: Vec<(String, Kind)>,
}

/// What a `--live` dataset reads, checked against the database: the key column is an integer
/// or text column and an index starts with it (a call is one index probe, not a scan).
pub async fn live_spec(
    source: &Source,
    table: &str,
    key_field: &str,
    columns: &[(String, Kind)],
) -> Result<live::LiveSpec, Error> {
    let Some((_, kind)) = columns.iter().find(|(n, _)| n == key_field) else {
        return Err(Error::Query {
            source_name: source.name.clone(),
            error: format!("the table has no column {key_field}"),
        });
    };
    if !matches!(kind, Kind::Int2 | Kind::Int4 | Kind::Int8 | Kind::Oid | Kind::Text) {
        return Err(Error::LiveKeyType { column: key_field.into(), ty: kind.name().into() });
    }
    let client = source.connect().await?;
    let query_err =
        |error: tokio_postgres::Error| Error::Query { source_name: source.name.clone(), error: db_message(&error) };
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
               ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass($1) AND a.attname = $2)",
            &[&quote_table(table), &key_field],
        )
        .await
        .map_err(query_err)?;
    let indexed: bool = row.try_get(0).map_err(query_err)?;
    if !indexed {
        return Err(Error::NotIndexed { table: table.into(), column: key_field.into() });
    }
    Ok(live::LiveSpec {
        source: source.name.clone(),
        table: table.into(),
        key_field: key_field.into(),
        columns: columns.iter().map(|(n, k)| (n.clone(), k.name().to_string())).collect(),
    })
}

/// Reads `selection` from `source` through a cursor and writes it to `out` as `format` (CSV or
/// JSON Lines).
pub async fn export(source: &Source, selection: &Selection, format: Format, out: &Path) -> Result<Exported, Error> {
    let file = out.display().to_string();
    let write_err = |source| Error::Write { file: file.clone(), source };
    let query_err =
        |error: tokio_postgres::Error| Error::Query { source_name: source.name.clone(), error: db_message(&error) };
    let mut client = source.connect().await?;
    let tx = client.build_transaction().read_only(true).start().await.map_err(query_err)?;
    let stmt = tx.prepare(&selection.statement()).await.map_err(query_err)?;
    let mut columns = Vec::with_capacity(stmt.columns().len());
    for c in stmt.columns() {
        let kind = Kind::of(c.type_())
            .ok_or_else(|| Error::Unsupported { column: c.name().to_string(), ty: type_name(c.type_()) })?;
        if columns.iter().any(|(n, _): &(String, Kind)| n == c.name()) {
            return Err(Error::DuplicateColumn(c.name().to_string()));
        }
        columns.push((c.name().to_string(), kind));
    }
    if columns.is_empty() {
        return Err(Error::NoColumns);
    }
    let portal = tx.bind(&stmt, &[]).await.map_err(query_err)?;
    let f = File::create(out).map_err(write_err)?;
    let mut w = Writer::new(format, BufWriter::with_capacity(1 << 20, f), &columns).map_err(write_err)?;
    let mut records = 0u64;
    loop {
        let rows = tx.query_portal(&portal, BATCH_ROWS).await.map_err(query_err)?;
        for row in &rows {
            w.row(row, &columns).map_err(|e| match e {
                RowError::Io(e) => write_err(e),
                RowError::Decode { column, message } => {
                    Error::Query { source_name: source.name.clone(), error: format!("column {column}: {message}") }
                }
            })?;
        }
        records += rows.len() as u64;
        if rows.len() < BATCH_ROWS as usize {
            break;
        }
    }
    w.finish().map_err(write_err)?;
    tx.commit().await.map_err(query_err)?;
    let schema = columns.iter().map(|(name, kind)| Field { name: name.clone(), ty: kind.field_type() }).collect();
    Ok(Exported { records, schema, columns })
}

/// The server's own message (`ERROR: relation "x" does not exist`) when there is one.
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

fn type_name(ty: &Type) -> String {
    ty.name().to_string()
}

enum RowError {
    Io(std::io::Error),
    Decode { column: String, message: String },
}

impl From<std::io::Error> for RowError {
    fn from(e: std::io::Error) -> RowError {
        RowError::Io(e)
    }
}

enum Writer<W: Write> {
    Jsonl(W),
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> Writer<W> {
    fn new(format: Format, out: W, columns: &[(String, Kind)]) -> std::io::Result<Writer<W>> {
        match format {
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(columns.iter().map(|(n, _)| n.as_str())).map_err(std::io::Error::other)?;
                Ok(Writer::Csv(Box::new(w)))
            }
            _ => Ok(Writer::Jsonl(out)),
        }
    }

    fn row(&mut self, row: &tokio_postgres::Row, columns: &[(String, Kind)]) -> Result<(), RowError> {
        let mut cells = Vec::with_capacity(columns.len());
        for (i, (name, kind)) in columns.iter().enumerate() {
            let raw: decode::Raw =
                row.try_get(i).map_err(|e| RowError::Decode { column: name.clone(), message: e.to_string() })?;
            let cell = kind.decode(raw.0).map_err(|message| RowError::Decode { column: name.clone(), message })?;
            cells.push(cell);
        }
        match self {
            Writer::Jsonl(w) => {
                w.write_all(b"{")?;
                for (i, ((name, _), cell)) in columns.iter().zip(&cells).enumerate() {
                    if i > 0 {
                        w.write_all(b",")?;
                    }
                    serde_json::to_writer(&mut *w, name).map_err(std::io::Error::other)?;
                    w.write_all(b":")?;
                    cell.write_json(w)?;
                }
                w.write_all(b"}\n")?;
            }
            Writer::Csv(w) => {
                w.write_record(cells.iter().map(|c| c.csv_text())).map_err(std::io::Error::other)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> std::io::Result<()> {
        let mut inner = match self {
            Writer::Jsonl(w) => w,
            Writer::Csv(w) => w.into_inner().map_err(|e| std::io::Error::other(e.to_string()))?,
        };
        inner.flush()
    }
}

impl Kind {
    pub fn field_type(self) -> FieldType {
        match self {
            Kind::Int2 | Kind::Int4 | Kind::Int8 | Kind::Oid => FieldType::Integer,
            Kind::Float4 | Kind::Float8 | Kind::Numeric => FieldType::Number,
            Kind::Bool => FieldType::Boolean,
            Kind::Text | Kind::Json | Kind::Jsonb | Kind::Uuid | Kind::Date | Kind::Timestamp | Kind::Timestamptz => {
                FieldType::String
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_userinfo_and_query() {
        assert_eq!(redact("postgresql://u:s3cret@h:5432/db"), "postgresql://u:***@h:5432/db");
        assert_eq!(redact("postgresql://u:p@ss@h/db"), "postgresql://u:***@h/db");
        assert_eq!(
            redact("postgresql://u@h/db?password=x&sslmode=disable"),
            "postgresql://u@h/db?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgresql://u@h/db"), "postgresql://u@h/db");
        assert!(!url_has_password("postgresql://h/db"));
        assert!(url_has_password("postgres://a:b@h/db"));
    }

    #[test]
    fn quotes_table_names_as_identifiers() {
        assert_eq!(Selection::Table("public.t".into()).statement(), "SELECT * FROM \"public\".\"t\"");
        assert_eq!(Selection::Table("x\"; DROP".into()).statement(), "SELECT * FROM \"x\"\"; DROP\"");
        assert_eq!(Selection::Sql("SELECT 1;".into()).statement(), "SELECT 1");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("registry-db"));
        assert!(!valid_name("Registry"));
        assert!(!valid_name(""));
    }
}
