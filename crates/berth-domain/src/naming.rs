//! Candidate names for the name-collision auto-suffix (REFERENCE.md §3.5).
//!
//! Create retries with ` (2)` … ` (21)` appended when a sibling already holds the name. Unlike
//! the reference (bug 14), a suffixed name never exceeds the 255-byte name limit: the base is
//! shortened at a character boundary to make room for the suffix.

use crate::redact::truncate_utf8;
use crate::validation::NAME_MAX_BYTES;

/// Attempts in total: the base name plus 20 suffixed retries.
pub const NAME_ATTEMPTS: usize = 21;

/// The name to try on `attempt` (0-based): the base itself, then `"<base> (<attempt+1>)"`,
/// with the base cut at a UTF-8 boundary so that the result stays within 255 bytes.
pub fn name_candidate(base: &str, attempt: usize) -> String {
    if attempt == 0 {
        return base.to_owned();
    }
    let suffix = format!(" ({})", attempt + 1);
    let room = NAME_MAX_BYTES.saturating_sub(suffix.len());
    format!("{}{suffix}", truncate_utf8(base, room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(name_candidate("Alpha", 0), "Alpha");
        assert_eq!(name_candidate("Alpha", 1), "Alpha (2)");
        assert_eq!(name_candidate("Alpha", 9), "Alpha (10)");
        assert_eq!(name_candidate("Alpha", NAME_ATTEMPTS - 1), "Alpha (21)");
        assert_eq!(name_candidate("", 1), " (2)");
    }

    #[test]
    fn long_names_stay_within_limit() {
        let base = "a".repeat(255);
        assert_eq!(name_candidate(&base, 0), base);
        let two = name_candidate(&base, 1);
        assert_eq!(two.len(), 255);
        assert_eq!(two, format!("{} (2)", "a".repeat(251)));
        let ten = name_candidate(&base, 9);
        assert_eq!(ten.len(), 255);
        assert!(ten.ends_with("a (10)"));
        // 250 bytes + " (2)" fits untouched.
        let short = "b".repeat(250);
        assert_eq!(name_candidate(&short, 1), format!("{short} (2)"));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        // 85 three-byte characters = 255 bytes; 251 bytes of room cut mid-character.
        let base = "€".repeat(85);
        let name = name_candidate(&base, 1);
        assert!(name.len() <= 255);
        assert_eq!(name, format!("{} (2)", "€".repeat(83)));
        for attempt in 0..NAME_ATTEMPTS {
            assert!(name_candidate(&base, attempt).len() <= 255);
        }
    }
}
