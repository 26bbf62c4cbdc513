//! Reading the configuration file strictly: every unknown key is refused, and every error names
//! its key (`providers.kms.timeout`) and its line, so that an operator's typo or a wrong type is
//! found at the first command and not when a KMS fails over months later.
//!
//! The top level is read by serde with `deny_unknown_fields`; each provider's table is then read
//! on its own for its `type`, through `serde_path_to_error`, which tells which key a bad value
//! sits under (serde's internally tagged enums lose that).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{KmipConfig, ProviderConfig};

/// A configuration file's contents.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub default: Option<String>,
    pub audit_log: Option<String>,
    pub providers: Vec<(String, ProviderConfig)>,
}

/// What is wrong with a file, and where.
#[derive(Debug)]
pub(crate) struct ParseError {
    pub line: Option<usize>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    audit_log: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, toml::Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeForm {
    keystore: PathBuf,
}

/// Parses a configuration file's text.
pub(crate) fn parse(text: &str) -> Result<Parsed, ParseError> {
    let top: TopLevel = toml::from_str(text).map_err(|e| ParseError {
        line: e.span().map(|s| line_of(text, s.start)),
        reason: e.message().trim_end().to_string(),
    })?;
    if top.audit_log.as_deref() == Some("") {
        return Err(ParseError {
            line: key_line(text, 0, "audit_log"),
            reason: "audit_log must name a file, or be \"journald\"".into(),
        });
    }
    let mut providers = Vec::new();
    for (name, table) in top.providers {
        let start = table.span().start;
        let p = provider(&name, table.into_inner()).map_err(|(key, reason)| ParseError {
            // `servers[1]`, `a.b`: the line of the key the path starts with.
            line: key
                .as_deref()
                .and_then(|k| k.split(['[', '.']).next())
                .and_then(|k| key_line(text, start, k))
                .or(Some(line_of(text, start))),
            reason,
        })?;
        providers.push((name, p));
    }
    Ok(Parsed {
        default: top.default,
        audit_log: top.audit_log,
        providers,
    })
}

/// One provider's table: its `type`, then the keys of that type. The error is the key at
/// fault (when one is) and the reason, which names it in full.
fn provider(
    name: &str,
    mut table: toml::Table,
) -> Result<ProviderConfig, (Option<String>, String)> {
    let kind = match table.remove("type") {
        Some(toml::Value::String(s)) => s,
        Some(other) => {
            return Err((
                Some("type".into()),
                format!(
                    "providers.{name}.type must be \"native\" or \"kmip\", not {}",
                    other.type_str()
                ),
            ));
        }
        None => {
            return Err((
                None,
                format!("providers.{name} has no type: add type = \"native\" or type = \"kmip\""),
            ));
        }
    };
    let value = toml::Value::Table(table);
    let named = |e: serde_path_to_error::Error<toml::de::Error>| {
        // toml adds "in `key`" on a line of its own: the path below says it in full.
        let inner = e.inner().to_string();
        let inner = inner.lines().next().unwrap_or_default().trim_end();
        // An unknown key is reported at its table; its name is in the message.
        let key = match e.path().to_string().as_str() {
            "." => between_backticks(inner),
            p => Some(p.to_string()),
        };
        let at = key
            .as_deref()
            .map(|k| format!("providers.{name}.{k}"))
            .unwrap_or_else(|| format!("providers.{name}"));
        (key, format!("{at}: {inner}"))
    };
    match kind.as_str() {
        "native" => {
            let f: NativeForm = serde_path_to_error::deserialize(value).map_err(named)?;
            if f.keystore.as_os_str().is_empty() {
                return Err((
                    Some("keystore".into()),
                    format!("providers.{name}.keystore must name a file"),
                ));
            }
            Ok(ProviderConfig::Native {
                keystore: f.keystore,
            })
        }
        "kmip" => {
            let k: KmipConfig = serde_path_to_error::deserialize(value).map_err(named)?;
            k.check(name).map_err(|reason| {
                let key = reason
                    .strip_prefix(&format!("providers.{name}."))
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_string);
                (key, reason)
            })?;
            Ok(ProviderConfig::Kmip(k))
        }
        other => Err((
            Some("type".into()),
            format!(
                "providers.{name}.type: unknown provider type {other:?}: expected \"native\" or \"kmip\""
            ),
        )),
    }
}

