//! CSV: a header row naming every column (non-empty, unique, UTF-8), then records of exactly
//! the header's width. The header is read as an ordinary record so that it gets the same checks,
//! and widths are checked here rather than by the csv crate, for errors that say what is wrong.
//!
//! Types: a column is `integer` when every non-empty value parses as an i64, else `number` when
//! every one is a finite f64, else `boolean` when every one is true/false (any case), else
//! `string`; empty values are missing and say nothing. [`typed`] turns one value back into JSON by
//! its column's type, and agrees with the inference (tested below).

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, Read, Write};

use deltafed_protocol::manifest::{Field, FieldType};
use serde_json::Value;

use super::{CHUNK, Error, MAX_RECORD, Record, dedup, list, list_quoted};

/// The dialect every reader of a dataset's CSV uses (import, key index).
pub(crate) fn reader_builder(capacity: usize) -> ::csv::ReaderBuilder {
    let mut builder = ::csv::ReaderBuilder::new();
    builder.has_headers(false).flexible(true).buffer_capacity(capacity);
    builder
}

/// Parses `input` to the end; returns the record count and the inferred schema.
pub(crate) fn infer(input: impl Read, file: &str) -> Result<(u64, Vec<Field>), Error> {
    let mut rows = CsvRows::new(input, file)?;
    let mut columns = vec![ColumnStats::new(); rows.header.len()];
    let mut records = 0u64;
    while let Some(record) = rows.next_record()? {
        records += 1;
        for (stats, value) in columns.iter_mut().zip(record.iter()) {
            // CsvRows has checked that every field is utf-8.
            stats.observe(std::str::from_utf8(value).unwrap_or_default());
        }
    }
    let schema =
        rows.header.iter().zip(&columns).map(|(name, stats)| Field { name: name.clone(), ty: stats.ty() }).collect();
    Ok((records, schema))
}

/// Writes the projection of `input` onto `fields`: the header row is kept, the requested columns
/// are written in the dataset's column order, quoted as needed.
pub(crate) fn project(
    input: impl Read,
    fields: &[String],
    out: &mut impl Write,
    file: &str,
    out_name: &str,
) -> Result<(), Error> {
    let write_err = |source| Error::Write { file: out_name.to_string(), source };
    let mut rows = CsvRows::new(input, file)?;
    let wanted: HashSet<&str> = fields.iter().map(String::as_str).collect();
    let unknown: Vec<&str> =
        dedup(fields.iter().map(String::as_str)).filter(|f| !rows.header.iter().any(|h| h == f)).collect();
    if !unknown.is_empty() {
        return Err(Error::UnknownFields {
            file: file.to_string(),
            unknown: list_quoted(unknown),
            available: list(rows.header.iter().map(String::as_str)),
        });
    }
    let keep: Vec<usize> = (0..rows.header.len()).filter(|&i| wanted.contains(rows.header[i].as_str())).collect();
    let mut csv_out = csv::WriterBuilder::new().buffer_capacity(CHUNK).from_writer(&mut *out);
    let csv_err = |e: csv::Error| write_err(io::Error::from(e));
    csv_out.write_record(keep.iter().map(|&i| rows.header[i].as_bytes())).map_err(csv_err)?;
    while let Some(record) = rows.next_record()? {
        csv_out.write_record(keep.iter().map(|&i| &record[i])).map_err(csv_err)?;
    }
    csv_out.flush().map_err(write_err)
}

/// The reader under the CSV parser. It fails once the parser has read [`MAX_RECORD`] bytes past
/// the start of the record it is on, so one huge record cannot grow the parser's record buffer
/// without bound; and it keeps the last chunk it read, so [`CsvRows`] can look at the byte that
/// ended a record (see [`CsvRows::read`]).
struct Capped<R> {
    inner: R,
    consumed: u64,
    /// Byte offset where the current record starts (set by [`CsvRows`] after each record).
    record_start: u64,
    tripped: bool,
    /// The bytes of the last non-empty read, which started at offset `last_start`.
    last: Vec<u8>,
    last_start: u64,
    /// The byte just before `last_start`.
    before_last: Option<u8>,
}

