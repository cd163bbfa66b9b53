//! Projection to a grant's fields (`blobs::project_to`, `Blobs::project`; node/src/format/*),
//! what a provider serves under a grant with fields. Input: byte 0 = format (bit 0: csv / jsonl)
//! and how `fields` is written (bit 1: reversed, bit 2: a name repeated); byte 1 = which schema
//! fields to keep (bit i keeps field i; none kept keeps the first); byte 2 = the most bytes each
//! read of the input returns (0: as many as asked); the rest is the dataset.
//!
//! For a valid dataset: the projection succeeds, whatever the read sizes, the same streamed or
//! from the stored blob; it is itself a valid dataset with the same record count, exactly the
//! kept fields (csv: in the dataset's column order; jsonl: each line's kept keys in its order)
//! and the same values.
#![no_main]

use deltafed_fuzz::node::{csv_records, jsonl_objects, scratch};
use deltafed_fuzz::{ALLOWANCE, Trickle, bounded, outcome};
use deltafed_node::blobs::project_to;
use deltafed_protocol::Hash;
use deltafed_protocol::manifest::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [how, mask, step, dataset @ ..] = data else {
        return;
    };
    let format = if how & 1 == 0 { Format::Csv } else { Format::Jsonl };
    bounded("projection", dataset.len(), ALLOWANCE, || {
        let s = scratch();
        let original = s.import(dataset, format, None);
        outcome("import", &original);
        let Ok(original) = original else {
            return;
        };
        if original.schema.is_empty() {
            return; // jsonl of only empty objects: no field to project to
        }
        let mut keep: Vec<String> = original
            .schema
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 8 && mask & (1 << i) != 0)
            .map(|(_, f)| f.name.clone())
            .collect();
        if keep.is_empty() {
            keep.push(original.schema[0].name.clone());
        }
        let mut fields = keep.clone();
        if how & 2 != 0 {
            fields.reverse();
        }
        if how & 4 != 0 {
            fields.push(fields[0].clone());
        }

        let mut whole = Vec::new();
        if let Err(e) = project_to(format, dataset, &fields, &mut whole) {
            panic!("projection: a valid {format} dataset could not be projected to {fields:?}: {e}");
        }
        if deltafed_fuzz::verbose() {
            eprintln!("projection to {fields:?}:\n{}", String::from_utf8_lossy(&whole));
        }
        let mut trickled = Vec::new();
        let reader = Trickle { data: dataset, step: if *step == 0 { usize::MAX } else { usize::from(*step) } };
        project_to(format, reader, &fields, &mut trickled)
            .unwrap_or_else(|e| panic!("projection: fails when the input arrives {step} bytes at a time: {e}"));
        assert!(whole == trickled, "projection: the output depends on how the input is read ({step} bytes a time)");
        let stored = s.blobs().project(&original.hash, format, &fields).expect("the stored blob projects");
        let bytes = std::fs::read(stored.file.path()).expect("read the projection");
        assert!(bytes == whole, "projection: the stored blob's projection differs from the streamed one");
        assert_eq!(stored.hash, Hash::of(&whole), "projection: wrong hash");
        assert_eq!(stored.size, whole.len() as u64, "projection: wrong size");

        // A projection is a dataset of the same records, with the kept fields only.
        let projected = s
            .import(&whole, format, None)
            .unwrap_or_else(|e| panic!("projection: the projection of a valid dataset is not valid: {e}"));
        assert_eq!(
            projected.records, original.records,
            "projection: {} records became {} (fields {fields:?})",
            original.records, projected.records
        );
        let kept: Vec<_> = original.schema.iter().filter(|f| keep.contains(&f.name)).collect();
        let names: Vec<&str> = projected.schema.iter().map(|f| f.name.as_str()).collect();
        let want: Vec<&str> = kept.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, want, "projection: wrong fields");
        for (p, o) in projected.schema.iter().zip(&kept) {
            assert_eq!(p.ty, o.ty, "projection: field {:?} changed type", p.name);
        }
        match format {
            Format::Csv => {
                let before = csv_records(dataset);
                let after = csv_records(&whole);
                assert_eq!(before.len(), after.len(), "projection: csv record count");
                let columns: Vec<usize> =
                    (0..before[0].len()).filter(|&i| keep.iter().any(|k| k.as_bytes() == &before[0][i])).collect();
                for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                    let expected: Vec<&[u8]> = columns.iter().map(|&c| &b[c]).collect();
                    let got: Vec<&[u8]> = a.iter().collect();
                    assert_eq!(got, expected, "projection: csv record {i} changed");
                }
            }
            Format::Jsonl => {
                let before = jsonl_objects(dataset).expect("imported, so valid");
                let after = jsonl_objects(&whole).expect("imported, so valid");
                assert_eq!(before.len(), after.len(), "projection: jsonl record count");
                for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                    let expected: Vec<_> = b.0.iter().filter(|(k, _)| keep.contains(k)).cloned().collect();
                    assert_eq!(a.0, expected, "projection: jsonl record {i} changed");
                }
            }
            Format::Raw => unreachable!(),
        }
    });
});
