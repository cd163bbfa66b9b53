//! Import, schema inference and projection, on real files.
use deltafed_protocol::manifest::FieldType;

use super::*;

/// A file name, its bytes, and a check of the error importing it must give.
type Case = (&'static str, &'static [u8], fn(&Error) -> bool);

fn store() -> (tempfile::TempDir, Blobs) {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = Blobs::open(&dir.path().join("blobs")).expect("open");
    (dir, blobs)
}

/// Writes `bytes` to a file named `name` next to the store.
fn source(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, bytes).expect("write source");
    path
}

fn field(name: &str, ty: FieldType) -> Field {
    Field { name: name.to_string(), ty }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn project_bytes(format: Format, input: &[u8], fields: &[&str]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    project_to(format, input, &strings(fields), &mut out)?;
    Ok(out)
}

fn parse_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes)
        .records()
        .map(|r| r.expect("record").iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn open_creates_root_and_tmp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("a/b/blobs");
    let blobs = Blobs::open(&root).expect("open");
    assert!(root.join("tmp").is_dir());
    assert_eq!(blobs.root(), root);
    Blobs::open(&root).expect("reopen");
}

#[test]
fn csv_rfc4180_edge_cases() {
    let (dir, blobs) = store();
    let data = "id,name,note\r\n\
                1,\"Hangzhou, 浙江省\",\"she said \"\"hi\"\"\"\r\n\
                2,Nanjing,\"two\nlines\"\r\n\
                3,,plain\r\n";
    let src = source(&dir, "towns.csv", data.as_bytes());
    let imported = blobs.import(&src, Format::Csv, Some("id")).expect("import");
    assert_eq!(imported.records, 3);
    assert_eq!(
        imported.schema,
        vec![field("id", FieldType::Integer), field("name", FieldType::String), field("note", FieldType::String),]
    );
    assert_eq!(imported.size, data.len() as u64);
    // The stored blob is the published bytes, exactly.
    assert_eq!(fs::read(blobs.path_of(&imported.hash)).expect("read blob"), data.as_bytes());
}

#[test]
fn csv_type_inference_per_column() {
    let (dir, blobs) = store();
    let data = "int,num,mixed_num,bool,text,empty,int_gaps,nan\n\
                1,1.5,1,true,a,,7,NaN\n\
                -2,2,2.5,FALSE,b,,,inf\n\
                30,3e2,3,True,1,,9,NaN\n";
    let src = source(&dir, "types.csv", data.as_bytes());
    let imported = blobs.import(&src, Format::Csv, None).expect("import");
    assert_eq!(
        imported.schema,
        vec![
            field("int", FieldType::Integer),
            field("num", FieldType::Number),
            field("mixed_num", FieldType::Number),
            field("bool", FieldType::Boolean),
            field("text", FieldType::String),
            field("empty", FieldType::String),
            field("int_gaps", FieldType::Integer),
            field("nan", FieldType::String),
        ]
    );
    assert_eq!(imported.records, 3);
}

#[test]
fn csv_header_only_has_zero_records() {
    let (dir, blobs) = store();
    let src = source(&dir, "h.csv", b"a,b\n");
    let imported = blobs.import(&src, Format::Csv, None).expect("import");
    assert_eq!(imported.records, 0);
    assert_eq!(imported.schema, vec![field("a", FieldType::String), field("b", FieldType::String)]);
}

