//! Workspace template manifests (`config.yaml`, REFERENCE.md §4).
//!
//! berth parses the manifest as YAML (DECISIONS.md §2.13) instead of the reference's line
//! scanner, keeping its meaning: top-level `runtime`; the model from `runtime_config.model`, else
//! the legacy top-level `model`. Quotes and inline comments therefore no longer leak into values.
//! This module also renders the `config.yaml` generated when a workspace has no template (§4.3)
//! and aggregates per-runtime provision timeouts (§4.2).

use std::collections::HashMap;

use thiserror::Error;
use yaml_serde::{Mapping, Value};

use crate::runtime::KNOWN_RUNTIMES;

/// The runtime used when a label is unknown or empty.
const FALLBACK_RUNTIME: &str = "claude-code";

/// What the server reads from a template's `config.yaml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateManifest {
    /// Display name (`name`).
    pub name: Option<String>,
    /// Free-text description (`description`).
    pub description: Option<String>,
    /// Suggested tier (`tier`).
    pub tier: Option<i64>,
    /// Runtime label (`runtime`), trimmed; `None` when absent or blank.
    pub runtime: Option<String>,
    /// Default model: `runtime_config.model`, else top-level `model`; trimmed, `None` when blank.
    pub model: Option<String>,
    /// Environment variables the runtime needs (`runtime_config.required_env`).
    pub required_env: Vec<String>,
    /// Per-runtime provisioning deadline (`runtime_config.provision_timeout_seconds`), only
    /// when a positive integer.
    pub provision_timeout_seconds: Option<i64>,
}

/// Why a manifest could not be read.
#[derive(Debug, Error)]
pub enum TemplateError {
    /// The document is not valid YAML.
    #[error("invalid template yaml: {0}")]
    Yaml(#[from] yaml_serde::Error),
    /// The document's root is not a mapping.
    #[error("template manifest must be a mapping")]
    NotAMapping,
    /// A key that must hold a string holds something else.
    #[error("template key {0} must be a string")]
    NotAString(&'static str),
    /// `runtime_config` is present but not a mapping.
    #[error("template key runtime_config must be a mapping")]
    RuntimeConfigNotAMapping,
    /// `runtime_config.required_env` is not a list of strings.
    #[error("template key runtime_config.required_env must be a list of strings")]
    RequiredEnv,
    /// `runtime_config.provision_timeout_seconds` is past [`PROVISION_TIMEOUT_MAX_SECS`].
    #[error(
        "template key runtime_config.provision_timeout_seconds must be at most {PROVISION_TIMEOUT_MAX_SECS} (one week)"
    )]
    ProvisionTimeoutTooLarge,
}

/// Largest `runtime_config.provision_timeout_seconds` (one week). The deadline is added to the
/// clock when provisioning starts; an unbounded one overflowed it (a panic in the provisioning
/// task) for a value a template import could carry.
pub const PROVISION_TIMEOUT_MAX_SECS: i64 = 7 * 24 * 3600;

/// Reads an optional string key: absent or `null` is `None`; any other non-string is an error.
fn opt_string(
    map: &Mapping,
    key: &str,
    path: &'static str,
) -> Result<Option<String>, TemplateError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TemplateError::NotAString(path)),
    }
}

/// Like [`opt_string`], trimmed, with blank meaning `None`.
fn opt_trimmed(
    map: &Mapping,
    key: &str,
    path: &'static str,
) -> Result<Option<String>, TemplateError> {
    Ok(opt_string(map, key, path)?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty()))
}

