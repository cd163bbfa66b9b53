//! Scratch space for the node targets: a blob store (and a key index over it) in a directory of
//! its own under the temp dir, emptied before every input.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use deltafed_node::blobs::{self, Blobs, Imported};
use deltafed_node::keyindex::KeyIndex;
use deltafed_node::store::Store;
use deltafed_protocol::manifest::Format;

/// Inputs between two fresh key index databases: the index keeps every blob's rows, so it is
/// started again now and then rather than growing for the whole run.
const INDEX_LIFETIME: u32 = 2000;

pub struct Scratch {
    root: PathBuf,
    blobs: Arc<Blobs>,
    input: PathBuf,
    index: Option<(KeyIndex, PathBuf)>,
    indexed: u32,
    generation: u32,
}

/// The process's scratch space, `$TMPDIR/deltafed-fuzz-<pid>` (scripts/fuzz.sh points TMPDIR at
/// /dev/shm when it can, so the importer's fsyncs cost nothing). Leftovers of processes that
/// are gone are removed first.
pub fn scratch() -> MutexGuard<'static, Scratch> {
    static SCRATCH: OnceLock<Mutex<Scratch>> = OnceLock::new();
    let cell = SCRATCH.get_or_init(|| {
        let tmp = std::env::temp_dir();
        remove_stale(&tmp);
        let root = tmp.join(format!("deltafed-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the scratch dir");
        let blobs = Arc::new(Blobs::open(&root.join("blobs")).expect("open the scratch blob store"));
        let input = root.join("input");
        Mutex::new(Scratch { root, blobs, input, index: None, indexed: 0, generation: 0 })
    });
    let mut s = cell.lock().unwrap_or_else(PoisonError::into_inner);
    s.clear();
    s
}

fn remove_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("deltafed-fuzz-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Scratch {
    /// Removes every blob (and import leftovers) from the store.
    fn clear(&mut self) {
        let root = self.blobs.root().to_path_buf();
        for dir in [root.clone(), root.join("tmp")] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_file()) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Imports `bytes` as a dataset file, as `deltafed publish` does; the blob stays until the
    /// next input.
    pub fn import(&self, bytes: &[u8], format: Format, key_field: Option<&str>) -> Result<Imported, blobs::Error> {
        std::fs::write(&self.input, bytes).expect("write the scratch input");
        self.blobs.import(&self.input, format, key_field)
    }

    /// A key index over this store, on a database that is replaced every [`INDEX_LIFETIME`]
    /// calls.
    pub fn index(&mut self) -> &KeyIndex {
        self.indexed += 1;
        if self.indexed > INDEX_LIFETIME
            && let Some((index, path)) = self.index.take()
        {
            drop(index);
            let _ = std::fs::remove_dir_all(path);
            self.indexed = 1;
        }
        if self.index.is_none() {
            self.generation += 1;
            let path = self.root.join(format!("db-{}", self.generation));
            let store = Store::open(&path).expect("open the scratch key index database");
            self.index = Some((KeyIndex::new(store, Arc::clone(&self.blobs)), path));
        }
        &self.index.as_ref().expect("just opened").0
    }
}

// ---------------------------------------------------------------------------------------------
// Independent readings of CSV and JSON Lines, from the formats' documented rules (module docs of
// node/src/format/csv.rs and jsonl.rs), to hold the importer, projection and key index against.

use deltafed_protocol::manifest::FieldType;

/// Every record of a CSV file, the header first, in the dialect the node documents (RFC 4180,
/// comma, double quotes, any line ending, blank lines skipped).
pub fn csv_records(bytes: &[u8]) -> Vec<csv::ByteRecord> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes)
        .byte_records()
        .collect::<Result<_, _>>()
        .expect("reading csv from memory cannot fail")
}

