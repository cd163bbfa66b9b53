//! Printing results: one JSON document with `--json`, readable text otherwise.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

/// Prints `value` as JSON when asked, or `text` otherwise.
pub fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        let t = text();
        if !t.is_empty() {
            println!("{}", t.trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}
