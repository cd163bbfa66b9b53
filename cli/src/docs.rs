//! `docs/commands.md` is generated from the clap command tree ([`crate::cli::Cli`]) by a small
//! walker over `clap::Command`, and the test here keeps the committed file current: it renders
//! the reference and fails when the file differs. Regenerate with [`REGENERATE`]; that run only
//! writes the file, and the next run without the variable compares it.

mod config;

use clap::{Arg, ArgAction, Command, CommandFactory};

use crate::cli::Cli;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/commands.md");
const REGENERATE: &str = "DELTAFED_WRITE_DOCS=1 cargo test -p deltafed --bin deltafed docs";

/// Commands that accept `--json` (it is global) but print nothing on stdout.
const NO_JSON: &[&str] = &["deltafed run"];

const INTRO: &str = "\
`deltafed` is the one binary of a deltafed node: it runs the node (`deltafed run`) and
administers it. This reference lists every command, argument and flag with the help text the
binary itself shows (`deltafed COMMAND --help`).

## Conventions

- `--data-dir DIR` (or the environment variable `DELTAFED_DATA_DIR`) names the node's data
  directory ([data-dir.md](data-dir.md)). It and `--json` are global: they may come before or
  after the command's own arguments. Every command needs a data dir except `roster new`,
  `roster show`, `testnet init` and `provenance verify --archive DIR --roster FILE` (sealed
  segments checked on their own).
- `init`, `roster ...`, `testnet init` and `run` work without a running node. `provenance verify`
  and `provenance export` work with or without one (without, they read `DIR/db` read-only);
  `provenance archive` needs it.
  Every other command asks the running node over its admin socket `DIR/admin.sock`; when no node
  answers there it says so and names `deltafed run --data-dir DIR`.
- `--json` prints exactly one JSON document on stdout (noted per command below). For the
  commands the node answers, the document is the `result` the node's admin API returns for the
  same request (`Request` in `node/src/admin/api.rs`; the result types are defined there and,
  for `provenance`, in `node/src/provenance/`). `init`, `roster ...` and `testnet init` print
  structs defined in `cli/src/init.rs`, `cli/src/roster.rs` and `cli/src/testnet.rs`.
- Errors are one sentence on stderr. Exit codes: 0 success, 1 failure (for `provenance verify`:
  the log is not intact), 2 bad usage.
- `--help` (`-h`) works on every command; `deltafed --version` (`-V`) prints the version.
- Times are RFC 3339 (`2026-12-31T00:00:00Z`) or a duration (`30d`, `12h`, `15m`); dataset
  references are `MEMBER/DATASET` or `MEMBER/DATASET@VERSION`; ids are 32 hex characters.
";

/// The whole of `docs/commands.md`.
fn render() -> String {
    let root = Cli::command();
    let mut out = String::new();
    out.push_str(&format!("<!-- Generated from cli/src/cli.rs by `{REGENERATE}`. Do not edit. -->\n\n"));
    out.push_str("# Command reference\n\n");
    out.push_str(INTRO);
    out.push_str("\n## Global options\n\n");
    out.push_str(&arg_table(root.get_arguments().filter(|a| a.is_global_set())));
    out.push_str("\n## Commands\n\n| command | what it does |\n|---|---|\n");
    let mut sections = Vec::new();
    walk(&root, "deltafed", &mut sections);
    for (path, cmd) in &sections {
        out.push_str(&format!("| [`{path}`](#{}) | {} |\n", anchor(path), cell(&md(&about(cmd)))));
    }
    for (path, cmd) in &sections {
        out.push('\n');
        out.push_str(section(path, cmd).trim_end());
        out.push('\n');
    }
    out
}

/// Every command below `cmd` (depth first, in declaration order) with its full name.
fn walk<'a>(cmd: &'a Command, path: &str, out: &mut Vec<(String, &'a Command)>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let p = format!("{path} {}", sub.get_name());
        out.push((p.clone(), sub));
        walk(sub, &p, out);
    }
}

/// The arguments a command documents itself (globals are listed once, at the top).
fn own_args(cmd: &Command) -> Vec<&Arg> {
    cmd.get_arguments().filter(|a| !a.is_global_set() && !a.is_hide_set()).collect()
}

fn section(path: &str, cmd: &Command) -> String {
    let mut s = format!("## `{path}`\n\n");
    let long = cmd.get_long_about().map(ToString::to_string).unwrap_or_else(|| about(cmd));
    if !long.is_empty() {
        s.push_str(&md(&long));
        s.push_str("\n\n");
    }
    let args = own_args(cmd);
    let subs: Vec<&Command> = cmd.get_subcommands().filter(|c| !c.is_hide_set()).collect();
    if !subs.is_empty() && cmd.is_subcommand_required_set() {
        s.push_str(&format!("```\n{path} <COMMAND>\n```\n\n"));
    } else {
        s.push_str(&format!("```\n{}\n```\n\n", usage(path, &args)));
    }
    if !subs.is_empty() {
        let names: Vec<String> = subs
            .iter()
            .map(|c| format!("[`{}`](#{})", c.get_name(), anchor(&format!("{path} {}", c.get_name()))))
            .collect();
        s.push_str(&format!("Subcommands: {}.\n\n", names.join(", ")));
    }
    if !args.is_empty() {
        s.push_str(&arg_table(args.into_iter()));
        s.push('\n');
    }
    if subs.is_empty() || !cmd.is_subcommand_required_set() {
        if NO_JSON.contains(&path) {
            s.push_str("`--json` is accepted and ignored: this command prints nothing on stdout.\n");
        } else {
            s.push_str("`--json`: prints the result as one JSON document.\n");
        }
    }
    s
}

