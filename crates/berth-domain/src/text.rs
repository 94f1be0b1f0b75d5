//! The one rule for client text berth stores: no NUL character (U+0000).
//!
//! PostgreSQL refuses NUL in `TEXT` (`invalid byte sequence for encoding "UTF8": 0x00`) and in
//! `JSONB` (`unsupported Unicode escape sequence`), even as a query parameter, while SQLite
//! stores it. Rather than a store error (a 500 on PostgreSQL only) or a rule per route, berth
//! refuses a NUL anywhere in a request's text — every JSON string and object key of the body,
//! every query parameter — with a 400 that names the field, on both stores. The HTTP layer
//! applies [`find_nul`] to every JSON body and [`check_str`] to every query parameter before a
//! handler runs; the core applies the same functions to the JSON documents embedders hand it
//! directly (agent cards, bundles).

use serde_json::Value;
use thiserror::Error;

/// A text holds a NUL character; `field` says where (a JSON path such as `agent_card.name` or
/// `skills[0].tags[1]`, or a query parameter's name).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} must not contain NUL characters")]
pub struct NulCharacter {
    /// Where the NUL is; a NUL inside an object key is shown as `\u0000`.
    pub field: String,
}

/// Refuses `value` when it holds a NUL; `field` names it in the error.
pub fn check_str(field: &str, value: &str) -> Result<(), NulCharacter> {
    if value.contains('\0') || field.contains('\0') {
        return Err(NulCharacter {
            field: printable(field),
        });
    }
    Ok(())
}

/// The first string or object key of `value` (depth first, in document order) that holds a
/// NUL, as a path under `root` (`None`: the document itself is the root, and a NUL in the
/// root string is reported as `body`).
pub fn find_nul(root: Option<&str>, value: &Value) -> Option<NulCharacter> {
    let mut path = root.map(printable).unwrap_or_default();
    walk(value, &mut path).then(|| NulCharacter {
        field: if path.is_empty() {
            "body".to_owned()
        } else {
            path
        },
    })
}

/// Whether `v` holds a NUL; on `true`, `path` names the place.
fn walk(v: &Value, path: &mut String) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = walk(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Object(map) => map.iter().any(|(k, item)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&printable(k));
            let found = k.contains('\0') || walk(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// `s` with every NUL spelled `\u0000`, so that an error naming it can be read and logged.
fn printable(s: &str) -> String {
    s.replace('\0', "\\u0000")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(root: Option<&str>, v: Value) -> Option<String> {
        find_nul(root, &v).map(|e| e.field)
    }

    #[test]
    fn paths_name_the_first_nul() {
        assert_eq!(
            at(None, json!({"name": "a\u{0}b"})).as_deref(),
            Some("name")
        );
        assert_eq!(
            at(None, json!({"a": {"b": [1, "x", {"c": "\u{0}"}]}})).as_deref(),
            Some("a.b[2].c")
        );
        assert_eq!(
            at(
                Some("agent_card"),
                json!({"skills": [{"tags": ["ok", "\u{0}"]}]})
            )
            .as_deref(),
            Some("agent_card.skills[0].tags[1]")
        );
        assert_eq!(at(None, json!({"k\u{0}": 1})).as_deref(), Some("k\\u0000"));
        assert_eq!(at(None, json!("\u{0}")).as_deref(), Some("body"));
        assert_eq!(at(None, json!(["a", "\u{0}"])).as_deref(), Some("[1]"));
        assert_eq!(
            find_nul(None, &json!({"name": "a\u{0}"})).map(|e| e.to_string()),
            Some("name must not contain NUL characters".to_owned())
        );
    }

    #[test]
    fn documents_without_nul_pass() {
        assert_eq!(
            at(None, json!({"a": [1, true, null, "\\u0000", {"b": "c"}]})),
            None
        );
        assert_eq!(at(Some("x"), json!({})), None);
    }

    #[test]
    fn strings_and_names_are_checked() {
        assert_eq!(check_str("q", "fine"), Ok(()));
        assert_eq!(
            check_str("q", "a\u{0}").map_err(|e| e.field),
            Err("q".to_owned())
        );
        assert_eq!(
            check_str("q\u{0}", "fine").map_err(|e| e.field),
            Err("q\\u0000".to_owned())
        );
    }
}
