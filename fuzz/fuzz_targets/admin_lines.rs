//! Admin API request lines (node/src/admin/api.rs `Request`), as the server on `admin.sock`
//! reads them: one line of UTF-8, at most `MAX_REQUEST_LINE` bytes, parsed with serde_json.
//! An accepted request serializes to JSON that parses back to the same request.
#![no_main]

use deltafed_fuzz::{ALLOWANCE, bounded, outcome};
use deltafed_node::admin::api::{MAX_REQUEST_LINE, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bounded("admin request line", data.len(), ALLOWANCE, || {
        let end = data.iter().position(|&b| b == b'\n').map_or(data.len(), |i| i + 1).min(MAX_REQUEST_LINE);
        // The server reads with read_line, which refuses a line that is not UTF-8.
        let Ok(line) = std::str::from_utf8(&data[..end]) else {
            return;
        };
        let request = serde_json::from_str::<Request>(line);
        outcome("admin request", &request);
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                let _ = format!("malformed admin request: {e}");
                return;
            }
        };
        let json = serde_json::to_string(&request)
            .unwrap_or_else(|e| panic!("admin: an accepted request does not serialize: {e}\nline {line:?}"));
        let again: Request = serde_json::from_str(&json).unwrap_or_else(|e| {
            panic!("admin: an accepted request does not parse back from its own JSON: {e}\nline {line:?}\njson {json}")
        });
        let json_again = serde_json::to_string(&again).expect("serializes");
        assert_eq!(json, json_again, "admin: a JSON round trip changed the request (line {line:?})");
    });
});
