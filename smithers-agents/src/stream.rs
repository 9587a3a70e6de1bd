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

/// A one-line view of a tool's input for a progress line: the file, command, pattern or URL it
/// acts on, else its JSON, cut short.
pub(crate) fn tool_input(input: &Value) -> String {
    for key in [
        "file_path",
        "path",
        "command",
        "pattern",
        "url",
        "query",
        "description",
    ] {
        if let Some(v) = input.get(key).and_then(Value::as_str) {
            return truncate(v, 160);
        }
    }
    if input.is_null() {
        return String::new();
    }
    truncate(&input.to_string(), 160)
}

/// The first line of `text`, cut short, for a progress line.
pub(crate) fn first_line(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or_default();
    let more = text.trim().lines().nth(1).is_some();
    let mut out = truncate(line, 200);
    if more && !out.ends_with('…') {
        out.push_str(" …");
    }
    out
}

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

/// How long a rate-limit message asks to wait: `retry after 30s`, `try again in 20s`,
/// `"retryDelay": "17s"` (Google's RetryInfo), `retry-after: 5`, `reset in 1m30s`.
pub(crate) fn retry_after_in(text: &str) -> Option<std::time::Duration> {
    const MARKERS: [&str; 7] = [
        "retry after ",
        "retry-after: ",
        "retry-after:",
        "try again in ",
        "\"retrydelay\":\"",
        "\"retrydelay\": \"",
        "reset in ",
    ];
    let lower = text.to_ascii_lowercase();
    MARKERS.iter().find_map(|marker| {
        lower
            .match_indices(marker)
            .find_map(|(i, m)| parse_delay(&lower[i + m.len()..]))
    })
}

/// Parses a delay at the start of `s`: `30s`, `1.5s`, `250ms`, `2m`, `1m30s`, `30 seconds`, `5`.
fn parse_delay(s: &str) -> Option<std::time::Duration> {
    let mut total = 0.0f64;
    let mut rest = s.trim_start();
    let mut any = false;
    loop {
        let number: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let Ok(value) = number.parse::<f64>() else {
            break;
        };
        rest = rest[number.len()..].trim_start();
        let (scale, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with("min") {
            (
                60.0,
                rest.find(|c: char| !c.is_ascii_alphabetic())
                    .unwrap_or(rest.len()),
            )
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (
                3600.0,
                rest.find(|c: char| !c.is_ascii_alphabetic())
                    .unwrap_or(rest.len()),
            )
        } else if rest.starts_with('s') {
            (
                1.0,
                rest.find(|c: char| !c.is_ascii_alphabetic())
                    .unwrap_or(rest.len()),
            )
        } else {
            (1.0, 0)
        };
        total += value * scale;
        any = true;
        rest = &rest[unit_len..];
        if unit_len == 0 {
            break;
        }
    }
    (any && total.is_finite() && total > 0.0 && total < 86_400.0)
        .then(|| std::time::Duration::from_secs_f64(total))
}

/// `error` with the wait its message asks for, when it is a rate limit that says how long.
pub(crate) fn with_retry_after(error: smithers_core::TaskError) -> smithers_core::TaskError {
    match retry_after_in(&error.message) {
        Some(after) if error.retryable && error.retry_after.is_none() => {
            error.with_retry_after(after)
        }
        _ => error,
    }
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
    fn finds_the_wait_a_rate_limit_asks_for() {
        let check = |text: &str, secs: Option<f64>| {
            assert_eq!(
                retry_after_in(text).map(|d| d.as_secs_f64()),
                secs,
                "{text}"
            );
        };
        check("Rate limit reached. Please try again in 20s.", Some(20.0));
        check("rate limited; retry after 1.5s", Some(1.5));
        check(
            r#"{"error":{"code":429,"details":[{"retryDelay":"17s"}]}}"#,
            Some(17.0),
        );
        check("Try again in 1m30s", Some(90.0));
        check("try again in 250ms", Some(0.25));
        check("retry-after: 5", Some(5.0));
        check("API Error: 429 rate limited", None);
        check("try again in a moment", None);
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
