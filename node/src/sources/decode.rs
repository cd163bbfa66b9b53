//! PostgreSQL's binary values to the cells of an exported row: the type mapping of
//! docs/sources.md, one place. Values are decoded from the wire format directly, so numerics keep
//! every digit and dates need no calendar crate.

use std::fmt::Write as _;
use std::io::Write;

use tokio_postgres::types::{FromSql, Type};

/// A column's type, as far as the export maps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Bool,
    /// text, varchar, char(n), name, citext-like text types.
    Text,
    Json,
    Jsonb,
    Uuid,
    Date,
    Timestamp,
    Timestamptz,
}

impl Kind {
    const NAMES: [(Kind, &'static str); 15] = [
        (Kind::Int2, "int2"),
        (Kind::Int4, "int4"),
        (Kind::Int8, "int8"),
        (Kind::Oid, "oid"),
        (Kind::Float4, "float4"),
        (Kind::Float8, "float8"),
        (Kind::Numeric, "numeric"),
        (Kind::Bool, "bool"),
        (Kind::Text, "text"),
        (Kind::Json, "json"),
        (Kind::Jsonb, "jsonb"),
        (Kind::Uuid, "uuid"),
        (Kind::Date, "date"),
        (Kind::Timestamp, "timestamp"),
        (Kind::Timestamptz, "timestamptz"),
    ];

    /// The name kept in a live dataset's stored columns.
    pub fn name(self) -> &'static str {
        Kind::NAMES.iter().find(|(k, _)| *k == self).map_or("text", |(_, n)| n)
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::NAMES.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
    }

    pub fn of(ty: &Type) -> Option<Kind> {
        Some(match *ty {
            Type::INT2 => Kind::Int2,
            Type::INT4 => Kind::Int4,
            Type::INT8 => Kind::Int8,
            Type::OID => Kind::Oid,
            Type::FLOAT4 => Kind::Float4,
            Type::FLOAT8 => Kind::Float8,
            Type::NUMERIC => Kind::Numeric,
            Type::BOOL => Kind::Bool,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Kind::Text,
            Type::JSON => Kind::Json,
            Type::JSONB => Kind::Jsonb,
            Type::UUID => Kind::Uuid,
            Type::DATE => Kind::Date,
            Type::TIMESTAMP => Kind::Timestamp,
            Type::TIMESTAMPTZ => Kind::Timestamptz,
            _ => return None,
        })
    }

    /// One value (`None`: SQL NULL) as a cell.
    pub fn decode(self, raw: Option<&[u8]>) -> Result<Cell, String> {
        let Some(b) = raw else { return Ok(Cell::Null) };
        Ok(match self {
            Kind::Int2 => Cell::Int(i64::from(i16::from_be_bytes(fixed(b)?))),
            Kind::Int4 => Cell::Int(i64::from(i32::from_be_bytes(fixed(b)?))),
            Kind::Int8 => Cell::Int(i64::from_be_bytes(fixed(b)?)),
            Kind::Oid => Cell::Int(i64::from(u32::from_be_bytes(fixed(b)?))),
            Kind::Float4 => float(f64::from(f32::from_be_bytes(fixed(b)?))),
            Kind::Float8 => float(f64::from_be_bytes(fixed(b)?)),
            Kind::Numeric => numeric(b)?,
            Kind::Bool => Cell::Bool(fixed::<1>(b)?[0] != 0),
            Kind::Text | Kind::Json => Cell::Text(utf8(b)?),
            // jsonb's binary form is a version byte (1) and the text.
            Kind::Jsonb => match b.split_first() {
                Some((1, rest)) => Cell::Text(utf8(rest)?),
                _ => return Err("unknown jsonb version".into()),
            },
            Kind::Uuid => Cell::Text(uuid(fixed(b)?)),
            Kind::Date => Cell::Text(date(i32::from_be_bytes(fixed(b)?))),
            Kind::Timestamp => Cell::Text(timestamp(i64::from_be_bytes(fixed(b)?), "")),
            Kind::Timestamptz => Cell::Text(timestamp(i64::from_be_bytes(fixed(b)?), "Z")),
        })
    }
}

/// A value of any type, as its raw bytes (the mapping is [`Kind::decode`]'s).
pub struct Raw<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One exported value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    /// A JSON number's exact text (numerics keep all their digits).
    Number(String),
    Bool(bool),
    Text(String),
}

