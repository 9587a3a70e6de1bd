//! Helpers for reading the agents' JSONL event streams and classifying their errors.
//!
//! Event kinds we do not know are skipped by the parsers (they stay in the transcript), so a CLI
//! that adds events in a later version never aborts a run.

use serde_json::Value;

/// Parses one stdout line as a JSON object; anything else (banners, blank lines) is `None`.
pub(crate) fn parse_line(line: &str) -> Option<Value> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    serde_json::from_str::<Value>(trimmed)
        .ok()
        .filter(Value::is_object)
}

/// The string at `key`, if it is one.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The unsigned integer at `key`, if it is one.
pub(crate) fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Adds two optional counters, keeping `None` only when both are.
pub(crate) fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

pub(crate) use smithers_core::text::truncate;

/// Whether an HTTP status is worth another attempt: timeouts, rate limits, overload, 5xx.
pub(crate) fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 425 | 429 | 500..=599)
}

/// Finds an HTTP status code mentioned in an error message: `"code":500`, `status 500`,
/// `API Error: 500`, `HTTP 429`.
pub(crate) fn http_status_in(text: &str) -> Option<u16> {
    const MARKERS: [&str; 6] = [
        "\"code\":",
        "\"status\":",
        "status ",
        "API Error: ",
        "HTTP ",
        "status code ",
    ];
    let lower = text.to_ascii_lowercase();
    MARKERS.iter().find_map(|marker| {
        let marker = marker.to_ascii_lowercase();
        lower.match_indices(&marker).find_map(|(i, m)| {
            let rest = lower[i + m.len()..].trim_start();
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits
                .parse::<u16>()
                .ok()
                .filter(|s| (400..600).contains(s) && digits.len() == 3)
        })
    })
}

/// Whether an error message says the credentials are missing or rejected.
pub(crate) fn looks_like_auth_error(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "not logged in",
        "unauthorized",
        "invalid api key",
        "invalid x-api-key",
        "incorrect api key",
        "authentication",
        "missing environment variable",
        "api key not valid",
        "permission_denied",
        "invalid auth method",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
        || matches!(http_status_in(text), Some(401 | 403))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_line_accepts_objects_only() {
        assert!(parse_line(r#"{"type":"x"}"#).is_some());
        assert!(parse_line("  {\"type\":\"x\"}\r").is_some());
        assert!(parse_line("Reading additional input from stdin...").is_none());
        assert!(parse_line("[1,2]").is_none());
        assert!(parse_line("{broken").is_none());
    }

    #[test]
    fn finds_http_status_in_messages() {
        let gemini = r#"[API Error: {"error":{"code":500,"message":"fake","status":"INTERNAL"}}]"#;
        assert_eq!(http_status_in(gemini), Some(500));
        assert_eq!(http_status_in("API Error: 529 overloaded"), Some(529));
        assert_eq!(
            http_status_in("Attempt 1 failed with status 429."),
            Some(429)
        );
        assert_eq!(http_status_in("Request timed out"), None);
        assert_eq!(http_status_in("status 2000"), None);
    }

    #[test]
    fn recognises_auth_errors() {
        assert!(looks_like_auth_error("Not logged in · Please run /login"));
        assert!(looks_like_auth_error(
            "Missing environment variable: `FAKE_OPENAI_API_KEY`."
        ));
        assert!(looks_like_auth_error("API Error: 401 {\"type\":\"error\"}"));
        assert!(!looks_like_auth_error(
            "API Error: 500 fake server injected 500"
        ));
    }
}
