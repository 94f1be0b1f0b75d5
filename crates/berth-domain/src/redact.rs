//! Preparing `initial_memories` for storage (REFERENCE.md §10.1): scope parsing, the content cap,
//! and redaction of secret-looking substrings so that seeds never carry credentials.

use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

/// Largest memory seed content kept, in bytes; longer content is truncated.
pub const MEMORY_CONTENT_CAP: usize = 100_000;

/// The scope of a seeded memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MemoryScope {
    /// Private to the workspace (the default).
    #[default]
    Local,
    /// Shared with the workspace's team.
    Team,
    /// Visible to every workspace.
    Global,
}

impl MemoryScope {
    /// Parses `LOCAL`, `TEAM` or `GLOBAL`, case-insensitively; empty means [`MemoryScope::Local`].
    /// Anything else is `None` (the entry is skipped).
    pub fn parse(s: &str) -> Option<MemoryScope> {
        if s.is_empty() || s.eq_ignore_ascii_case("local") {
            Some(Self::Local)
        } else if s.eq_ignore_ascii_case("team") {
            Some(Self::Team)
        } else if s.eq_ignore_ascii_case("global") {
            Some(Self::Global)
        } else {
            None
        }
    }

    /// The canonical upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "LOCAL",
            Self::Team => "TEAM",
            Self::Global => "GLOBAL",
        }
    }
}

/// The longest prefix of `s` that is at most `max_bytes` long and ends on a character boundary.
/// Unlike the reference's byte slice, this never splits a UTF-8 sequence.
pub fn truncate_utf8(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One redaction rule: what to find, and how to rewrite a match.
struct Rule {
    regex: Regex,
    replace: fn(&Captures<'_>) -> String,
}

fn compile(pattern: &str) -> Regex {
    // The patterns are constants covered by the tests below; failing here is a programming error.
    Regex::new(pattern).expect("built-in redaction pattern compiles")
}

/// Keeps the variable name, hides the value: `OPENAI_API_KEY=[REDACTED:API_KEY]`.
fn keep_name(caps: &Captures<'_>, label: &str) -> String {
    format!("{}[REDACTED:{label}]", &caps[1])
}

/// Applied in order: named assignments first so their values get the most specific label, the
/// broad base64 rule last.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        Rule {
            regex: compile(r"\b([A-Za-z0-9_]*_(?:API_KEY|api_key)\s*[=:]\s*)\S+"),
            replace: |c| keep_name(c, "API_KEY"),
        },
        Rule {
            regex: compile(r"\b([A-Za-z0-9_]*_(?:TOKEN|token)\s*[=:]\s*)\S+"),
            replace: |c| keep_name(c, "TOKEN"),
        },
        Rule {
            regex: compile(r"\b([A-Za-z0-9_]*_(?:SECRET|secret)\s*[=:]\s*)\S+"),
            replace: |c| keep_name(c, "SECRET"),
        },
        Rule {
            regex: compile(r"\b([Bb]earer\s+)[A-Za-z0-9._~+/=-]+"),
            replace: |c| keep_name(c, "BEARER"),
        },
        Rule {
            regex: compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
            replace: |_| "[REDACTED:SK_KEY]".to_owned(),
        },
        Rule {
            regex: compile(r"\bctx7_[A-Za-z0-9_-]+"),
            replace: |_| "[REDACTED:CTX7]".to_owned(),
        },
        Rule {
            regex: compile(r"[A-Za-z0-9+/_-]{33,}={0,2}"),
            replace: |c| {
                // Only runs that mix letters and digits look like encoded secrets; long plain
                // words and identifiers are left alone.
                let run = &c[0];
                let has_digit = run.bytes().any(|b| b.is_ascii_digit());
                let has_alpha = run.bytes().any(|b| b.is_ascii_alphabetic());
                if has_digit && has_alpha {
                    "[REDACTED:BASE64]".to_owned()
                } else {
                    run.to_owned()
                }
            },
        },
    ]
});

