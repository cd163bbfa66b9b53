//! The key index on real RocksDB and real blobs.
use std::path::Path;

use serde_json::json;

use super::*;

fn setup() -> (tempfile::TempDir, KeyIndex) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db")).expect("store");
    let blobs = Blobs::open(&dir.path().join("blobs")).expect("blobs");
    (dir, KeyIndex::new(store, Arc::new(blobs)))
}

/// Imports `bytes` as a dataset keyed by `key_field` and builds its index.
fn publish(dir: &Path, index: &KeyIndex, bytes: &[u8], format: Format, key_field: &str) -> (blobs::Imported, u64) {
    let src = dir.join(format!("source.{format}"));
    std::fs::write(&src, bytes).expect("write source");
    let imported = index.blobs.import(&src, format, Some(key_field)).expect("import");
    let count = index.build(&imported.hash, format, &imported.schema, key_field).expect("build");
    (imported, count)
}

fn find(index: &KeyIndex, imported: &blobs::Imported, format: Format, key: &str) -> Vec<Value> {
    index
        .lookup(&imported.hash, format, &imported.schema, key, None, 100)
        .expect("lookup")
        .into_iter()
        .map(Value::Object)
        .collect()
}

fn names(record: &Record) -> Vec<&str> {
    record.iter().map(|(name, _)| name.as_str()).collect()
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const TOWNS: &str = concat!(
    "id,name,note,score,active,count\r\n",
    "1,\"Hangzhou, 浙江省\",\"she said \"\"hi\"\"\",1.5,true,3\r\n",
    "\r\n",
    "2,Nanjing,\"two\nlines, and a comma\",2,FALSE,\n",
    "3,,plain,-0.25,,-7\n",
    "\"4\",\"x\"\"y\",,,True,0",
);

#[test]
fn csv_lookup_types_values_and_survives_quoting() {
    let (dir, index) = setup();
    let (towns, count) = publish(dir.path(), &index, TOWNS.as_bytes(), Format::Csv, "id");
    assert_eq!(count, 4);
    assert_eq!(
        find(&index, &towns, Format::Csv, "1"),
        vec![json!({"id": 1, "name": "Hangzhou, 浙江省", "note": "she said \"hi\"",
                    "score": 1.5, "active": true, "count": 3})]
    );
    assert_eq!(
        find(&index, &towns, Format::Csv, "2"),
        vec![json!({"id": 2, "name": "Nanjing", "note": "two\nlines, and a comma",
                    "score": 2, "active": false, "count": null})]
    );
    assert_eq!(
        find(&index, &towns, Format::Csv, "3"),
        vec![json!({"id": 3, "name": null, "note": "plain", "score": -0.25,
                    "active": null, "count": -7})]
    );
    // A quoted key is found by its text; the last record has no line break after it.
    assert_eq!(
        find(&index, &towns, Format::Csv, "4"),
        vec![json!({"id": 4, "name": "x\"y", "note": null, "score": null,
                    "active": true, "count": 0})]
    );

    // Keys with commas, quotes, line breaks and UTF-8, in a dataset keyed by them.
    let data = concat!(
        "name,n\n",
        "\"Hangzhou, 浙江省\",1\n",
        "\"say \"\"hi\"\"\",2\n",
        "\"two\r\nlines\",3\n",
        "浙江省,4\n",
    );
    let (names, count) = publish(dir.path(), &index, data.as_bytes(), Format::Csv, "name");
    assert_eq!(count, 4);
    for (key, n) in [("Hangzhou, 浙江省", 1), ("say \"hi\"", 2), ("two\r\nlines", 3), ("浙江省", 4)] {
        assert_eq!(find(&index, &names, Format::Csv, key), vec![json!({"name": key, "n": n})], "{key}");
    }
    assert!(find(&index, &names, Format::Csv, "\"Hangzhou, 浙江省\"").is_empty());
}

#[test]
fn duplicates_limit_and_missing_keys() {
    let (dir, index) = setup();
    let data = "code,seq\nA,1\nB,2\nA,3\nAB,4\nA,5\n,6\ncode,7\n";
    let (set, count) = publish(dir.path(), &index, data.as_bytes(), Format::Csv, "code");
    assert_eq!(count, 6, "the record with an empty key is not indexed");
    let seqs = |key: &str, limit: usize| -> Vec<Value> {
        index
            .lookup(&set.hash, Format::Csv, &set.schema, key, None, limit)
            .expect("lookup")
            .into_iter()
            .map(|r| r["seq"].clone())
            .collect()
    };
    assert_eq!(seqs("A", 10), vec![json!(1), json!(3), json!(5)]);
    assert_eq!(seqs("A", 2), vec![json!(1), json!(3)]);
    assert!(seqs("A", 0).is_empty());
    // A key that is a prefix of another does not match it.
    assert_eq!(seqs("B", 10), vec![json!(2)]);
    assert_eq!(seqs("AB", 10), vec![json!(4)]);
    assert!(seqs("Z", 10).is_empty());
    assert!(seqs("", 10).is_empty());
    // The header row is not a record; a data row that repeats it is.
    assert_eq!(seqs("code", 10), vec![json!(7)]);
}

#[test]
fn projection_keeps_dataset_order_and_checks_names() {
    let (dir, index) = setup();
    let (towns, _) = publish(dir.path(), &index, TOWNS.as_bytes(), Format::Csv, "id");
    let fields = strings(&["count", "name", "count"]);
    let records =
        index.lookup_in_order(&towns.hash, Format::Csv, &towns.schema, "1", Some(&fields), 10).expect("lookup");
    assert_eq!(records.len(), 1);
    assert_eq!(names(&records[0]), ["name", "count"]);
    let maps = index.lookup(&towns.hash, Format::Csv, &towns.schema, "1", Some(&fields), 10).expect("lookup");
    assert_eq!(Value::Object(maps[0].clone()), json!({"name": "Hangzhou, 浙江省", "count": 3}));

    let bad = strings(&["id", "secret", "nope"]);
    let err = index.lookup(&towns.hash, Format::Csv, &towns.schema, "1", Some(&bad), 10).expect_err("unknown fields");
    let message = err.to_string();
    assert!(matches!(err, Error::UnknownFields { .. }), "{message}");
    assert!(message.contains("\"secret\", \"nope\""), "{message}");
    assert!(message.contains(&towns.hash.to_string()), "{message}");
    assert!(matches!(index.lookup(&towns.hash, Format::Csv, &towns.schema, "1", Some(&[]), 10), Err(Error::NoFields)));
}

#[test]
fn jsonl_keys_as_written_and_values_as_parsed() {
    let (dir, index) = setup();
    let data = concat!(
        "{\"id\": \"a-1\", \"name\": \"浙江省\", \"n\": 1.50, \"tags\": [1, {\"z\": \"}\"}], \"ok\": true}\n",
        "\n",
        "{\"n\": 1e3, \"id\": 7, \"ok\": false}\r\n",
        "{\"id\": \"a-1\", \"extra\": null}\n",
        "{\"\\u0069d\": \"esc\", \"name\": \"escaped key name\"}\n",
        "{\"id\": null, \"name\": \"null key\"}\n",
        "{\"name\": \"no key\"}\n",
        "{\"id\": {\"k\": \"a-1\"}, \"name\": \"object key\"}\n",
        "{\"id\": \"nul\\u0000x\", \"name\": \"nul\"}\n",
        "{\"id\": \"nul\", \"name\": \"nul prefix\"}\n",
        "{\"id\": true, \"name\": \"bool\"}\n",
        "{\"name\": \"decimal\", \"id\" : 1.50 }",
    );
    let (set, count) = publish(dir.path(), &index, data.as_bytes(), Format::Jsonl, "id");
    assert_eq!(count, 8);
    assert_eq!(
        find(&index, &set, Format::Jsonl, "a-1"),
        vec![
            json!({"id": "a-1", "name": "浙江省", "n": 1.5, "tags": [1, {"z": "}"}], "ok": true}),
            json!({"id": "a-1", "extra": null}),
        ]
    );
    // Answered in the dataset's first-seen key order, not the line's.
    let records = index.lookup_in_order(&set.hash, Format::Jsonl, &set.schema, "7", None, 10).expect("lookup");
    assert_eq!(names(&records[0]), ["id", "n", "ok"]);
    assert_eq!(records[0][1].1, json!(1000.0));
    for (key, name) in [
        ("esc", "escaped key name"),
        ("nul\u{0}x", "nul"),
        ("nul", "nul prefix"),
        ("true", "bool"),
        ("1.50", "decimal"),
    ] {
        let found = find(&index, &set, Format::Jsonl, key);
        assert_eq!(found.len(), 1, "{key:?}");
        assert_eq!(found[0]["name"], json!(name), "{key:?}");
    }
    for key in ["1.5", "null", "{\"k\":\"a-1\"}", "1e3", ""] {
        assert!(find(&index, &set, Format::Jsonl, key).is_empty(), "{key:?}");
    }

    let fields = strings(&["name"]);
    let projected = index.lookup(&set.hash, Format::Jsonl, &set.schema, "a-1", Some(&fields), 10).expect("lookup");
    assert_eq!(
        projected.into_iter().map(Value::Object).collect::<Vec<_>>(),
        vec![json!({"name": "浙江省"}), json!({})]
    );
    let limited = index.lookup(&set.hash, Format::Jsonl, &set.schema, "a-1", None, 1).expect("lookup");
    assert_eq!(limited.len(), 1);
}

#[test]
fn json_key_scanner() {
    let line = br#"{"a": "}\"", "b": [1, "]", {"id": 0}], "c" : {"id": 1}, "id" : -1.5e3 }"#;
    assert_eq!(crate::format::jsonl::key_text(line, "id").expect("scan").as_deref(), Some("-1.5e3"));
    assert_eq!(crate::format::jsonl::key_text(line, "a").expect("scan").as_deref(), Some("}\""));
    assert_eq!(crate::format::jsonl::key_text(line, "b").expect("scan"), None);
    assert_eq!(crate::format::jsonl::key_text(line, "zz").expect("scan"), None);
    assert_eq!(crate::format::jsonl::key_text(b"{}", "id").expect("scan"), None);
    assert!(crate::format::jsonl::key_text(br#"{"id": 1, "id": 2}"#, "id").is_err());
    assert!(crate::format::jsonl::key_text(b"[1]", "id").is_err());
    assert!(crate::format::jsonl::key_text(br#"{"id": 1"#, "id").is_err());
}

#[test]
fn build_is_idempotent_and_resumes_after_a_crash() {
    let (dir, index) = setup();
    let data = "id,v\n1,a\n2,b\n1,c\n";
    let src = dir.path().join("d.csv");
    std::fs::write(&src, data).expect("write");
    let set = index.blobs.import(&src, Format::Csv, Some("id")).expect("import");
    let rows = || index.store.scan_prefix(Cf::KeyIndex, set.hash.as_bytes()).expect("scan").len();
    assert!(!index.is_built(&set.hash).expect("is_built"));
    let err = index.lookup(&set.hash, Format::Csv, &set.schema, "1", None, 10).expect_err("not built");
    assert!(matches!(err, Error::NotIndexed { .. }), "{err}");

    assert_eq!(index.build(&set.hash, Format::Csv, &set.schema, "id").expect("build"), 3);
    assert!(index.is_built(&set.hash).expect("is_built"));
    assert_eq!(rows(), 4, "three records and the marker");

    // A build that died before its marker: the next one writes the same rows again.
    let mut batch = Batch::default();
    batch.delete(Cf::KeyIndex, set.hash.as_bytes().to_vec());
    index.store.write(batch).expect("delete marker");
    assert!(!index.is_built(&set.hash).expect("is_built"));
    assert!(matches!(index.lookup(&set.hash, Format::Csv, &set.schema, "1", None, 10), Err(Error::NotIndexed { .. })));
    for _ in 0..2 {
        assert_eq!(index.build(&set.hash, Format::Csv, &set.schema, "id").expect("build"), 3);
        assert_eq!(rows(), 4);
    }
    assert_eq!(find(&index, &set, Format::Csv, "1").len(), 2);

    let err = index.build(&set.hash, Format::Csv, &set.schema, "v").expect_err("other key field");
    assert!(matches!(err, Error::IndexedDifferently { .. }), "{err}");
    assert!(err.to_string().contains("keyed by \"id\""), "{err}");
    assert!(matches!(index.build(&set.hash, Format::Csv, &set.schema, "nope"), Err(Error::UnknownKeyField { .. })));
    assert!(matches!(index.build(&set.hash, Format::Raw, &set.schema, "id"), Err(Error::Raw { .. })));
    let missing = Hash::of(b"never stored");
    assert!(matches!(index.build(&missing, Format::Csv, &set.schema, "id"), Err(Error::Blob { .. })));
}

#[test]
fn large_datasets_build_in_batches_and_look_up() {
    const RECORDS: u64 = 50_000;
    const KEYS: u64 = 20_000;
    let (dir, index) = setup();
    let mut csv_data = String::from("key,seq,text\n");
    let mut jsonl_data = String::new();
    for i in 0..RECORDS {
        let key = format!("K{}", i % KEYS);
        let text = match i % 3 {
            0 => format!("\"line one, {i}\nline \"\"two\"\"\""),
            1 => format!("plain text {i}"),
            _ => "浙江省".repeat(20),
        };
        csv_data.push_str(&format!("{key},{i},{text}\n"));
        jsonl_data.push_str(&format!(
            "{{\"key\": \"{key}\", \"seq\": {i}, \"pad\": \"{}\"}}\n",
            "x".repeat((i % 200) as usize)
        ));
    }
    for (format, data) in [(Format::Csv, csv_data), (Format::Jsonl, jsonl_data)] {
        let (set, count) = publish(dir.path(), &index, data.as_bytes(), format, "key");
        assert_eq!(count, RECORDS, "{format}");
        assert!(count as usize > 3 * BATCH_ROWS);
        for k in (0..KEYS).step_by(997).chain([KEYS - 1]) {
            let want: Vec<Value> = (k..RECORDS).step_by(KEYS as usize).map(|i| json!(i)).collect();
            let got: Vec<Value> = index
                .lookup(&set.hash, format, &set.schema, &format!("K{k}"), None, 10)
                .expect("lookup")
                .into_iter()
                .map(|r| r["seq"].clone())
                .collect();
            assert_eq!(got, want, "{format} K{k}");
        }
        assert!(find(&index, &set, format, &format!("K{KEYS}")).is_empty());
    }
}