impl<R> Capped<R> {
    fn new(inner: R) -> Self {
        Capped {
            inner,
            consumed: 0,
            record_start: 0,
            tripped: false,
            last: Vec::new(),
            last_start: 0,
            before_last: None,
        }
    }

    /// The byte at `offset`, if it is still known. The parser's buffer only refills once it has
    /// consumed everything, so every offset from one before the last read onwards is.
    fn byte_at(&self, offset: u64) -> Option<u8> {
        if offset < self.last_start {
            return (offset + 1 == self.last_start).then_some(self.before_last).flatten();
        }
        let index = usize::try_from(offset - self.last_start).ok()?;
        self.last.get(index).copied()
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The parser buffers up to CHUNK bytes ahead, so allow for that.
        if self.consumed.saturating_sub(self.record_start) > MAX_RECORD + CHUNK as u64 {
            self.tripped = true;
            return Err(io::Error::other("record too large"));
        }
        let mut n = self.inner.read(buf)?;
        // The parser strips a UTF-8 byte order mark only when its first read holds all three
        // bytes and more (a read of the mark alone, once stripped, looks like the end): read on
        // until it does (or the input ends), so the parse never depends on how the input is
        // split into reads.
        if self.consumed == 0 {
            let want = buf.len().min(4);
            while n > 0 && n < want {
                match self.inner.read(&mut buf[n..want]) {
                    Ok(0) => break,
                    Ok(m) => n += m,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if n > 0 {
            self.before_last = self.last.last().copied().or(self.before_last);
            self.last.clear();
            self.last.extend_from_slice(&buf[..n]);
            self.last_start = self.consumed;
        }
        self.consumed += n as u64;
        Ok(n)
    }
}

/// A CSV stream checked as it is read: a non-empty header of unique, non-empty names, and data
/// records that are utf-8 and as wide as the header.
pub(crate) struct CsvRows<'f, R> {
    reader: csv::Reader<Capped<R>>,
    file: &'f str,
    pub(crate) header: Vec<String>,
    record: csv::ByteRecord,
    /// The line the last record read starts on.
    pub(crate) line: u64,
}

impl<'f, R: Read> CsvRows<'f, R> {
    pub(crate) fn new(input: R, file: &'f str) -> Result<Self, Error> {
        let reader = reader_builder(CHUNK)
            // The header is read as an ordinary record so that it gets the same checks.
            .has_headers(false)
            // Width is checked here, for an error that names the file and the header's width.
            .flexible(true)
            .buffer_capacity(CHUNK)
            .from_reader(Capped::new(input));
        let mut rows = CsvRows { reader, file, header: Vec::new(), record: csv::ByteRecord::new(), line: 1 };
        if !rows.read()? {
            return Err(Error::NoHeader { file: file.to_string() });
        }
        let line = rows.line;
        let mut names = Vec::with_capacity(rows.record.len());
        let mut seen = HashSet::new();
        for (column, raw) in rows.record.iter().enumerate() {
            let name = std::str::from_utf8(raw).map_err(|_| Error::Utf8 {
                file: file.to_string(),
                line,
                field: format!("header column {}", column + 1),
            })?;
            if name.is_empty() {
                return Err(Error::EmptyColumnName { file: file.to_string(), line, column: column + 1 });
            }
            if !seen.insert(name) {
                return Err(Error::DuplicateColumn { file: file.to_string(), line, name: name.to_string() });
            }
            names.push(name.to_string());
        }
        rows.header = names;
        Ok(rows)
    }

    /// The next data record, checked; `None` at the end.
    pub(crate) fn next_record(&mut self) -> Result<Option<&csv::ByteRecord>, Error> {
        if !self.read()? {
            return Ok(None);
        }
        let line = self.line;
        if self.record.len() != self.header.len() {
            return Err(Error::Ragged {
                file: self.file.to_string(),
                line,
                record: self.record.position().map_or(0, |p| p.record()),
                expected: self.header.len(),
                got: self.record.len(),
            });
        }
        for (name, value) in self.header.iter().zip(self.record.iter()) {
            if std::str::from_utf8(value).is_err() {
                return Err(Error::Utf8 { file: self.file.to_string(), line, field: name.clone() });
            }
        }
        Ok(Some(&self.record))
    }

    fn read(&mut self) -> Result<bool, Error> {
        // Where the parser stood before this record: its line is a lower bound for the record's.
        let before = self.reader.position().line();
        match self.reader.read_byte_record(&mut self.record) {
            Ok(more) => {
                let end = self.reader.position();
                let (end_byte, end_line) = (end.byte(), end.line());
                let capped = self.reader.get_mut();
                capped.record_start = end_byte;
                // csv counts every '\n' it has consumed, but stamps a record with its position
                // *before* skipping blank lines and the '\n' of a previous CRLF, so its start
                // lines drift. Work back from the end instead: the record's last line is the
                // count at its end, less its own terminator if that was a '\n' (a CRLF record
                // ends at the '\r'); its first line is that less the newlines inside its fields,
                // which quoted fields keep verbatim.
                let terminator = end_byte.checked_sub(1).and_then(|offset| capped.byte_at(offset));
                let last_line = end_line - u64::from(terminator == Some(b'\n'));
                let inside = self.record.as_slice().iter().filter(|&&b| b == b'\n').count();
                self.line = last_line.saturating_sub(inside as u64).max(before);
                Ok(more)
            }
            Err(e) if self.reader.get_ref().tripped => {
                drop(e);
                Err(Error::RecordTooLarge { file: self.file.to_string(), line: before })
            }
            Err(e) => {
                // Reading bytes without width checks, io is the only failure csv reports; keep
                // its own words for anything else.
                let message = e.to_string();
                Err(match e.into_kind() {
                    csv::ErrorKind::Io(source) => Error::Read { file: self.file.to_string(), source },
                    _ => Error::Csv { file: self.file.to_string(), message },
                })
            }
        }
    }
}

/// What the values of one CSV column have been consistent with so far.
#[derive(Debug, Clone)]
struct ColumnStats {
    any: bool,
    integer: bool,
    number: bool,
    boolean: bool,
}

impl ColumnStats {
    fn new() -> Self {
        ColumnStats { any: false, integer: true, number: true, boolean: true }
    }

    /// Empty values say nothing about the type (they are missing values).
    fn observe(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        self.any = true;
        if self.integer && value.parse::<i64>().is_err() {
            self.integer = false;
        }
        // Rust also parses "NaN" and "inf", which in a data column are words, not numbers.
        if self.number && !value.parse::<f64>().is_ok_and(f64::is_finite) {
            self.number = false;
        }
        if self.boolean && !(value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")) {
            self.boolean = false;
        }
    }

    fn ty(&self) -> FieldType {
        if !self.any {
            FieldType::String
        } else if self.integer {
            FieldType::Integer
        } else if self.number {
            FieldType::Number
        } else if self.boolean {
            FieldType::Boolean
        } else {
            FieldType::String
        }
    }
}

thread_local! {
    /// A csv parser per thread: building one builds its DFA, which was a twentieth of a record
    /// query's CPU when done for every record looked up. Same dialect as `reader_builder`.
    static CSV_PARSER: RefCell<csv_core::Reader> = RefCell::new(csv_core::Reader::new());
}

/// Splits one csv record (headerless) into its unquoted bytes and the end of each field, with
/// room for `max_fields` (one more is counted, so a mismatch can say how many there were).
pub(crate) fn split_record(bytes: &[u8], max_fields: usize) -> Result<(Vec<u8>, Vec<usize>), String> {
    CSV_PARSER.with(|parser| {
        let mut parser = parser.borrow_mut();
        parser.reset();
        // Unquoting only shrinks a record, so its own length is room enough.
        let mut out = vec![0u8; bytes.len()];
        let mut ends = vec![0usize; max_fields + 1];
        let (mut input, mut nout, mut nends) = (bytes, 0, 0);
        // Each call consumes input or ends the record (an empty input means the end of data);
        // the bound only guards against a parser that would do neither.
        for _ in 0..bytes.len() + 4 {
            let (res, i, o, e) = parser.read_record(input, &mut out[nout..], &mut ends[nends..]);
            input = &input[i..];
            nout += o;
            nends += e;
            match res {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::Record => {
                    out.truncate(nout);
                    ends.truncate(nends);
                    return Ok((out, ends));
                }
                csv_core::ReadRecordResult::End => return Err("no record there".to_string()),
                csv_core::ReadRecordResult::OutputFull => return Err("the record does not parse".to_string()),
                csv_core::ReadRecordResult::OutputEndsFull => {
                    return Err(format!("it has more than {} fields, the schema's number", max_fields + 1));
                }
            }
        }
        Err("the record does not parse".to_string())
    })
}

/// Parses one csv record (headerless) and names its kept values by the schema.
pub(crate) fn record(bytes: &[u8], schema: &[Field], keep: &[bool]) -> Result<Record, String> {
    let (data, ends) = split_record(bytes, schema.len())?;
    if ends.len() != schema.len() {
        return Err(format!("it has {} fields but the schema has {}", ends.len(), schema.len()));
    }
    let mut out = Vec::with_capacity(keep.iter().filter(|&&k| k).count());
    let mut start = 0;
    for ((field, &end), &kept) in schema.iter().zip(&ends).zip(keep) {
        let raw = data.get(start..end).ok_or_else(|| "the record does not parse".to_string())?;
        start = end;
        if !kept {
            continue;
        }
        let text = std::str::from_utf8(raw).map_err(|_| format!("field {:?} is not valid utf-8", field.name))?;
        out.push((field.name.clone(), typed(text, field.ty)));
    }
    Ok(out)
}

/// A csv value as JSON, typed by its column.
pub fn typed(text: &str, ty: FieldType) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    let as_string = || Value::String(text.to_string());
    match ty {
        FieldType::String => as_string(),
        FieldType::Integer => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .unwrap_or_else(|_| as_string()),
        // An integer-looking value stays an integer (`2`, not `2.0`); non-finite values have no
        // JSON number and stay text, as the importer's inference treats them.
        FieldType::Number => match text.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => {
                text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or_else(as_string, Value::Number)
            }
        },
        FieldType::Boolean if text.eq_ignore_ascii_case("true") => Value::Bool(true),
        FieldType::Boolean if text.eq_ignore_ascii_case("false") => Value::Bool(false),
        FieldType::Boolean => as_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte per read, as a pipe under load may.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else { return Ok(0) };
            let Some(slot) = buf.first_mut() else { return Ok(0) };
            *slot = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    /// Found by the projection fuzz target: a byte order mark split over reads used to become
    /// part of the first column's name.
    #[test]
    fn a_byte_order_mark_is_read_the_same_however_the_input_is_split() {
        let data = b"\xef\xbb\xbfkey,v\nk1,2ompany2";
        let whole = infer(&data[..], "whole").expect("whole");
        let trickled = infer(OneByte(data), "trickled").expect("one byte at a time");
        assert_eq!(whole, trickled);
        assert_eq!(whole.1[0].name, "key");
        let fields = vec!["key".to_string()];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        project(&data[..], &fields, &mut a, "whole", "out").expect("whole");
        project(OneByte(data), &fields, &mut b, "trickled", "out").expect("one byte at a time");
        assert_eq!(a, b);
    }

    /// What import infers for a value and what a record query answers for it agree: the JSON a
    /// query returns always has the JSON type of the column's inferred type.
    #[test]
    fn typing_agrees_with_inference() {
        let values = [
            "0",
            "-7",
            "9223372036854775807",
            "18446744073709551616",
            "1.5",
            "-2e3",
            "1e400",
            "true",
            "FALSE",
            "NaN",
            "inf",
            "abc",
            "",
            " 1",
        ];
        for v in values {
            let mut stats = ColumnStats::new();
            stats.observe(v);
            let ty = stats.ty();
            let json = typed(v, ty);
            let agrees = match ty {
                FieldType::Integer => json.is_i64() || json.is_u64(),
                FieldType::Number => json.is_number(),
                FieldType::Boolean => json.is_boolean(),
                FieldType::String => json.is_string() || (v.is_empty() && json.is_null()),
            };
            assert!(agrees, "{v:?} inferred {ty:?} but answered {json}");
        }
    }
}
