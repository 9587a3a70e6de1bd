//! Spelling help for error messages: edit distance, closest candidate, snake_case (by `heck`).

/// Levenshtein distance between two strings (by chars).
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo
/// (case-insensitive equality always counts).
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            let d = if c.to_ascii_lowercase() == lower {
                0
            } else {
                distance(&lower, &c.to_ascii_lowercase())
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `maxIterations` → `max_iterations`, `AnalysisReport` → `analysis_report`, `HTTPCall` →
/// `http_call`, `max-iterations` → `max_iterations`.
pub(crate) fn to_snake_case(s: &str) -> String {
    heck::ToSnakeCase::to_snake_case(s)
}

/// Whether `s` is a valid SQL identifier as smithers accepts them: `[A-Za-z_][A-Za-z0-9_]*`,
/// at most 64 characters.
pub(crate) fn is_sql_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_snake(input: &str, expected: &str) {
        assert_eq!(to_snake_case(input), expected, "to_snake_case({input:?})");
    }

    #[test]
    fn snake_case_splits_words_and_acronyms() {
        check_snake("maxIterations", "max_iterations");
        check_snake("AnalysisReport", "analysis_report");
        check_snake("HTTPCall", "http_call");
        check_snake("max-iterations", "max_iterations");
        check_snake("already_snake", "already_snake");
        check_snake("Review2Step", "review2_step");
        check_snake("ÉtatFinal", "état_final");
    }

    fn check_closest(word: &str, expected: Option<&str>) {
        let props = [
            "id",
            "output",
            "agent",
            "retries",
            "timeout",
            "skip_if",
            "max_iterations",
        ];
        assert_eq!(closest(word, props), expected, "closest({word:?})");
    }

    #[test]
    fn closest_finds_typos_and_ignores_unrelated_words() {
        check_closest("retires", Some("retries"));
        check_closest("max_iteration", Some("max_iterations"));
        check_closest("ID", Some("id"));
        check_closest("banana", None);
    }

    #[test]
    fn sql_identifiers_are_validated() {
        assert!(is_sql_identifier("analysis_report"));
        assert!(is_sql_identifier("_x9"));
        assert!(!is_sql_identifier("9x"));
        assert!(!is_sql_identifier("a-b"));
        assert!(!is_sql_identifier(""));
        assert!(!is_sql_identifier(&"a".repeat(65)));
    }
}
