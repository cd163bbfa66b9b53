//! `docs/config.md` from the `Config` type: its keys and their descriptions come from the
//! type's JSON Schema (the doc comments in node/src/config.rs), their defaults from
//! `Config::default()` as `save` writes it, the environment variables from
//! `config::ENVIRONMENT` and the flags from `run::FLAGS`. The test below keeps the committed file
//! current, like `commands_md_matches_the_command_tree` does for docs/commands.md.

use deltafed_node::Config;
use deltafed_node::config::ENVIRONMENT;
use serde_json::Value;

use super::{REGENERATE, cell};
use crate::run::FLAGS;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");

const INTRO: &str = "\
A node reads its settings from `DIR/deltafed.toml`, which `deltafed init` (and `testnet init`)
write with every key set to its default. Unknown keys are refused, so a misspelt key stops the
start instead of falling back to a default.

Precedence, lowest first: the built-in default, the file, the environment variable, the flag of
`deltafed run`. Only the keys an operator overrides per run or per container have a variable and
a flag; the others are set in the file. A list (`listen`) is given to its variable or flag
comma-separated.

Durations are written as `\"30s\"`, `\"15m\"`, `\"12h\"` or `\"5days\"`; sizes as a number of
bytes or with a binary unit (`\"64MiB\"`, `\"1GiB\"`); paths are relative to the data dir unless
absolute. Besides the keys below, `DELTAFED_DATA_DIR` names the data dir (`--data-dir`) and
`DELTAFED_LOG` (or `RUST_LOG`) sets the log filter, e.g. `info,deltafed_node=debug`.
[deploy/deltafed.toml.example](../deploy/deltafed.toml.example) is an annotated example.
";

/// One key of the file.
struct Key {
    /// As written in a section: `listen`.
    name: String,
    /// With its section: `gateway.listen`.
    path: String,
    default: Option<String>,
    description: String,
}

struct Section {
    /// `None` for the top level.
    name: Option<String>,
    description: String,
    keys: Vec<Key>,
}

/// A config with every optional key set, so that serializing it names every key in the order
/// the type declares them (a key missing here still appears, at the end of its section).
fn filled() -> Config {
    let mut c = Config { member: "example".parse().ok(), ..Config::default() };
    c.gateway.tls_cert = Some("cert.pem".into());
    c.gateway.tls_key = Some("key.pem".into());
    c
}

/// Keys in declaration order: (section, key), read from the TOML that `filled()` serializes to.
fn order() -> Vec<(Option<String>, String)> {
    let text = toml::to_string(&filled()).unwrap_or_default();
    let mut section = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
        } else if let Some((key, _)) = line.split_once(" = ") {
            out.push((section.clone(), key.trim().to_string()));
        }
    }
    out
}

/// The `$defs` entry a property refers to (directly or through `allOf`), if any.
fn referenced<'a>(schema: &'a Value, prop: &Value) -> Option<&'a Value> {
    let r = prop.get("$ref").or_else(|| prop.get("allOf").and_then(|a| a.get(0)).and_then(|a| a.get("$ref")))?;
    let name = r.as_str()?.strip_prefix("#/$defs/")?;
    schema.get("$defs")?.get(name)
}