/// Replaces secret-looking substrings with `[REDACTED:<LABEL>]`: `*_API_KEY=…`, `*_TOKEN=…`,
/// `*_SECRET=…` (the variable name is kept), `Bearer …`, `sk-…` keys of 16+ characters,
/// `ctx7_…` keys, and base64-like runs of 33+ characters that mix letters and digits.
pub fn redact_secrets(text: &str) -> String {
    let mut out = text.to_owned();
    for rule in RULES.iter() {
        if rule.regex.is_match(&out) {
            out = rule.regex.replace_all(&out, rule.replace).into_owned();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parsing() {
        assert_eq!(MemoryScope::parse(""), Some(MemoryScope::Local));
        assert_eq!(MemoryScope::parse("LOCAL"), Some(MemoryScope::Local));
        assert_eq!(MemoryScope::parse("team"), Some(MemoryScope::Team));
        assert_eq!(MemoryScope::parse("Global"), Some(MemoryScope::Global));
        assert_eq!(MemoryScope::parse("private"), None);
        assert_eq!(MemoryScope::parse(" team"), None);
        assert_eq!(MemoryScope::Team.as_str(), "TEAM");
    }

    #[test]
    fn truncation_never_splits_characters() {
        assert_eq!(truncate_utf8("hello", 10), "hello");
        assert_eq!(truncate_utf8("hello", 5), "hello");
        assert_eq!(truncate_utf8("hello", 3), "hel");
        assert_eq!(truncate_utf8("hello", 0), "");
        // "é" is two bytes: cutting at 2 would split it.
        assert_eq!(truncate_utf8("aéb", 2), "a");
        assert_eq!(truncate_utf8("aéb", 3), "aé");
        // A four-byte character.
        assert_eq!(truncate_utf8("🦀🦀", 7), "🦀");
        let big = "x".repeat(MEMORY_CONTENT_CAP + 10);
        assert_eq!(
            truncate_utf8(&big, MEMORY_CONTENT_CAP).len(),
            MEMORY_CONTENT_CAP
        );
    }

    #[test]
    fn rules_compile() {
        assert_eq!(RULES.len(), 7);
    }

    #[test]
    fn named_assignments() {
        assert_eq!(
            redact_secrets("use OPENAI_API_KEY=abc123 now"),
            "use OPENAI_API_KEY=[REDACTED:API_KEY] now"
        );
        assert_eq!(
            redact_secrets("GITHUB_TOKEN=ghp_x and SLACK_BOT_TOKEN: xoxb-1"),
            "GITHUB_TOKEN=[REDACTED:TOKEN] and SLACK_BOT_TOKEN: [REDACTED:TOKEN]"
        );
        assert_eq!(
            redact_secrets("CLIENT_SECRET = s3cr3t"),
            "CLIENT_SECRET = [REDACTED:SECRET]"
        );
        assert_eq!(
            redact_secrets("my_api_key=lower"),
            "my_api_key=[REDACTED:API_KEY]"
        );
    }

    #[test]
    fn bearer_sk_ctx7() {
        assert_eq!(
            redact_secrets("Authorization: Bearer abc.def-ghi"),
            "Authorization: Bearer [REDACTED:BEARER]"
        );
        assert_eq!(
            redact_secrets("key sk-abcdefghijklmnop1234 end"),
            "key [REDACTED:SK_KEY] end"
        );
        assert_eq!(
            redact_secrets("key sk-ant-api03-abcdefghijkl end"),
            "key [REDACTED:SK_KEY] end"
        );
        // Fewer than 16 characters after `sk-` is not a key.
        assert_eq!(redact_secrets("sk-short"), "sk-short");
        // `sk-` inside a word is not a key prefix.
        assert_eq!(
            redact_secrets("task-abcdefghijklmnopq"),
            "task-abcdefghijklmnopq"
        );
        assert_eq!(redact_secrets("ctx7_abc123 here"), "[REDACTED:CTX7] here");
    }

    #[test]
    fn base64_runs() {
        let run = "QWxhZGRpbjpvcGVuIHNlc2FtZQ1234567890abc=";
        assert_eq!(
            redact_secrets(&format!("blob {run} end")),
            "blob [REDACTED:BASE64] end"
        );
        // 32 characters: below the threshold.
        let short = "a1".repeat(16);
        assert_eq!(redact_secrets(&short), short);
        // Letters only: a long word, not a secret.
        let word = "a".repeat(40);
        assert_eq!(redact_secrets(&word), word);
    }

    #[test]
    fn plain_text_is_untouched() {
        let text = "The deploy runs on Tuesdays; ask Bob about the staging token rotation.";
        assert_eq!(redact_secrets(text), text);
        assert_eq!(redact_secrets(""), "");
        assert_eq!(redact_secrets("naïve café ✓"), "naïve café ✓");
    }
}