fn between_backticks(s: &str) -> Option<String> {
    let (_, rest) = s.split_once('`')?;
    let (k, _) = rest.split_once('`')?;
    Some(k.to_string())
}

/// The 1-based line of byte `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The line, at or after byte `from` and before the next table header, where `key = ` is
/// set; None for a key not written on a line of its own (an inline table, say).
fn key_line(text: &str, from: usize, key: &str) -> Option<usize> {
    let from = from.min(text.len());
    let first = line_of(text, from);
    for (i, line) in text[from..].lines().enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with('[') {
            return None;
        }
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(first + i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const KMIP: &str = "[providers.k]\ntype = \"kmip\"\nservers = [\"a:5696\"]\nca = \"c\"\ncert = \"c\"\nkey = \"k\"\n";

    fn err(text: &str) -> ParseError {
        parse(text).expect_err(text)
    }

    #[test]
    fn a_bad_value_names_its_key_and_line() {
        let e = err(&format!("{KMIP}timeout = \"sixty\"\n"));
        assert_eq!(e.line, Some(7), "{}", e.reason);
        assert!(
            e.reason.starts_with("providers.k.timeout: "),
            "{}",
            e.reason
        );
        assert!(e.reason.contains("sixty"), "{}", e.reason);
        let e = err(&format!("{KMIP}reuse_connections = 3\n"));
        assert!(
            e.reason.starts_with("providers.k.reuse_connections: "),
            "{}",
            e.reason
        );
        let e = err(&KMIP.replace("servers = [\"a:5696\"]", "servers = [5696]"));
        assert!(e.reason.starts_with("providers.k.servers"), "{}", e.reason);
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn an_unknown_key_names_itself_and_its_line() {
        let e = err(&format!("{KMIP}\ntimout = 5\n"));
        assert_eq!(e.line, Some(8), "{}", e.reason);
        assert!(e.reason.contains("providers.k.timout"), "{}", e.reason);
        let e = err("defualt = \"x\"\n");
        assert_eq!(e.line, Some(1));
        assert!(e.reason.contains("defualt"), "{}", e.reason);
        let e = err("[providers.n]\ntype = \"native\"\nkeystore = \"x\"\nkeystor = \"y\"\n");
        assert_eq!(e.line, Some(4), "{}", e.reason);
        assert!(e.reason.contains("providers.n.keystor"), "{}", e.reason);
    }

    #[test]
    fn types_and_checks() {
        let e = err("[providers.n]\nkeystore = \"x\"\n");
        assert!(e.reason.contains("has no type"), "{}", e.reason);
        let e = err("[providers.n]\ntype = \"vault\"\n");
        assert!(e.reason.contains("\"vault\""), "{}", e.reason);
        assert_eq!(e.line, Some(2));
        let e = err("[providers.n]\ntype = 3\n");
        assert!(e.reason.contains("not integer"), "{}", e.reason);
        let e = err("audit_log = \"\"\n");
        assert!(e.reason.contains("audit_log"), "{}", e.reason);
        let e = err("audit_log = 3\n");
        assert!(
            e.reason.contains("audit_log") || e.reason.contains("string"),
            "{}",
            e.reason
        );
        let e = err(&format!("{KMIP}timeout = 0\n"));
        assert!(e.reason.contains("positive"), "{}", e.reason);
        assert_eq!(e.line, Some(7), "{}", e.reason);
        let e = err("[providers.n]\ntype = \"native\"\nkeystore = \"\"\n");
        assert!(e.reason.contains("must name a file"), "{}", e.reason);
    }

    #[test]
    fn a_good_file_parses() {
        let p = parse(&format!(
            "default = \"k\"\naudit_log = \"journald\"\n{KMIP}timeout = 9\n[providers.n]\ntype = \"native\"\nkeystore = \"n.ks\"\n"
        ))
        .expect("parses");
        assert_eq!(p.default.as_deref(), Some("k"));
        assert_eq!(p.audit_log.as_deref(), Some("journald"));
        assert_eq!(p.providers.len(), 2);
        match &p.providers[0] {
            (n, ProviderConfig::Kmip(k)) => assert_eq!((n.as_str(), k.timeout), ("k", 9)),
            other => panic!("{other:?}"),
        }
    }
}