impl Cell {
    pub fn write_json(&self, w: &mut impl Write) -> std::io::Result<()> {
        match self {
            Cell::Null => w.write_all(b"null"),
            Cell::Int(i) => write!(w, "{i}"),
            Cell::Number(n) => w.write_all(n.as_bytes()),
            Cell::Bool(b) => write!(w, "{b}"),
            Cell::Text(s) => serde_json::to_writer(w, s).map_err(std::io::Error::other),
        }
    }

    /// CSV has no null: it is the empty field.
    pub fn csv_text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Int(i) => i.to_string(),
            Cell::Number(n) => n.clone(),
            Cell::Bool(b) => b.to_string(),
            Cell::Text(s) => s.clone(),
        }
    }
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into().map_err(|_| format!("expected {N} bytes, got {}", b.len()))
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "text that is not UTF-8".to_string())
}

/// JSON has no NaN or infinity: those become null (docs/sources.md).
fn float(f: f64) -> Cell {
    if !f.is_finite() {
        return Cell::Null;
    }
    let mut s = serde_json::Number::from_f64(f).map(|n| n.to_string()).unwrap_or_default();
    // `1` would read back as an integer; a float column stays a number.
    if !s.contains(['.', 'e', 'E']) {
        s.push_str(".0");
    }
    Cell::Number(s)
}

/// Binary numeric: ndigits, weight (of the first base-10000 digit), sign, display scale, digits.
fn numeric(b: &[u8]) -> Result<Cell, String> {
    let word = |i: usize| -> Result<u16, String> {
        b.get(i..i + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or_else(|| "a truncated numeric".to_string())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    if sign != 0x0000 && sign != 0x4000 {
        // NaN and the infinities have no JSON number.
        return Ok(Cell::Null);
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = word(8 + 2 * i)?;
        if d > 9999 {
            return Err("a numeric digit out of range".into());
        }
        digits.push(d);
    }
    let digit = |i: i32| -> u16 { usize::try_from(i).ok().and_then(|i| digits.get(i).copied()).unwrap_or(0) };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(s, "{}", digit(i));
            } else {
                let _ = write!(s, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(i));
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Ok(Cell::Number(s))
}

fn uuid(b: [u8; 16]) -> String {
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// PostgreSQL counts days from 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

fn date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        d => {
            let (y, m, d) = civil(i64::from(d) + PG_EPOCH_DAYS);
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

/// Microseconds since 2000-01-01 00:00; `zone` is `Z` for timestamptz (always sent in UTC).
fn timestamp(us: i64, zone: &str) -> String {
    match us {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400) + PG_EPOCH_DAYS;
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    let mut s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod % 3600 / 60, sod % 60);
    if micros != 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str(zone);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Cell {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        numeric(&b).expect("numeric")
    }

    #[test]
    fn numerics_keep_every_digit() {
        assert_eq!(num(2, 0, 0, 2, &[12, 3400]), Cell::Number("12.34".into()));
        assert_eq!(num(3, 1, 0x4000, 1, &[1, 2345, 6000]), Cell::Number("-12345.6".into()));
        assert_eq!(num(0, 0, 0, 0, &[]), Cell::Number("0".into()));
        assert_eq!(num(1, -1, 0, 4, &[5]), Cell::Number("0.0005".into()));
        assert_eq!(num(1, 2, 0, 0, &[7]), Cell::Number("700000000".into()));
        assert_eq!(num(0, 0, 0xC000, 0, &[]), Cell::Null);
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(date(0), "2000-01-01");
        assert_eq!(date(-1), "1999-12-31");
        assert_eq!(date(9190), "2025-02-28");
        assert_eq!(date(9191), "2025-03-01");
        assert_eq!(date(-36_524), "1900-01-01");
        assert_eq!(timestamp(0, ""), "2000-01-01T00:00:00");
        assert_eq!(timestamp(86_400_000_000 + 3_723_500_000, "Z"), "2000-01-02T01:02:03.5Z");
        assert_eq!(timestamp(-1, ""), "1999-12-31T23:59:59.999999");
    }

    #[test]
    fn floats_stay_numbers() {
        assert_eq!(float(1.0), Cell::Number("1.0".into()));
        assert_eq!(float(2.5), Cell::Number("2.5".into()));
        assert_eq!(float(f64::NAN), Cell::Null);
    }
}