/// Parses a template manifest. An empty document yields the default manifest; unknown keys are
/// ignored. `name`/`description` that are not strings are ignored, while a non-string `runtime`
/// or `model` is an error (it could only be a mistake).
pub fn parse_manifest(yaml: &str) -> Result<TemplateManifest, TemplateError> {
    let root: Value = yaml_serde::from_str(yaml)?;
    let map = match root {
        Value::Null => return Ok(TemplateManifest::default()),
        Value::Mapping(map) => map,
        _ => return Err(TemplateError::NotAMapping),
    };
    let runtime_config = match map.get("runtime_config") {
        None | Some(Value::Null) => None,
        Some(Value::Mapping(rc)) => Some(rc),
        Some(_) => return Err(TemplateError::RuntimeConfigNotAMapping),
    };

    let runtime = opt_trimmed(&map, "runtime", "runtime")?;
    let rc_model = match runtime_config {
        Some(rc) => opt_trimmed(rc, "model", "runtime_config.model")?,
        None => None,
    };
    let model = match rc_model {
        Some(model) => Some(model),
        None => opt_trimmed(&map, "model", "model")?,
    };
    let required_env = match runtime_config.and_then(|rc| rc.get("required_env")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(TemplateError::RequiredEnv)?,
        Some(_) => return Err(TemplateError::RequiredEnv),
    };
    let provision_timeout_seconds = runtime_config
        .and_then(|rc| rc.get("provision_timeout_seconds"))
        .and_then(|v| v.as_i64().or_else(|| v.as_u64().map(|_| i64::MAX)))
        .filter(|s| *s > 0);
    if provision_timeout_seconds.is_some_and(|s| s > PROVISION_TIMEOUT_MAX_SECS) {
        return Err(TemplateError::ProvisionTimeoutTooLarge);
    }

    Ok(TemplateManifest {
        name: map.get("name").and_then(Value::as_str).map(str::to_owned),
        description: map
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        tier: map.get("tier").and_then(Value::as_i64),
        runtime,
        model,
        required_env,
        provision_timeout_seconds,
    })
}

/// `runtime` if it is a known runtime, else `claude-code` (used for file paths and the
/// generated config).
pub fn sanitize_runtime(runtime: &str) -> &str {
    if KNOWN_RUNTIMES.contains(&runtime) {
        runtime
    } else {
        FALLBACK_RUNTIME
    }
}

/// Inputs of [`generated_default_config`].
#[derive(Debug, Clone, Copy)]
pub struct DefaultConfig<'a> {
    /// Workspace name (becomes `name`).
    pub name: &'a str,
    /// Workspace role (becomes `description`).
    pub role: &'a str,
    /// Resolved tier.
    pub tier: u8,
    /// Requested runtime; sanitised with [`sanitize_runtime`].
    pub runtime: &'a str,
    /// Resolved model.
    pub model: &'a str,
    /// The top-level `providers` value of the `claude-code-default` template, if any; copied
    /// into the generated config for claude-code only.
    pub claude_code_providers: Option<&'a Value>,
}

/// Renders `s` as a YAML double-quoted scalar, escaping what YAML requires (and line breaks of
/// every kind, so the value stays on one line).
fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Name and role go into the file on one line: `\n` becomes a space and `\r` is dropped (§4.3).
fn single_line(s: &str) -> String {
    s.replace('\n', " ").replace('\r', "")
}

/// The `providers:` block re-rendered as YAML, or `None` if it cannot be serialised.
fn providers_block(providers: &Value) -> Option<String> {
    let mut doc = Mapping::new();
    doc.insert(Value::String("providers".to_owned()), providers.clone());
    yaml_serde::to_string(&Value::Mapping(doc)).ok()
}