/// `deltafed publish <FILE> --dataset <DATASET> [--format <FORMAT>]`: positionals first, then
/// required options, then optional ones in brackets.
fn usage(path: &str, args: &[&Arg]) -> String {
    let mut parts = vec![path.to_string()];
    let (positional, options): (Vec<&Arg>, Vec<&Arg>) = args.iter().partition(|a| a.is_positional());
    for a in positional {
        let v = syntax(a);
        parts.push(if a.is_required_set() { v } else { format!("[{v}]") });
    }
    let (required, optional): (Vec<&Arg>, Vec<&Arg>) = options.into_iter().partition(|a| a.is_required_set());
    for a in required {
        parts.push(syntax(a));
    }
    for a in optional {
        parts.push(format!("[{}]", syntax(a)));
    }
    parts.join(" ")
}

/// How an argument is written: `--member <ID=PUBKEY[@MULTIADDR]>...`, `<FILE>`, `--docker`.
fn syntax(a: &Arg) -> String {
    let values = value_names(a);
    let mut s = match a.get_long() {
        Some(long) if values.is_empty() => format!("--{long}"),
        Some(long) => format!("--{long} {values}"),
        None => values,
    };
    if matches!(a.get_action(), ArgAction::Append) && a.get_value_delimiter().is_none() {
        s.push_str("...");
    }
    s
}

fn value_names(a: &Arg) -> String {
    if !a.get_action().takes_values() {
        return String::new();
    }
    let names: Vec<String> = match a.get_value_names() {
        Some(names) => names.iter().map(|n| format!("<{n}>")).collect(),
        None => vec![format!("<{}>", a.get_id().as_str().to_uppercase())],
    };
    let mut s = names.join(" ");
    if let Some(d) = a.get_value_delimiter() {
        s = format!("{s}[{d}{s}...]");
    }
    s
}

fn arg_table<'a>(args: impl Iterator<Item = &'a Arg>) -> String {
    let mut s = String::from("| argument | meaning | default |\n|---|---|---|\n");
    for a in args {
        let mut name = format!("`{}`", syntax(a).replace('|', "\\|"));
        if let Some(short) = a.get_short() {
            name = format!("`-{short}`, {name}");
        }
        let mut meaning = help(a);
        let mut notes = Vec::new();
        if a.is_required_set() && !meaning.contains("required") {
            notes.push("required".to_string());
        }
        let possible: Vec<String> = if a.get_action().takes_values() && !a.is_hide_possible_values_set() {
            a.get_possible_values().iter().filter(|p| !p.is_hide_set()).map(|p| format!("`{}`", p.get_name())).collect()
        } else {
            Vec::new()
        };
        if !possible.is_empty() {
            notes.push(format!("one of {}", possible.join(", ")));
        }
        if !notes.is_empty() {
            meaning = if meaning.is_empty() { notes.join("; ") } else { format!("{meaning} ({})", notes.join("; ")) };
        }
        let mut default: Vec<String> = Vec::new();
        if !a.is_hide_default_value_set() {
            let values: Vec<String> =
                a.get_default_values().iter().map(|v| format!("`{}`", v.to_string_lossy())).collect();
            if values.len() == 1 && values[0] == "``" {
                default.push("empty".into());
            } else if !values.is_empty() {
                default.push(values.join(", "));
            }
        }
        if let Some(env) = a.get_env().filter(|_| !a.is_hide_env_set()) {
            default.push(format!("env `{}`", env.to_string_lossy()));
        }
        s.push_str(&format!("| {name} | {} | {} |\n", cell(&meaning), cell(&default.join("; "))));
    }
    s
}

fn about(cmd: &Command) -> String {
    cmd.get_about().map(ToString::to_string).unwrap_or_default()
}

fn help(a: &Arg) -> String {
    a.get_long_help().or_else(|| a.get_help()).map(|h| md(&h.to_string())).unwrap_or_default()
}

/// Help text as one line of markdown: `<` would open an HTML tag.
fn md(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").replace('<', "\\<")
}

/// Markdown inside a table cell, where `|` ends the cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// GitHub's anchor for a heading that is `path` in backticks.
fn anchor(path: &str) -> String {
    path.chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[test]
fn commands_md_matches_the_command_tree() {
    let rendered = render();
    if std::env::var_os("DELTAFED_WRITE_DOCS").is_some() {
        std::fs::write(PATH, &rendered).expect("write docs/commands.md");
        // Straight to stderr, past the test harness's capture of `eprintln!`.
        let note = format!("wrote {PATH}; run the tests again without DELTAFED_WRITE_DOCS to check it\n");
        std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes()).expect("write to stderr");
        return;
    }
    let committed = std::fs::read_to_string(PATH).unwrap_or_default();
    if committed != rendered {
        let line = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| committed.lines().count().min(rendered.lines().count()) + 1, |i| i + 1);
        panic!(
            "docs/commands.md does not match the command tree in cli/src (first difference at line {line}); \
             regenerate it with `{REGENERATE}` and commit it"
        );
    }
}

#[test]
fn every_command_and_argument_is_in_the_reference() {
    let rendered = render();
    let root = Cli::command();
    let mut sections = Vec::new();
    walk(&root, "deltafed", &mut sections);
    assert!(sections.len() > 20, "the walker found {} commands", sections.len());
    for (path, cmd) in &sections {
        assert!(rendered.contains(&format!("## `{path}`")), "{path} has no section");
        for a in own_args(cmd) {
            assert!(rendered.contains(&syntax(a)), "{path}: {} is missing", syntax(a));
        }
    }
}
