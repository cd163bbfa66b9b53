//! CSV import (`deltafed publish data.csv`, node/src/blobs.rs + format/csv.rs): the file is
//! copied into the blob store, checked and its schema inferred in one pass. Checked against an
//! independent reading of the documented rules: accepted exactly when it is a valid dataset,
//! stored byte for byte under its BLAKE3, with the header's names, the inferred types (and values
//! that `typed` turns into JSON of those types) and the record count. The first byte picks the
//! `--key-field` (a column by index, or a name that is not one).
#![no_main]

use deltafed_fuzz::node::{csv_column_type, csv_invalid, csv_records, scratch};
use deltafed_fuzz::{ALLOWANCE, bounded, outcome};
use deltafed_node::blobs::Error;
use deltafed_node::format::csv::typed;
use deltafed_protocol::Hash;
use deltafed_protocol::manifest::{FieldType, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, csv)) = data.split_first() else {
        return;
    };
    bounded("csv import", csv.len(), ALLOWANCE, || {
        let s = scratch();
        let imported = s.import(csv, Format::Csv, None);
        outcome("csv import", &imported);
        let records = csv_records(csv);
        let invalid = csv_invalid(&records);
        let imported = match (imported, invalid) {
            (Ok(i), None) => i,
            (Err(e), Some(_)) => {
                let _ = e.to_string();
                return;
            }
            (Ok(i), Some(why)) => panic!("csv import: accepted an invalid dataset ({why}): {i:?}"),
            (Err(e), None) => panic!("csv import: refused a valid dataset: {e}"),
        };
        assert_eq!(imported.hash, Hash::of(csv), "csv import: the hash is not BLAKE3 of the file");
        assert_eq!(imported.size, csv.len() as u64, "csv import: wrong size");
        let stored = std::fs::read(s.blobs().path_of(&imported.hash)).expect("the blob is stored");
        assert_eq!(stored, csv, "csv import: the blob is not the file");
        assert_eq!(imported.records, records.len() as u64 - 1, "csv import: wrong record count");
        let header: Vec<&str> = records[0].iter().map(|n| std::str::from_utf8(n).expect("checked")).collect();
        let names: Vec<&str> = imported.schema.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, header, "csv import: the schema does not name the header's columns");
        for (column, field) in imported.schema.iter().enumerate() {
            let values = records[1..].iter().map(|r| std::str::from_utf8(&r[column]).expect("checked"));
            let expected = csv_column_type(values.clone());
            assert_eq!(field.ty, expected, "csv import: column {:?} inferred as {:?}", field.name, field.ty);
            for value in values {
                let json = typed(value, field.ty);
                let agrees = match field.ty {
                    _ if value.is_empty() => json.is_null(),
                    FieldType::Integer => json.is_i64() || json.is_u64(),
                    FieldType::Number => json.is_number(),
                    FieldType::Boolean => json.is_boolean(),
                    FieldType::String => json.is_string(),
                };
                assert!(agrees, "csv import: {value:?} in a {:?} column is answered as {json}", field.ty);
            }
        }
        // The key field: any column is accepted, with the same result; a name that is not a
        // column is refused.
        let n = imported.schema.len();
        let pick = usize::from(selector) % (n + 1);
        if pick < n {
            let again = s.import(csv, Format::Csv, Some(&imported.schema[pick].name));
            assert_eq!(again.as_ref().ok(), Some(&imported), "csv import: keyed import differs: {again:?}");
        } else {
            let missing = format!("{}-not-a-column", header.join(""));
            match s.import(csv, Format::Csv, Some(&missing)) {
                Err(Error::UnknownKeyField { .. }) => {}
                other => panic!("csv import: an unknown key field gave {other:?}"),
            }
        }
    });
});
