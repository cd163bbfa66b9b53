//! JSON Lines: one JSON object per non-empty line, no key twice in an object. A key's type is
//! the narrowest covering all its values (integers widen to numbers; null says nothing).
//! Objects keep their keys in document order, so projections and answers follow the data.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};

use deltafed_protocol::manifest::{Field, FieldType};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{CHUNK, Error, MAX_RECORD, Record, dedup, list, list_quoted};

/// Parses `input` to the end; returns the record count and the inferred schema.
pub(crate) fn infer(input: impl Read, file: &str) -> Result<(u64, Vec<Field>), Error> {
    let mut order: Vec<(String, Option<FieldType>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut records = 0u64;
    let mut lines = JsonLines::new(input, file);
    while let Some(object) = lines.next_object()? {
        records += 1;
        for (key, value) in object {
            let ty = json_type(&value);
            match index.get(&key) {
                Some(&i) => {
                    let slot = &mut order[i].1;
                    *slot = merge(*slot, ty);
                }
                None => {
                    index.insert(key.clone(), order.len());
                    order.push((key, ty));
                }
            }
        }
    }
    let schema = order
        .into_iter()
        .map(|(name, ty)| Field {
            name,
            // A key that only ever held null carries no type information.
            ty: ty.unwrap_or(FieldType::String),
        })
        .collect();
    Ok((records, schema))
}

/// Writes the projection of `input` onto `fields`: each object keeps only the requested keys, in
/// the order the line has them, each value copied byte for byte (re-encoding a number through
/// f64 changed values such as `1.50123456789012345`); an object with none of them becomes `{}`
/// so record counts still match; empty lines are dropped.
pub(crate) fn project(
    input: impl Read,
    fields: &[String],
    out: &mut impl Write,
    file: &str,
    out_name: &str,
) -> Result<(), Error> {
    let write_err = |source| Error::Write { file: out_name.to_string(), source };
    let wanted: HashSet<&str> = fields.iter().map(String::as_str).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut all_keys: Vec<String> = Vec::new();
    let mut lines = JsonLines::new(input, file);
    while lines.next_object()?.is_some() {
        let line = lines.last_line();
        let members = members(line).map_err(|message| Error::Json {
            file: file.to_string(),
            line: lines.line,
            column: 0,
            message,
        })?;
        out.write_all(b"{").map_err(write_err)?;
        let mut first = true;
        for (key, span) in &members {
            if !seen.contains(key) {
                seen.insert(key.clone());
                all_keys.push(key.clone());
            }
            if wanted.contains(key.as_str()) {
                if !first {
                    out.write_all(b",").map_err(write_err)?;
                }
                first = false;
                serde_json::to_writer(&mut *out, key).map_err(|e| write_err(io::Error::from(e)))?;
                out.write_all(b":").map_err(write_err)?;
                out.write_all(line.get(span.clone()).unwrap_or_default()).map_err(write_err)?;
            }
        }
        out.write_all(b"}\n").map_err(write_err)?;
    }
    let unknown: Vec<&str> = dedup(fields.iter().map(String::as_str)).filter(|f| !seen.contains(*f)).collect();
    if !unknown.is_empty() {
        return Err(Error::UnknownFields {
            file: file.to_string(),
            unknown: list_quoted(unknown),
            available: list(all_keys.iter().map(String::as_str)),
        });
    }
    out.flush().map_err(write_err)
}

/// A JSON Lines stream: each non-empty line one JSON object, returned with its keys in order.
struct JsonLines<'f, R> {
    reader: BufReader<R>,
    file: &'f str,
    line: u64,
    buf: Vec<u8>,
}

impl<'f, R: Read> JsonLines<'f, R> {
    fn new(input: R, file: &'f str) -> Self {
        JsonLines { reader: BufReader::with_capacity(CHUNK, input), file, line: 0, buf: Vec::new() }
    }

    /// The bytes of the line the last object came from (valid until the next call).
    fn last_line(&self) -> &[u8] {
        &self.buf
    }

    fn next_object(&mut self) -> Result<Option<Vec<(String, Value)>>, Error> {
        loop {
            // A big line's buffer need not live on for the rest of the file.
            if self.buf.capacity() > CHUNK {
                self.buf = Vec::new();
            }
            self.buf.clear();
            let n = (&mut self.reader)
                .take(MAX_RECORD + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| Error::Read { file: self.file.to_string(), source })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if n as u64 > MAX_RECORD && self.buf.last() != Some(&b'\n') {
                return Err(Error::RecordTooLarge { file: self.file.to_string(), line: self.line });
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value: Value = serde_json::from_slice(&self.buf).map_err(|e| Error::Json {
                file: self.file.to_string(),
                line: self.line,
                column: e.column(),
                message: json_message(&e),
            })?;
            let Value::Object(object) = value else {
                return Err(Error::NotObject { file: self.file.to_string(), line: self.line, found: value.kind() });
            };
            // serde_json would keep the last of two equal keys; a projection or a key lookup
            // must not depend on which one a reader happens to pick.
            let mut keys = HashSet::with_capacity(object.len());
            for (key, _) in &object {
                if !keys.insert(key.as_str()) {
                    return Err(Error::DuplicateKey { file: self.file.to_string(), line: self.line, key: key.clone() });
                }
            }
            return Ok(Some(object));
        }
    }
}

/// serde_json's message without its " at line 1 column N" suffix (we parse one line at a time,
/// so its line is always 1; the column is reported separately).
fn json_message(e: &serde_json::Error) -> String {
    let mut message = e.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    message
}

/// A JSON value that keeps object keys in document order (serde_json's own `Value` sorts them
/// unless its `preserve_order` feature is on, and turning that on would change every JSON
/// document the workspace prints).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a json value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(Value::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                Ok(Value::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
                serde_json::Number::from_f64(n).map(Value::Number).ok_or_else(|| E::custom("number out of range"))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Value::Object(entries))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => n.serialize(s),
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(entries) => ObjectRef(entries).serialize(s),
        }
    }
}