/// The `config.yaml` written for a workspace created without a template (§4.3):
/// `name`, `description`, `version: 1.0.0`, `tier`, the sanitised `runtime`, for claude-code the
/// default template's `providers`, the `model`, and a `runtime_config` with `timeout: 0` (and,
/// for claude-code, the model). For claude-code the model is trimmed and a `provider/` prefix
/// stripped. Strings are double-quoted so that any name or model yields valid YAML.
pub fn generated_default_config(cfg: &DefaultConfig<'_>) -> String {
    let runtime = sanitize_runtime(cfg.runtime);
    let is_claude_code = runtime == FALLBACK_RUNTIME;
    let model = if is_claude_code {
        let trimmed = cfg.model.trim();
        match trimmed.split_once('/') {
            Some((provider, rest)) if !provider.is_empty() && !rest.is_empty() => rest,
            _ => trimmed,
        }
    } else {
        cfg.model
    };
    let model = yaml_quote(model);

    let mut out = String::new();
    out.push_str(&format!("name: {}\n", yaml_quote(&single_line(cfg.name))));
    out.push_str(&format!(
        "description: {}\n",
        yaml_quote(&single_line(cfg.role))
    ));
    out.push_str("version: 1.0.0\n");
    out.push_str(&format!("tier: {}\n", cfg.tier));
    out.push_str(&format!("runtime: {runtime}\n"));
    if is_claude_code && let Some(block) = cfg.claude_code_providers.and_then(providers_block) {
        out.push_str(&block);
        if !block.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(&format!("model: {model}\n"));
    out.push_str("runtime_config:\n");
    if is_claude_code {
        out.push_str(&format!("  model: {model}\n"));
    }
    out.push_str("  timeout: 0\n");
    out
}

/// Per-runtime provisioning deadlines from all templates (§4.2): entries without a runtime or
/// without a positive timeout are ignored; when several templates share a runtime the largest
/// timeout wins. Keyed by the runtime label as written in the manifest.
pub fn provision_timeouts<'a>(
    manifests: impl IntoIterator<Item = &'a TemplateManifest>,
) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    for manifest in manifests {
        let (Some(runtime), Some(seconds)) =
            (&manifest.runtime, manifest.provision_timeout_seconds)
        else {
            continue;
        };
        if runtime.is_empty() || seconds <= 0 {
            continue;
        }
        out.entry(runtime.clone())
            .and_modify(|current| *current = (*current).max(seconds))
            .or_insert(seconds);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> TemplateManifest {
        parse_manifest(yaml).expect("manifest parses")
    }

    #[test]
    fn full_manifest() {
        let m = parse(
            r#"
name: Example Agent                 # display name
description: free text
version: 1.0.0
tier: 2
runtime: hermes                     # comment is not part of the value
runtime_config:
  model: provider/model-id
  models:
    - {id: provider/model-id, name: Example, required_env: [EXAMPLE_API_KEY]}
  required_env: [EXAMPLE_API_KEY, OTHER_KEY]
  providers: [openrouter, anthropic]
  provision_timeout_seconds: 1800
  timeout: 0
providers:
  - {name: openrouter, auth_mode: api_key}
skills: []
"#,
        );
        assert_eq!(
            m,
            TemplateManifest {
                name: Some("Example Agent".to_owned()),
                description: Some("free text".to_owned()),
                tier: Some(2),
                runtime: Some("hermes".to_owned()),
                model: Some("provider/model-id".to_owned()),
                required_env: vec!["EXAMPLE_API_KEY".to_owned(), "OTHER_KEY".to_owned()],
                provision_timeout_seconds: Some(1800),
            }
        );
    }

    #[test]
    fn provision_timeouts_are_bounded() {
        let yaml = |n: &str| format!("runtime_config:\n  provision_timeout_seconds: {n}\n");
        let week = PROVISION_TIMEOUT_MAX_SECS.to_string();
        assert_eq!(
            parse(&yaml(&week)).provision_timeout_seconds,
            Some(PROVISION_TIMEOUT_MAX_SECS)
        );
        for huge in ["604801", "9223372036854775807", "18446744073709551615"] {
            assert!(
                matches!(
                    parse_manifest(&yaml(huge)),
                    Err(TemplateError::ProvisionTimeoutTooLarge)
                ),
                "{huge}"
            );
        }
        // Not a positive integer: ignored, as before.
        for ignored in ["0", "-5", "1.5", "soon"] {
            assert_eq!(
                parse(&yaml(ignored)).provision_timeout_seconds,
                None,
                "{ignored}"
            );
        }
    }

    #[test]
    fn empty_documents() {
        assert_eq!(parse(""), TemplateManifest::default());
        assert_eq!(parse("# only a comment\n"), TemplateManifest::default());
        assert_eq!(parse("---\n"), TemplateManifest::default());
    }

    #[test]
    fn quotes_are_values_not_text() {
        let m = parse("runtime: \"codex\"\nmodel: 'gpt-5'\n");
        assert_eq!(m.runtime.as_deref(), Some("codex"));
        assert_eq!(m.model.as_deref(), Some("gpt-5"));
    }

    #[test]
    fn model_precedence_and_blanks() {
        let m = parse("model: legacy\nruntime_config:\n  model: nested\n");
        assert_eq!(m.model.as_deref(), Some("nested"));
        let m = parse("model: legacy\nruntime_config:\n  model: \"  \"\n");
        assert_eq!(m.model.as_deref(), Some("legacy"));
        let m = parse("model: '  legacy  '\nruntime_config:\n  timeout: 0\n");
        assert_eq!(m.model.as_deref(), Some("legacy"));
        let m = parse("model: \"\"\nruntime: \"  \"\n");
        assert_eq!(m.model, None);
        assert_eq!(m.runtime, None);
        // A blank line inside runtime_config does not end the block (unlike the line scanner).
        let m = parse("runtime_config:\n  timeout: 0\n\n  model: nested\n");
        assert_eq!(m.model.as_deref(), Some("nested"));
        let m = parse("runtime:\nruntime_config:\n");
        assert_eq!(m, TemplateManifest::default());
    }

    #[test]
    fn provision_timeout_must_be_positive_int() {
        let t = |s: &str| {
            parse(&format!(
                "runtime_config:\n  provision_timeout_seconds: {s}\n"
            ))
        };
        assert_eq!(t("600").provision_timeout_seconds, Some(600));
        assert_eq!(t("0").provision_timeout_seconds, None);
        assert_eq!(t("-5").provision_timeout_seconds, None);
        assert_eq!(t("\"600\"").provision_timeout_seconds, None);
        assert_eq!(t("1.5").provision_timeout_seconds, None);
    }

    #[test]
    fn errors() {
        let msg = |yaml: &str| match parse_manifest(yaml) {
            Ok(m) => format!("ok: {m:?}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(msg("- a\n- b\n"), "template manifest must be a mapping");
        assert_eq!(msg("just a string"), "template manifest must be a mapping");
        assert_eq!(
            msg("runtime: 42\n"),
            "template key runtime must be a string"
        );
        assert_eq!(
            msg("runtime: true\n"),
            "template key runtime must be a string"
        );
        assert_eq!(
            msg("runtime: [a]\n"),
            "template key runtime must be a string"
        );
        assert_eq!(
            msg("model: {a: b}\n"),
            "template key model must be a string"
        );
        assert_eq!(
            msg("runtime_config:\n  model: 3\n"),
            "template key runtime_config.model must be a string"
        );
        assert_eq!(
            msg("runtime_config: [1]\n"),
            "template key runtime_config must be a mapping"
        );
        assert_eq!(
            msg("runtime_config:\n  required_env: [A, 1]\n"),
            "template key runtime_config.required_env must be a list of strings"
        );
        assert_eq!(
            msg("runtime_config:\n  required_env: A\n"),
            "template key runtime_config.required_env must be a list of strings"
        );
        assert!(msg("runtime: [unclosed\n").starts_with("invalid template yaml: "));
    }

    #[test]
    fn non_string_name_and_unknown_keys_are_ignored() {
        let m = parse("name: 12\ndescription: [x]\ntier: two\nwhatever: {a: 1}\n");
        assert_eq!(m, TemplateManifest::default());
    }

    #[test]
    fn sanitize() {
        for rt in KNOWN_RUNTIMES {
            assert_eq!(sanitize_runtime(rt), *rt);
        }
        assert_eq!(sanitize_runtime(""), "claude-code");
        assert_eq!(sanitize_runtime("langgraph"), "claude-code");
        assert_eq!(sanitize_runtime("Hermes"), "claude-code");
        assert_eq!(sanitize_runtime("hermes"), "hermes");
    }

    fn cfg<'a>(name: &'a str, runtime: &'a str, model: &'a str) -> DefaultConfig<'a> {
        DefaultConfig {
            name,
            role: "does things",
            tier: 3,
            runtime,
            model,
            claude_code_providers: None,
        }
    }

    #[test]
    fn generated_config_for_hermes() {
        let out = generated_default_config(&cfg("Alpha", "hermes", "nous/hermes-3"));
        assert_eq!(
            out,
            "name: \"Alpha\"\n\
             description: \"does things\"\n\
             version: 1.0.0\n\
             tier: 3\n\
             runtime: hermes\n\
             model: \"nous/hermes-3\"\n\
             runtime_config:\n  timeout: 0\n"
        );
        let m = parse(&out);
        assert_eq!(m.runtime.as_deref(), Some("hermes"));
        assert_eq!(m.model.as_deref(), Some("nous/hermes-3"));
        assert_eq!(m.tier, Some(3));
    }

    #[test]
    fn generated_config_for_claude_code() {
        let out =
            generated_default_config(&cfg("Beta", "claude-code", "  anthropic/claude-opus  "));
        assert_eq!(
            out,
            "name: \"Beta\"\n\
             description: \"does things\"\n\
             version: 1.0.0\n\
             tier: 3\n\
             runtime: claude-code\n\
             model: \"claude-opus\"\n\
             runtime_config:\n  model: \"claude-opus\"\n  timeout: 0\n"
        );
        // Unknown runtimes are rendered as claude-code; a bare model is kept.
        let out = generated_default_config(&cfg("Beta", "langgraph", "sonnet"));
        let m = parse(&out);
        assert_eq!(m.runtime.as_deref(), Some("claude-code"));
        assert_eq!(m.model.as_deref(), Some("sonnet"));
        // Prefix stripping needs both sides.
        let out = generated_default_config(&cfg("Beta", "claude-code", "/opus"));
        assert_eq!(parse(&out).model.as_deref(), Some("/opus"));
        let out = generated_default_config(&cfg("Beta", "claude-code", "anthropic/"));
        assert_eq!(parse(&out).model.as_deref(), Some("anthropic/"));
        // Empty model renders as "".
        let out = generated_default_config(&cfg("Beta", "claude-code", ""));
        assert!(out.contains("model: \"\"\n"));
        assert_eq!(parse(&out).model, None);
    }

    #[test]
    fn generated_config_copies_providers_for_claude_code_only() {
        let providers: Value = yaml_serde::from_str(
            "- name: openrouter\n  model_prefixes: [openrouter/]\n  auth_env: [OPENROUTER_API_KEY]\n",
        )
        .expect("fixture parses");
        let mut c = cfg("Gamma", "claude-code", "sonnet");
        c.claude_code_providers = Some(&providers);
        let out = generated_default_config(&c);
        let doc: Value = yaml_serde::from_str(&out).expect("generated config parses");
        assert_eq!(doc.get("providers"), Some(&providers));
        assert_eq!(parse(&out).model.as_deref(), Some("sonnet"));

        let mut c = cfg("Gamma", "codex", "gpt-5");
        c.claude_code_providers = Some(&providers);
        let out = generated_default_config(&c);
        let doc: Value = yaml_serde::from_str(&out).expect("generated config parses");
        assert_eq!(doc.get("providers"), None);
    }

    #[test]
    fn generated_config_escapes_hostile_strings() {
        let name = "He said \"hi\" \\ o/: #not-a-comment\nnext\rline é \u{7}";
        let c = DefaultConfig {
            name,
            role: "role: with 'quotes'\n- and a list",
            tier: 1,
            runtime: "openclaw",
            model: "a\"b\\c: #d",
            claude_code_providers: None,
        };
        let out = generated_default_config(&c);
        let m = parse(&out);
        assert_eq!(
            m.name.as_deref(),
            Some("He said \"hi\" \\ o/: #not-a-comment nextline é \u{7}")
        );
        assert_eq!(
            m.description.as_deref(),
            Some("role: with 'quotes' - and a list")
        );
        assert_eq!(m.runtime.as_deref(), Some("openclaw"));
        assert_eq!(m.model.as_deref(), Some("a\"b\\c: #d"));
        assert_eq!(m.tier, Some(1));
        assert_eq!(out.lines().count(), 8);
    }

    #[test]
    fn timeouts_take_the_maximum() {
        let m = |runtime: Option<&str>, secs: Option<i64>| TemplateManifest {
            runtime: runtime.map(str::to_owned),
            provision_timeout_seconds: secs,
            ..TemplateManifest::default()
        };
        let manifests = [
            m(Some("hermes"), Some(600)),
            m(Some("hermes"), Some(1800)),
            m(Some("hermes"), Some(900)),
            m(Some("codex"), Some(300)),
            m(Some("codex"), Some(-1)),
            m(Some(""), Some(100)),
            m(None, Some(100)),
            m(Some("openclaw"), None),
            m(Some("kimi"), Some(0)),
        ];
        let got = provision_timeouts(&manifests);
        let want: HashMap<String, i64> =
            [("hermes".to_owned(), 1800), ("codex".to_owned(), 300)].into();
        assert_eq!(got, want);
        assert!(provision_timeouts(&[]).is_empty());
    }
}
