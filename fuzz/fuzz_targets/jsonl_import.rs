//! JSON Lines import (`deltafed publish data.jsonl`, node/src/blobs.rs + format/jsonl.rs),
//! checked against an independent reading of the documented rules: accepted exactly when every
//! non-blank line is a JSON object without a repeated key, stored byte for byte under its
//! BLAKE3, one record per object, keys in first-seen order with their narrowest types. The
//! first byte picks the `--key-field` (a key by index, or a name that is not one).
#![no_main]

use deltafed_fuzz::node::{jsonl_objects, jsonl_schema, scratch};
use deltafed_fuzz::{ALLOWANCE, bounded, outcome};
use deltafed_node::blobs::Error;
use deltafed_protocol::Hash;
use deltafed_protocol::manifest::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, jsonl)) = data.split_first() else {
        return;
    };
    bounded("jsonl import", jsonl.len(), ALLOWANCE, || {
        let s = scratch();
        let imported = s.import(jsonl, Format::Jsonl, None);
        outcome("jsonl import", &imported);
        let objects = jsonl_objects(jsonl);
        let (imported, objects) = match (imported, objects) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), Err(_)) => {
                let _ = e.to_string();
                return;
            }
            (Ok(i), Err(why)) => panic!("jsonl import: accepted an invalid dataset ({why}): {i:?}"),
            (Err(e), Ok(_)) => panic!("jsonl import: refused a valid dataset: {e}"),
        };
        assert_eq!(imported.hash, Hash::of(jsonl), "jsonl import: the hash is not BLAKE3 of the file");
        assert_eq!(imported.size, jsonl.len() as u64, "jsonl import: wrong size");
        let stored = std::fs::read(s.blobs().path_of(&imported.hash)).expect("the blob is stored");
        assert_eq!(stored, jsonl, "jsonl import: the blob is not the file");
        assert_eq!(imported.records, objects.len() as u64, "jsonl import: wrong record count");
        let schema: Vec<_> = imported.schema.iter().map(|f| (f.name.clone(), f.ty)).collect();
        assert_eq!(schema, jsonl_schema(&objects), "jsonl import: wrong schema");
        let n = imported.schema.len();
        let pick = usize::from(selector) % (n + 1);
        if pick < n {
            let again = s.import(jsonl, Format::Jsonl, Some(&imported.schema[pick].name));
            assert_eq!(again.as_ref().ok(), Some(&imported), "jsonl import: keyed import differs: {again:?}");
        } else {
            let missing = format!("{}-not-a-key", schema.iter().map(|(k, _)| k.as_str()).collect::<String>());
            match s.import(jsonl, Format::Jsonl, Some(&missing)) {
                Err(Error::UnknownKeyField { .. }) => {}
                other => panic!("jsonl import: an unknown key field gave {other:?}"),
            }
        }
    });
});
