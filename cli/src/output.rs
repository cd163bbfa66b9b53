//! Printing results: one JSON document with `--json`, readable text otherwise.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

/// Prints `value` as JSON when asked, or `text` otherwise.
pub fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> Result<ExitCode> {
    let out = if json {
        serde_json::to_string_pretty(value)?
    } else {
        let t = text();
        if t.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        terminal_safe(t.trim_end())
    };
    print_line(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes one line to stdout. A reader that stopped reading (`deltafed status --json | head`)
/// is not an error of ours: the rest is dropped quietly, where `println!` would panic.
pub fn print_line(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Text for a terminal: titles, purposes and reasons come from other members, so control
/// characters (an ESC starting a terminal escape sequence, a carriage return overwriting a line)
/// are shown escaped, never sent raw. Line breaks and tabs of our own layout stay. `--json`
/// output is exact and not touched.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(terminal_safe("a\u{1b}[2Jb\rc"), "a\\u{1b}[2Jb\\rc");
        assert_eq!(terminal_safe("line\n\tnext 杭州"), "line\n\tnext 杭州");
        assert_eq!(terminal_safe("\u{9b}x"), "\\u{9b}x");
    }
}
