//! Text shortening shared by error messages and terminal views.

/// `s` cut to at most `max` characters, the last one being `…` when anything was cut
/// (cuts between characters, never inside one).
///
/// ```
/// assert_eq!(smithers_core::text::truncate("héllo", 3), "hé…");
/// assert_eq!(smithers_core::text::truncate("hi", 2), "hi");
/// ```
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
            format!("{}…", &s[..end])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    fn check(s: &str, max: usize, expected: &str) {
        assert_eq!(truncate(s, max), expected, "truncate({s:?}, {max})");
    }

    #[test]
    fn truncate_keeps_short_text_and_cuts_long_text_on_char_boundaries() {
        check("hi", 5, "hi");
        check("hello", 5, "hello");
        check("héllo", 2, "h…");
        check("héllo wörld", 8, "héllo w…");
        check("ééé", 1, "…");
        check("abc", 0, "…");
        check("", 0, "");
    }
}