#[test]
fn csv_ragged_row_names_the_line() {
    let (dir, blobs) = store();
    // The quoted newline makes the bad record start on line 4, not record 3's line.
    let src = source(&dir, "ragged.csv", b"a,b\n1,\"x\ny\"\n2,3,4\n");
    let err = blobs.import(&src, Format::Csv, None).expect_err("ragged");
    match &err {
        Error::Ragged { line, record, expected, got, .. } => {
            assert_eq!((*line, *record, *expected, *got), (4, 2, 2, 3))
        }
        other => panic!("wrong error: {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("ragged.csv, line 4"), "{message}");
    // Nothing was stored.
    assert_eq!(fs::read_dir(blobs.tmp_dir()).expect("tmp").count(), 0);
    assert_eq!(fs::read_dir(blobs.root()).expect("root").count(), 1);
}

#[test]
fn csv_line_numbers_survive_crlf_blank_lines_and_quoted_newlines() {
    // Each input's last record is ragged; the error must name the line it starts on.
    let cases: [(&[u8], u64); 6] = [
        (b"a,b\n1,2\n3\n", 3),
        (b"a,b\r\n1,2\r\n3\r\n", 3),
        (b"a,b\r\n1,2\r\n\r\n\r\n3", 5),
        (b"a,b\n\n\n1,2\n\n3,4,5\n", 6),
        (b"a,b\n1,\"x\r\ny\"\r\n\"p\nq\",2,3\n", 4),
        ("\u{feff}a,b\n1,\"浙江\n省\"\n\n2\r\n".as_bytes(), 5),
    ];
    for (input, want) in cases {
        match project_bytes(Format::Csv, input, &["a"]) {
            Err(Error::Ragged { line, .. }) => {
                assert_eq!(line, want, "{:?}", String::from_utf8_lossy(input))
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }
}

#[test]
fn csv_line_numbers_hold_across_buffer_refills() {
    // Enough mixed line endings, blank lines and multi-line fields that record ends fall on
    // and around every kind of chunk boundary.
    let mut data = b"id,text\n".to_vec();
    let mut line = 2u64;
    let mut starts = Vec::new();
    let mut aligned = 0;
    for i in 0..60_000u64 {
        if i % 11 == 0 {
            data.extend_from_slice(b"\r\n");
            line += 1;
        }
        starts.push(line);
        // Near a chunk boundary, pad a row so that it ends exactly on it: with '\n', with
        // "\r\n", or with the '\r' just before it and the '\n' just after.
        let room = CHUNK - data.len() % CHUNK;
        let row = if (8..48).contains(&room) {
            let (terminator, overhang) = match (data.len() / CHUNK) % 3 {
                0 => ("\n", 0),
                1 => ("\r\n", 1),
                _ => ("\r\n", 0),
            };
            let prefix = format!("{i},");
            let pad = room + overhang - prefix.len() - terminator.len();
            aligned += 1;
            format!("{prefix}{}{terminator}", "p".repeat(pad))
        } else {
            match i % 4 {
                0 => format!("{i},plain\n"),
                1 => format!("{i},crlf\r\n"),
                2 => format!("{i},\"two\nlines\"\n"),
                _ => format!("{i},\"three\r\nline\nfield\"\r\n"),
            }
        };
        line += row.bytes().filter(|&b| b == b'\n').count() as u64;
        data.extend_from_slice(row.as_bytes());
    }
    assert!(aligned >= 3, "{aligned} rows end on a chunk boundary");
    let mut rows = crate::format::csv::CsvRows::new(&data[..], "t").expect("header");
    let mut seen = 0;
    while rows.next_record().expect("record").is_some() {
        assert_eq!(rows.line, starts[seen], "record {seen}");
        seen += 1;
    }
    assert_eq!(seen, starts.len());
}

#[test]
fn csv_bad_headers_and_encoding() {
    let (dir, blobs) = store();
    let cases: [Case; 4] = [
        ("empty.csv", b"", |e| matches!(e, Error::NoHeader { .. })),
        ("dup.csv", b"a,b,a\n1,2,3\n", |e| matches!(e, Error::DuplicateColumn { name, .. } if name == "a")),
        ("blank.csv", b"a,,c\n1,2,3\n", |e| matches!(e, Error::EmptyColumnName { column: 2, .. })),
        ("latin1.csv", b"a,b\n1,caf\xe9\n", |e| matches!(e, Error::Utf8 { line: 2, field, .. } if field == "b")),
    ];
    for (name, bytes, check) in cases {
        let src = source(&dir, name, bytes);
        let err = blobs.import(&src, Format::Csv, None).expect_err(name);
        assert!(check(&err), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn jsonl_inference() {
    let (dir, blobs) = store();
    let data = concat!(
        "{\"id\": 1, \"name\": \"浙江省\", \"score\": 1, \"ok\": true, \"tags\": [1]}\n",
        "\n",
        "{\"id\": 18446744073709551615, \"score\": 2.5, \"ok\": null, \"extra\": null}\r\n",
        "   \n",
        "{\"name\": 5, \"id\": -3, \"ok\": false, \"nested\": {\"z\": 1, \"a\": 2}}\n",
    );
    let src = source(&dir, "rows.jsonl", data.as_bytes());
    let imported = blobs.import(&src, Format::Jsonl, Some("id")).expect("import");
    assert_eq!(imported.records, 3);
    assert_eq!(
        imported.schema,
        vec![
            field("id", FieldType::Integer),
            field("name", FieldType::String),
            field("score", FieldType::Number),
            field("ok", FieldType::Boolean),
            field("tags", FieldType::String),
            field("extra", FieldType::String),
            field("nested", FieldType::String),
        ]
    );
}

#[test]
fn jsonl_empty_file_is_zero_records() {
    let (dir, blobs) = store();
    let src = source(&dir, "empty.jsonl", b"");
    let imported = blobs.import(&src, Format::Jsonl, None).expect("import");
    assert_eq!((imported.records, imported.size), (0, 0));
    assert!(imported.schema.is_empty());
    assert!(blobs.contains(&imported.hash));
}

#[test]
fn jsonl_bad_lines_name_the_line() {
    let (dir, blobs) = store();
    let cases: [Case; 4] = [
        ("syntax.jsonl", b"{\"a\":1}\n\n{\"a\":\n", |e| matches!(e, Error::Json { line: 3, .. })),
        ("array.jsonl", b"{\"a\":1}\n[1,2]\n", |e| matches!(e, Error::NotObject { line: 2, found: "an array", .. })),
        ("dup.jsonl", b"{\"a\":1,\"a\":2}\n", |e| matches!(e, Error::DuplicateKey { line: 1, key, .. } if key == "a")),
        ("bytes.jsonl", b"{\"a\":\"\xff\"}\n", |e| matches!(e, Error::Json { line: 1, .. })),
    ];
    for (name, bytes, check) in cases {
        let src = source(&dir, name, bytes);
        let err = blobs.import(&src, Format::Jsonl, None).expect_err(name);
        assert!(check(&err), "{name}: {err}");
        let message = err.to_string();
        assert!(message.contains(name), "{message}");
        assert!(!message.contains("at line 1"), "{message}");
    }
}

#[test]
fn key_field_must_be_a_field() {
    let (dir, blobs) = store();
    let src = source(&dir, "k.csv", b"code,name\n1,a\n");
    let err = blobs.import(&src, Format::Csv, Some("nope")).expect_err("unknown key");
    let message = err.to_string();
    assert!(matches!(err, Error::UnknownKeyField { .. }), "{message}");
    assert!(message.contains("--key-field"), "{message}");
    assert!(message.contains("\"nope\""), "{message}");
    assert!(message.contains("code, name"), "{message}");
    // Nothing stored under the hash.
    assert_eq!(fs::read_dir(blobs.root()).expect("root").count(), 1);

    let err = blobs.import(&src, Format::Raw, Some("code")).expect_err("raw key");
    let message = err.to_string();
    assert!(matches!(err, Error::KeyFieldOnRaw { .. }), "{message}");
    assert!(message.contains("--key-field") && message.contains("csv or jsonl"), "{message}");

    let jsonl = source(&dir, "k.jsonl", b"{\"x\":1}\n");
    let err = blobs.import(&jsonl, Format::Jsonl, Some("y")).expect_err("jsonl key");
    assert!(err.to_string().contains("its fields are: x"), "{err}");
}

#[test]
fn raw_import_and_idempotence() {
    let (dir, blobs) = store();
    // Bigger than one chunk, and not valid utf-8 or csv: raw data is taken as is.
    let bytes: Vec<u8> = (0..(CHUNK * 2 + 123)).map(|i| (i % 251) as u8).collect();
    let src = source(&dir, "blob.bin", &bytes);
    let first = blobs.import(&src, Format::Raw, None).expect("import");
    assert_eq!(first.hash, Hash::of(&bytes));
    assert_eq!(first.hash.to_string(), blake3::hash(&bytes).to_hex().as_str());
    assert_eq!(first.size, bytes.len() as u64);
    assert_eq!((first.records, first.schema.len()), (0, 0));
    assert_eq!(blobs.path_of(&first.hash), blobs.root().join(first.hash.to_string()));
    let mut stored = Vec::new();
    blobs.open_blob(&first.hash).expect("open blob").read_to_end(&mut stored).expect("read");
    assert_eq!(stored, bytes);

    let copy = source(&dir, "copy.bin", &bytes);
    let second = blobs.import(&copy, Format::Raw, None).expect("again");
    assert_eq!(first, second);
    // One blob, and no temp files left behind.
    assert_eq!(fs::read_dir(blobs.root()).expect("root").count(), 2);
    assert_eq!(fs::read_dir(blobs.tmp_dir()).expect("tmp").count(), 0);

    let empty = source(&dir, "empty.bin", b"");
    let imported = blobs.import(&empty, Format::Raw, None).expect("empty");
    assert_eq!(imported.hash, Hash::of(b""));
}

#[test]
fn hash_is_blake3_of_the_file_for_every_format() {
    let (dir, blobs) = store();
    let cases: [(Format, &[u8]); 3] = [
        (Format::Csv, "a,b\n\"x,y\",浙江省\n".as_bytes()),
        (Format::Jsonl, b"{\"a\":1}\n{\"b\":2}"),
        (Format::Raw, b"\x00\x01\x02"),
    ];
    for (format, bytes) in cases {
        let src = source(&dir, "data", bytes);
        let imported = blobs.import(&src, format, None).expect("import");
        assert_eq!(imported.hash, Hash::from(blake3::hash(bytes)), "{format}");
        assert!(blobs.contains(&imported.hash));
    }
}

#[test]
fn missing_blob() {
    let (_dir, blobs) = store();
    let hash = Hash::of(b"never stored");
    assert!(!blobs.contains(&hash));
    assert!(matches!(blobs.open_blob(&hash), Err(Error::Missing { .. })));
    assert!(matches!(blobs.project(&hash, Format::Csv, &strings(&["a"])), Err(Error::Missing { .. })));
}

#[test]
fn import_reports_unreadable_source() {
    let (dir, blobs) = store();
    let err = blobs.import(&dir.path().join("absent.csv"), Format::Csv, None).expect_err("missing");
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert!(err.to_string().contains("absent.csv"), "{err}");
}

#[test]
fn csv_projection_keeps_header_order_and_quoting() {
    let data = "id,name,note,score\n\
                1,\"Hangzhou, 浙江省\",\"say \"\"hi\"\"\",1.5\n\
                2,\"multi\nline\",x,2\n";
    // Asked out of order, with a repeat: the dataset's order wins.
    let out = project_bytes(Format::Csv, data.as_bytes(), &["score", "name", "score"]).expect("project");
    assert_eq!(
        parse_csv(&out),
        vec![strings(&["name", "score"]), strings(&["Hangzhou, 浙江省", "1.5"]), strings(&["multi\nline", "2"]),]
    );
    assert_eq!(String::from_utf8(out).expect("utf-8"), "name,score\n\"Hangzhou, 浙江省\",1.5\n\"multi\nline\",2\n");
    let out = project_bytes(Format::Csv, data.as_bytes(), &["note"]).expect("project");
    assert_eq!(parse_csv(&out), vec![strings(&["note"]), strings(&["say \"hi\""]), strings(&["x"])]);
}

#[test]
fn jsonl_projection_keeps_only_the_keys_in_line_order() {
    let data = concat!(
        "{\"z\": 1, \"a\": \"浙江省\", \"m\": {\"y\": 1, \"b\": [true, null]}}\n",
        "\n",
        "{\"m\": 2.5, \"z\": null, \"q\": 0}\n",
        "{\"q\": 1}\n",
    );
    let out = project_bytes(Format::Jsonl, data.as_bytes(), &["m", "z"]).expect("project");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        concat!("{\"z\":1,\"m\":{\"y\": 1, \"b\": [true, null]}}\n", "{\"m\":2.5,\"z\":null}\n", "{}\n",)
    );
}

/// Found by fuzzing: values went through f64 and came out changed. They are copied as written.
#[test]
fn jsonl_projection_copies_values_exactly() {
    let data = b"{\"a\":1.5012345678901234,\"b\":1.50,\"c\":18446744073709551616,\"d\":\"\\u00e9\"}\n";
    let out = project_bytes(Format::Jsonl, data, &["a", "b", "c", "d"]).expect("project");
    assert_eq!(out, data.to_vec(), "{}", String::from_utf8_lossy(&out));
}

#[test]
fn projection_errors() {
    let csv_data = b"a,b\n1,2\n";
    let err = project_bytes(Format::Csv, csv_data, &["a", "x", "y"]).expect_err("unknown");
    let message = err.to_string();
    assert!(matches!(err, Error::UnknownFields { .. }), "{message}");
    assert!(message.contains("\"x\", \"y\"") && message.contains("a, b"), "{message}");
    let err = project_bytes(Format::Jsonl, b"{\"a\":1}\n", &["b"]).expect_err("unknown");
    assert!(matches!(&err, Error::UnknownFields { unknown, .. } if unknown == "\"b\""), "{err}");
    assert!(matches!(project_bytes(Format::Raw, b"x", &["a"]), Err(Error::ProjectRaw)));
    assert!(matches!(project_bytes(Format::Csv, csv_data, &[]), Err(Error::NoFields)));
    assert!(matches!(project_bytes(Format::Csv, b"a,b\n1\n", &["a"]), Err(Error::Ragged { line: 2, .. })));
    assert!(matches!(project_bytes(Format::Jsonl, b"{\"a\":1}\n7\n", &["a"]), Err(Error::NotObject { line: 2, .. })));
}

#[test]
fn project_stored_blob_to_temp_file() {
    let (dir, blobs) = store();
    let data = "id,secret,name\n1,s1,\"a, b\"\n2,s2,浙江省\n";
    let src = source(&dir, "p.csv", data.as_bytes());
    let imported = blobs.import(&src, Format::Csv, Some("id")).expect("import");
    let projected = blobs.project(&imported.hash, Format::Csv, &strings(&["name", "id"])).expect("project");
    let bytes = fs::read(projected.file.path()).expect("read projection");
    assert_eq!(bytes, "id,name\n1,\"a, b\"\n2,浙江省\n".as_bytes());
    assert_eq!(projected.hash, Hash::of(&bytes));
    assert_eq!(projected.size, bytes.len() as u64);
    assert!(projected.file.path().starts_with(blobs.tmp_dir()));
    let path = projected.file.path().to_path_buf();
    drop(projected);
    assert!(!path.exists());

    assert!(matches!(blobs.project(&imported.hash, Format::Raw, &strings(&["id"])), Err(Error::ProjectRaw)));
    let err = blobs.project(&imported.hash, Format::Csv, &strings(&["nope"])).expect_err("unknown");
    assert!(err.to_string().contains(&imported.hash.to_string()), "{err}");
}

#[test]
fn oversized_records_are_refused() {
    // An unterminated quote would otherwise make the whole rest of the file one record.
    let mut csv_data = b"a\n\"".to_vec();
    csv_data.resize(MAX_RECORD as usize + 2 * CHUNK + 10, b'x');
    let err = project_bytes(Format::Csv, &csv_data, &["a"]).expect_err("too large");
    assert!(matches!(err, Error::RecordTooLarge { line: 2, .. }), "{err}");

    let mut jsonl = b"{}\n".to_vec();
    jsonl.resize(MAX_RECORD as usize + 10, b' ');
    let err = project_bytes(Format::Jsonl, &jsonl, &["a"]).expect_err("too large");
    assert!(matches!(err, Error::RecordTooLarge { line: 2, .. }), "{err}");
}