/// Serializes key/value pairs as a JSON object, in the order given.
struct ObjectRef<'a>(&'a [(String, Value)]);

impl Serialize for ObjectRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The type one JSON value suggests for its key; `None` for null, which suggests nothing.
fn json_type(value: &Value) -> Option<FieldType> {
    match value {
        Value::Null => None,
        Value::Bool(_) => Some(FieldType::Boolean),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(FieldType::Integer),
        Value::Number(_) => Some(FieldType::Number),
        Value::String(_) | Value::Array(_) | Value::Object(_) => Some(FieldType::String),
    }
}

/// The narrowest type covering both: integers widen to numbers, any other mix is a string.
fn merge(a: Option<FieldType>, b: Option<FieldType>) -> Option<FieldType> {
    use FieldType::{Integer, Number, String};
    match (a, b) {
        (None, t) | (t, None) => t,
        (Some(a), Some(b)) if a == b => Some(a),
        (Some(Integer), Some(Number)) | (Some(Number), Some(Integer)) => Some(Number),
        _ => Some(String),
    }
}

/// The top-level members of the JSON object `line`: each key and the byte range of its value,
/// in document order.
///
/// serde_json cannot hand back a value's source text (that needs its `raw_value` or
/// `arbitrary_precision` feature, which would change how every crate in the workspace parses), so
/// this walks the object's top level itself and lets serde_json delimit each key and value.
fn members(line: &[u8]) -> Result<Vec<(String, std::ops::Range<usize>)>, String> {
    let malformed = || "expected a json object".to_string();
    let mut at = after_space(line, 0);
    if line.get(at) != Some(&b'{') {
        return Err(malformed());
    }
    at = after_space(line, at + 1);
    let mut out = Vec::new();
    if line.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            let (name, end) = next_json::<String>(line, at)?;
            at = after_space(line, end);
            if line.get(at) != Some(&b':') {
                return Err(malformed());
            }
            let start = after_space(line, at + 1);
            let (_, end) = next_json::<IgnoredAny>(line, start)?;
            out.push((name, start..end));
            at = after_space(line, end);
            match line.get(at) {
                Some(b',') => at = after_space(line, at + 1),
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return Err(malformed()),
            }
        }
    }
    if after_space(line, at) != line.len() {
        return Err("unexpected characters after the object".to_string());
    }
    Ok(out)
}

/// The text of top-level key `key` of the JSON object `line`: a string's contents, or a number or
/// boolean as written. `None` when the key is missing, null, an array or an object.
pub(crate) fn key_text<'a>(line: &'a [u8], key: &str) -> Result<Option<Cow<'a, str>>, String> {
    let mut found = None;
    for (name, span) in members(line)? {
        if name == key && found.replace(line.get(span).unwrap_or_default()).is_some() {
            return Err(format!("key {key:?} appears more than once in the object"));
        }
    }
    Ok(match found.and_then(|raw| raw.first().map(|&b| (b, raw))) {
        Some((b'"', raw)) => Some(Cow::Owned(serde_json::from_slice::<String>(raw).map_err(|e| e.to_string())?)),
        Some((b'n' | b'{' | b'[', _)) | None => None,
        // A number, true or false: ASCII, as written.
        Some((_, raw)) => Some(Cow::Borrowed(std::str::from_utf8(raw).map_err(|e| e.to_string())?)),
    })
}

/// The JSON value (or key) at `at` in `line`, and where it ends.
fn next_json<T: serde::de::DeserializeOwned>(line: &[u8], at: usize) -> Result<(T, usize), String> {
    let mut values = serde_json::Deserializer::from_slice(line.get(at..).unwrap_or_default()).into_iter::<T>();
    match values.next() {
        Some(Ok(value)) => Ok((value, at + values.byte_offset())),
        Some(Err(e)) => Err(format!("not valid json: {e}")),
        None => Err("a json object ends early".to_string()),
    }
}

fn after_space(line: &[u8], mut at: usize) -> usize {
    while line.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Parses one JSON line, keeping only `fields` (all when `None`), in schema order.
pub(crate) fn record(bytes: &[u8], schema: &[Field], fields: Option<&[String]>) -> Result<Record, String> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    // Each line has its own key order; answer in the dataset's (first-seen) order, with any key
    // the schema lacks (none, for a schema the importer inferred) after the rest.
    let mut out = Vec::with_capacity(object.len());
    for field in schema {
        if fields.is_none_or(|fields| fields.contains(&field.name))
            && let Some(value) = object.remove(&field.name)
        {
            out.push((field.name.clone(), value));
        }
    }
    if fields.is_none() {
        out.extend(object);
    }
    Ok(out)
}