fn description(v: &Value) -> String {
    v.get("description").and_then(Value::as_str).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn sections() -> Vec<Section> {
    let schema = Config::schema();
    let defaults: toml::Table =
        toml::to_string(&Config::default()).ok().and_then(|t| toml::from_str(&t).ok()).unwrap_or_default();
    let empty = serde_json::Map::new();
    let props = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let order = order();
    let mut top = Section { name: None, description: String::new(), keys: Vec::new() };
    let mut tables: Vec<Section> = Vec::new();
    // Sections in the order they are serialized, then any the serializer left out.
    let mut names: Vec<&String> = Vec::new();
    for name in order.iter().map(|(_, k)| k).chain(order.iter().filter_map(|(s, _)| s.as_ref())).chain(props.keys()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let position = |section: Option<&str>, key: &str| {
        order.iter().position(|(s, k)| s.as_deref() == section && k == key).unwrap_or(usize::MAX)
    };
    for name in names {
        let Some(prop) = props.get(name) else { continue };
        match referenced(&schema, prop).filter(|d| d.get("properties").is_some()) {
            Some(def) => {
                let table = defaults.get(name).and_then(toml::Value::as_table);
                let mut keys: Vec<Key> = def
                    .get("properties")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty)
                    .iter()
                    .map(|(k, v)| Key {
                        name: k.clone(),
                        path: format!("{name}.{k}"),
                        default: table.and_then(|t| t.get(k)).map(ToString::to_string),
                        description: description(v),
                    })
                    .collect();
                keys.sort_by_key(|k| position(Some(name), &k.name));
                let intro = description(def);
                tables.push(Section { name: Some(name.clone()), description: intro, keys });
            }
            None => top.keys.push(Key {
                name: name.clone(),
                path: name.clone(),
                default: defaults.get(name).map(ToString::to_string),
                description: description(prop),
            }),
        }
    }
    top.keys.sort_by_key(|k| position(None, &k.name));
    std::iter::once(top).chain(tables).collect()
}

fn render() -> String {
    let mut out = format!("<!-- Generated from node/src/config.rs by `{REGENERATE}`. Do not edit. -->\n\n");
    out.push_str("# Configuration reference\n\n");
    out.push_str(INTRO);
    for s in sections() {
        match &s.name {
            None => out.push_str("\n## Top level\n\n"),
            Some(n) => out.push_str(&format!("\n## `[{n}]`\n\n")),
        }
        if !s.description.is_empty() {
            out.push_str(&format!("{}\n\n", s.description));
        }
        out.push_str("| key | meaning | default | environment | flag |\n|---|---|---|---|---|\n");
        for k in &s.keys {
            let default = k.default.as_ref().map_or_else(|| "none".to_string(), |d| format!("`{d}`"));
            let env = ENVIRONMENT.iter().find(|(p, _)| *p == k.path).map_or("", |(_, v)| *v);
            let flag =
                FLAGS.iter().find(|(p, _)| *p == k.path).map_or(String::new(), |(_, f)| format!("`deltafed run {f}`"));
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                k.name,
                cell(&k.description),
                cell(&default),
                if env.is_empty() { String::new() } else { format!("`{env}`") },
                flag
            ));
        }
    }
    out
}

#[test]
fn config_md_matches_the_config_type() {
    let rendered = render();
    if std::env::var_os("DELTAFED_WRITE_DOCS").is_some() {
        std::fs::write(PATH, &rendered).expect("write docs/config.md");
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
            "docs/config.md does not match the Config type in node/src/config.rs (first difference at line {line}); \
             regenerate it with `{REGENERATE}` and commit it"
        );
    }
}

#[test]
fn every_key_has_a_description_and_every_variable_and_flag_a_key() {
    let sections = sections();
    let keys: Vec<&Key> = sections.iter().flat_map(|s| &s.keys).collect();
    assert!(keys.len() > 20, "{} keys", keys.len());
    for k in &keys {
        assert!(!k.description.is_empty(), "{} has no doc comment in node/src/config.rs", k.path);
    }
    for s in sections.iter().filter(|s| s.name.is_some()) {
        assert!(!s.description.is_empty(), "[{:?}] has no doc comment", s.name);
    }
    for (path, var) in ENVIRONMENT {
        assert!(keys.iter().any(|k| k.path == *path), "{var} names {path}, which is no key");
    }
    for (path, flag) in FLAGS {
        assert!(keys.iter().any(|k| k.path == *path), "{flag} names {path}, which is no key");
    }
    // Every key the file accepts is documented: the default config's keys, and the optional ones.
    let defaults: toml::Table = toml::from_str(&toml::to_string(&filled()).expect("serializes")).expect("parses");
    for (name, v) in &defaults {
        match v.as_table() {
            Some(t) => {
                for k in t.keys() {
                    let path = format!("{name}.{k}");
                    assert!(keys.iter().any(|x| x.path == path), "{path} is not documented");
                }
            }
            None => assert!(keys.iter().any(|x| &x.path == name), "{name} is not documented"),
        }
    }
    let rendered = render();
    assert!(rendered.contains("| `listen` |") && rendered.contains("`DELTAFED_METRICS_LISTEN`"), "{rendered}");
}