/// Why a CSV file is not a dataset, or `None` when it is: a header of unique, non-empty UTF-8
/// names, then records of exactly its width, all UTF-8.
pub fn csv_invalid(records: &[csv::ByteRecord]) -> Option<String> {
    let Some(header) = records.first() else {
        return Some("no header".into());
    };
    let mut seen = std::collections::HashSet::new();
    for name in header {
        match std::str::from_utf8(name) {
            Err(_) => return Some("a header name is not utf-8".into()),
            Ok("") => return Some("an empty header name".into()),
            Ok(n) if !seen.insert(n) => return Some(format!("header name {n:?} twice")),
            Ok(_) => {}
        }
    }
    for (i, r) in records.iter().enumerate().skip(1) {
        if r.len() != header.len() {
            return Some(format!("record {i} has {} fields, the header {}", r.len(), header.len()));
        }
        if r.iter().any(|f| std::str::from_utf8(f).is_err()) {
            return Some(format!("record {i} is not utf-8"));
        }
    }
    None
}

/// A column's type by the documented rule: integer when every non-empty value is an i64, else
/// number when every one is a finite f64, else boolean when every one is true/false in any case,
/// else string (and string when it has no non-empty value).
pub fn csv_column_type<'a>(values: impl Iterator<Item = &'a str> + Clone) -> FieldType {
    let mut present = values.filter(|v| !v.is_empty()).peekable();
    if present.peek().is_none() {
        return FieldType::String;
    }
    let present: Vec<&str> = present.collect();
    if present.iter().all(|v| v.parse::<i64>().is_ok()) {
        FieldType::Integer
    } else if present.iter().all(|v| v.parse::<f64>().is_ok_and(f64::is_finite)) {
        FieldType::Number
    } else if present.iter().all(|v| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")) {
        FieldType::Boolean
    } else {
        FieldType::String
    }
}

/// A JSON object's top-level entries in document order, duplicates kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj(pub Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Obj {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Obj;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a json object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Obj, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(Obj(entries))
            }
        }
        d.deserialize_map(V)
    }
}

impl Obj {
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0.iter().cloned().collect()
    }
}

/// The lines of a JSON Lines file as a line reader cuts them (each with its `\n`, the last
/// perhaps without), leaving out the blank ones (only ASCII whitespace).
pub fn jsonl_lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split_inclusive(|&b| b == b'\n').filter(|line| !line.iter().all(u8::is_ascii_whitespace)).collect()
}

/// Each non-blank line as an object, or why the file is not a dataset: a line that is not a
/// JSON object, or has a key twice.
pub fn jsonl_objects(bytes: &[u8]) -> Result<Vec<Obj>, String> {
    let mut out = Vec::new();
    for (i, line) in jsonl_lines(bytes).into_iter().enumerate() {
        let obj: Obj = serde_json::from_slice(line).map_err(|e| format!("line {i}: {e}"))?;
        let mut keys = std::collections::HashSet::new();
        if let Some((k, _)) = obj.0.iter().find(|(k, _)| !keys.insert(k.as_str())) {
            return Err(format!("line {i}: key {k:?} twice"));
        }
        out.push(obj);
    }
    Ok(out)
}

/// The documented JSON Lines schema: keys in first-seen order, each typed by the narrowest type
/// covering its values (integers widen to numbers; null says nothing; any other mix, arrays and
/// objects are strings; a key that only held null is a string).
pub fn jsonl_schema(objects: &[Obj]) -> Vec<(String, FieldType)> {
    fn ty(v: &serde_json::Value) -> Option<FieldType> {
        match v {
            serde_json::Value::Null => None,
            serde_json::Value::Bool(_) => Some(FieldType::Boolean),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(FieldType::Integer),
            serde_json::Value::Number(_) => Some(FieldType::Number),
            _ => Some(FieldType::String),
        }
    }
    let mut order: Vec<(String, Option<FieldType>)> = Vec::new();
    for obj in objects {
        for (k, v) in &obj.0 {
            let t = ty(v);
            match order.iter_mut().find(|(name, _)| name == k) {
                None => order.push((k.clone(), t)),
                Some((_, slot)) => {
                    *slot = match (*slot, t) {
                        (None, t) | (t, None) => t,
                        (Some(a), Some(b)) if a == b => Some(a),
                        (Some(FieldType::Integer), Some(FieldType::Number))
                        | (Some(FieldType::Number), Some(FieldType::Integer)) => Some(FieldType::Number),
                        _ => Some(FieldType::String),
                    }
                }
            }
        }
    }
    order.into_iter().map(|(k, t)| (k, t.unwrap_or(FieldType::String))).collect()
}
