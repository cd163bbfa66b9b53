//! The record-query index (node/src/keyindex.rs: `KeyIndex::build` at publish, `lookup` for
//! `deltafed query`), which re-parses single records with format::csv::record and
//! format::jsonl::key_text / record. Input: byte 0 bit 0 = csv / jsonl; byte 1 = the key field
//! (schema index, modulo its length); byte 2 = fields for a projected lookup (bit i keeps field
//! i); the rest is the dataset.
//!
//! For every dataset the importer accepts, the index builds; it counts exactly the records
//! whose key is present (non-empty text; for jsonl also a number or boolean); and looking up
//! each record's key (csv: every one; jsonl: string and boolean keys, which are found by their
//! text) returns exactly the records with that key, with their values (csv: typed by the schema),
//! and with a projection, exactly the kept fields.
#![no_main]

use deltafed_fuzz::node::{csv_records, jsonl_objects, scratch};
use deltafed_fuzz::{ALLOWANCE, bounded, outcome};
use deltafed_node::format::csv::typed;
use deltafed_node::keyindex::Error;
use deltafed_protocol::manifest::Format;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [how, which, mask, dataset @ ..] = data else {
        return;
    };
    let format = if how & 1 == 0 { Format::Csv } else { Format::Jsonl };
    bounded("key index", dataset.len(), ALLOWANCE, || {
        let mut s = scratch();
        let imported = s.import(dataset, format, None);
        outcome("import", &imported);
        let Ok(imported) = imported else {
            return;
        };
        if imported.schema.is_empty() {
            return;
        }
        let schema = imported.schema.clone();
        let column = usize::from(*which) % schema.len();
        let key_field = schema[column].name.clone();
        let hash = imported.hash;
        let index = s.index();
        let count = match index.build(&hash, format, &schema, &key_field) {
            Ok(count) => count,
            // The same bytes were indexed by another field earlier in this database.
            Err(Error::IndexedDifferently { .. }) => return,
            Err(e) => panic!("key index: cannot index an imported {format} dataset by {key_field:?}: {e}"),
        };

        // (key, the record as a lookup must answer it) for every record that has a key; and
        // whether the key can be looked up by the text the oracle knows.
        let mut expected: Vec<(String, Map<String, Value>, bool)> = Vec::new();
        match format {
            Format::Csv => {
                let records = csv_records(dataset);
                for r in &records[1..] {
                    let text = |i: usize| std::str::from_utf8(&r[i]).expect("imported, so utf-8");
                    if text(column).is_empty() {
                        continue;
                    }
                    let record =
                        schema.iter().enumerate().map(|(i, f)| (f.name.clone(), typed(text(i), f.ty))).collect();
                    expected.push((text(column).to_string(), record, true));
                }
            }
            Format::Jsonl => {
                for obj in jsonl_objects(dataset).expect("imported, so valid") {
                    let (key, findable) = match obj.get(&key_field) {
                        Some(Value::String(s)) if !s.is_empty() => (s.clone(), true),
                        Some(Value::Bool(b)) => (b.to_string(), true),
                        Some(Value::Number(n)) => (n.to_string(), false),
                        _ => continue,
                    };
                    expected.push((key, obj.to_map(), findable));
                }
            }
            Format::Raw => unreachable!(),
        }
        assert_eq!(
            count,
            expected.len() as u64,
            "key index: indexed {count} records by {key_field:?}, {} have a key",
            expected.len()
        );
        for (key, _, findable) in &expected {
            if !findable {
                continue;
            }
            let found = index
                .lookup(&hash, format, &schema, key, None, LIMIT)
                .unwrap_or_else(|e| panic!("key index: lookup of {key:?} failed: {e}"));
            let want: Vec<&Map<String, Value>> =
                expected.iter().filter(|(k, _, f)| *f && k == key).map(|(_, r, _)| r).collect();
            // A jsonl number is found by its text as written, which the oracle does not know:
            // leave records keyed by a number out of the comparison.
            let got: Vec<&Map<String, Value>> = found
                .iter()
                .filter(|r| format == Format::Csv || !matches!(r.get(&key_field), Some(Value::Number(_))))
                .collect();
            assert_eq!(got, want, "key index: lookup of {key:?} by {key_field:?}");
        }
        // A projected lookup answers exactly the kept fields (csv: all of them, null when
        // empty; jsonl: those the line has).
        let fields: Vec<String> = schema
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 8 && mask & (1 << i) != 0)
            .map(|(_, f)| f.name.clone())
            .collect();
        if let (false, Some((key, record, true))) = (fields.is_empty(), expected.first()) {
            let found = index
                .lookup(&hash, format, &schema, key, Some(&fields), LIMIT)
                .unwrap_or_else(|e| panic!("key index: projected lookup of {key:?} failed: {e}"));
            let first = found.first().expect("found without a projection");
            let want: Map<String, Value> =
                record.iter().filter(|(k, _)| fields.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(first, &want, "key index: projected lookup of {key:?} to {fields:?}");
        }
    });
});
