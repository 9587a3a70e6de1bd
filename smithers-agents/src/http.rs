//! What the HTTP agents share: API keys from the environment, and one POST with bounded retries
//! and backoff on 429/5xx that honours `retry-after`, under the attempt's timeout and
//! cancellation. The reply is read either as one JSON body or, when streaming, as server-sent
//! events folded back into the same JSON shape, with an idle timeout between chunks so that a
//! stalled stream fails (and is retried) long before the request timeout.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;
use smithers_core::{AgentError, AgentRequest, TaskError};
use tokio::time::Instant;

use crate::stream::{status_is_retryable, truncate};

/// Retry and timeout settings of an HTTP agent.
#[derive(Clone, Debug)]
pub(crate) struct HttpOptions {
    pub(crate) base_url: Option<String>,
    pub(crate) api_key: Option<String>,
    pub(crate) api_key_env: String,
    pub(crate) require_api_key: bool,
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) stream: bool,
    pub(crate) stream_idle_timeout: Duration,
    pub(crate) client: OnceLockClient,
}

impl HttpOptions {
    pub(crate) fn new(api_key_env: &str) -> Self {
        HttpOptions {
            base_url: None,
            api_key: None,
            api_key_env: api_key_env.to_owned(),
            require_api_key: true,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
            stream: false,
            stream_idle_timeout: Duration::from_secs(300),
            client: OnceLockClient::default(),
        }
    }

    /// The API key: set explicitly, or read from the environment variable now.
    pub(crate) fn api_key(&self, provider: &str) -> Result<Option<String>, AgentError> {
        if let Some(key) = &self.api_key {
            return Ok(Some(key.clone()));
        }
        match std::env::var(&self.api_key_env) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key)),
            _ if !self.require_api_key => Ok(None),
            _ => Err(AgentError::terminal(format!(
                "no {provider} API key: set the environment variable {} (or pass `.api_key(..)`)",
                self.api_key_env
            ))),
        }
    }

    /// The base URL: set explicitly, else from `env_var`, else `default`; without a trailing `/`.
    pub(crate) fn base_url(&self, env_var: &str, default: &str) -> String {
        let url = self
            .base_url
            .clone()
            .or_else(|| std::env::var(env_var).ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| default.to_owned());
        url.trim_end_matches('/').to_owned()
    }
}

/// Implements the builder methods backed by [`HttpOptions`] on an agent with an `http` field.
macro_rules! http_builder_methods {
    ($key_env:literal, $url_env:literal) => {
        #[doc = concat!("The base URL (default: `", $url_env, "` if set, else the provider's).")]
        pub fn base_url(mut self, url: impl Into<String>) -> Self {
            self.http.base_url = Some(url.into());
            self
        }

        /// The API key itself, instead of reading it from the environment.
        pub fn api_key(mut self, key: impl Into<String>) -> Self {
            self.http.api_key = Some(key.into());
            self
        }

        #[doc = concat!("The environment variable holding the API key (default `", $key_env, "`).")]
        pub fn api_key_env(mut self, var: impl Into<String>) -> Self {
            self.http.api_key_env = var.into();
            self
        }

        /// Attempts per call, counting the first (default 4): 429, 5xx, timeouts, connection
        /// errors and unparsable replies are retried.
        pub fn max_attempts(mut self, attempts: u32) -> Self {
            self.http.max_attempts = attempts;
            self
        }

        /// The first retry delay and the cap (default 500 ms and 30 s); the delay doubles per
        /// retry unless the server sends `retry-after`.
        pub fn backoff(mut self, initial: std::time::Duration, max: std::time::Duration) -> Self {
            self.http.initial_backoff = initial;
            self.http.max_backoff = max;
            self
        }

        /// Limit of one HTTP request (default 10 minutes); the task's `timeout` bounds the
        /// whole call, retries included.
        pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.http.request_timeout = timeout;
            self
        }

        /// Stream the reply as server-sent events (default off). Text arrives as it is
        /// generated (and goes to the progress sink line by line), and a stream that goes
        /// silent for [`stream_idle_timeout`](Self::stream_idle_timeout) fails as a retryable
        /// timeout and is retried, instead of waiting for the whole request timeout.
        pub fn stream(mut self, enabled: bool) -> Self {
            self.http.stream = enabled;
            self
        }

        /// With [`stream`](Self::stream): the longest silence between two chunks of the stream
        /// (default 5 minutes, like Codex's `stream_idle_timeout_ms`; reasoning models can think
        /// for minutes without sending text).
        pub fn stream_idle_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.http.stream_idle_timeout = timeout;
            self
        }
    };
}
pub(crate) use http_builder_methods;

/// A reqwest client built on first use (building one can fail; `Client::new` would panic).
#[derive(Clone, Debug, Default)]
pub(crate) struct OnceLockClient(std::sync::Arc<OnceLock<Result<reqwest::Client, String>>>);

impl OnceLockClient {
    fn get(&self) -> Result<&reqwest::Client, AgentError> {
        let built = self.0.get_or_init(|| {
            // reqwest is built without its aws-lc-rs provider (a large C build); it takes the
            // process-wide rustls provider, so install ring's unless the program chose one.
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                // An `Err` means another thread installed one meanwhile: that one is used.
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            reqwest::Client::builder()
                .build()
                .map_err(|e| e.to_string())
        });
        built
            .as_ref()
            .map_err(|e| AgentError::terminal(format!("cannot build an HTTP client: {e}")))
    }
}

/// Turns a stream of server-sent events back into the JSON reply the non-streaming API gives.
pub(crate) trait SseFold: Send {
    /// Takes one event (`name` is its `event:` field, else the data's `type`, else empty; the
    /// data is `Value::Null` for OpenAI's `[DONE]`). Returns the text it adds, for the progress
    /// sink; `Err` (an error event, a malformed event) fails the attempt, which is retried.
    fn event(&mut self, name: &str, data: &Value) -> Result<Option<String>, String>;

    /// The reply, or `Err` when the stream ended before its final event (retried).
    fn finish(self: Box<Self>) -> Result<Value, String>;
}

/// How to read a 2xx reply.
pub(crate) enum Wire {
    /// One JSON body.
    Json,
    /// Server-sent events, folded by a fresh folder for each attempt.
    Sse(fn() -> Box<dyn SseFold>),
}

/// What one attempt came to, short of a final answer.
enum Failed {
    /// Worth another attempt, after `retry-after` if the server sent one.
    Retry(String, Option<Duration>),
    /// Not worth another attempt.
    Terminal(AgentError),
}

/// One logical call: POSTs `body` to `url` until it gets a 2xx reply that reads as `wire` says,
/// retrying 429, 5xx, timeouts, stalled streams, connection errors and unparsable replies up to
/// `max_attempts` times.
pub(crate) async fn post(
    provider: &str,
    options: &HttpOptions,
    url: &str,
    headers: HeaderMap,
    body: &Value,
    request: &AgentRequest,
    wire: &Wire,
) -> Result<Value, AgentError> {
    let client = options.client.get()?;
    let deadline = request.timeout.map(|t| Instant::now() + t);
    let attempts = options.max_attempts.max(1);
    let mut last_error = String::new();
    let mut last_retry_after = None;
    for attempt in 1..=attempts {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            return Err(timed_out(provider, request, &last_error));
        }
        let timeout = remaining.map_or(options.request_timeout, |r| r.min(options.request_timeout));
        request.progress.line(
            "http",
            &format!("POST {url} (attempt {attempt} of {attempts})"),
        );
        let send = attempt_once(
            provider, options, client, url, &headers, body, request, wire, timeout,
        );
        let outcome = tokio::select! {
            outcome = send => outcome,
            _ = request.cancel.cancelled() => {
                return Err(AgentError::retryable(format!("{provider} request was cancelled")));
            }
        };
        let retry_after = match outcome {
            Ok(value) => return Ok(value),
            Err(Failed::Terminal(e)) => return Err(e),
            Err(Failed::Retry(error, retry_after)) => {
                last_error = error;
                last_retry_after = retry_after;
                retry_after
            }
        };
        if attempt == attempts {
            break;
        }
        let delay = retry_after.unwrap_or_else(|| backoff(options, attempt));
        if let Some(d) = deadline {
            if Instant::now() + delay >= d {
                return Err(timed_out(provider, request, &last_error));
            }
        }
        request.progress.line(
            "http",
            &format!("{last_error}; retrying in {:.1}s", delay.as_secs_f64()),
        );
        tracing::debug!(provider, attempt, ?delay, error = %last_error, "retrying HTTP agent request");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = request.cancel.cancelled() => {
                return Err(AgentError::retryable(format!("{provider} request was cancelled")));
            }
        }
    }
    let error = TaskError::retryable(format!(
        "{provider} API failed after {attempts} attempt(s): {last_error}"
    ));
    // The server's own reset time, for the engine's next attempt.
    Err(match last_retry_after {
        Some(after) => error.with_retry_after(after),
        None => error,
    }
    .into())
}

/// One POST and its reply.
#[allow(clippy::too_many_arguments)]
async fn attempt_once(
    provider: &str,
    options: &HttpOptions,
    client: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    body: &Value,
    request: &AgentRequest,
    wire: &Wire,
    timeout: Duration,
) -> Result<Value, Failed> {
    let transport = |e: reqwest::Error| {
        let message = if e.is_timeout() {
            format!("no complete reply within {:.1}s", timeout.as_secs_f64())
        } else if e.is_connect() {
            format!(
                "cannot connect to {url}: is the server running, and is the base URL right? ({e})"
            )
        } else {
            format!("request failed: {e}")
        };
        Failed::Retry(message, None)
    };
    let mut response = client
        .post(url)
        .headers(headers.clone())
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = retry_after_of(response.headers());
    if !(200..300).contains(&status) {
        let text = response.text().await.map_err(transport)?;
        let message = format!("HTTP {status}: {}", error_message(&text));
        if matches!(status, 401 | 403) {
            return Err(Failed::Terminal(AgentError::terminal(format!(
                "{provider} rejected the API key ({message}); check {}",
                options.api_key_env
            ))));
        }
        if !status_is_retryable(status) {
            return Err(Failed::Terminal(AgentError::terminal(format!(
                "{provider} refused the request ({message})"
            ))));
        }
        return Err(Failed::Retry(message, retry_after));
    }
    let Wire::Sse(new_fold) = wire else {
        let text = response.text().await.map_err(transport)?;
        return serde_json::from_str::<Value>(&text).map_err(|e| {
            let message = format!("reply is not valid JSON ({e}): {}", truncate(&text, 300));
            Failed::Retry(message, retry_after)
        });
    };
    let mut fold = new_fold();
    let mut events = SseParser::default();
    let mut text = LineBuffer::default();
    let idle = options.stream_idle_timeout;
    loop {
        let chunk = match tokio::time::timeout(idle, response.chunk()).await {
            Err(_) => {
                return Err(Failed::Retry(
                    format!(
                        "the stream stalled: no data for {:.1}s (stream idle timeout)",
                        idle.as_secs_f64()
                    ),
                    None,
                ))
            }
            Ok(chunk) => chunk.map_err(transport)?,
        };
        let Some(chunk) = chunk else { break };
        for (name, data) in events.push(&chunk) {
            let delta = fold
                .event(&name, &data)
                .map_err(|e| Failed::Retry(e, None))?;
            if let Some(delta) = delta {
                text.push(&delta, request);
            }
        }
    }
    text.flush(request);
    fold.finish().map_err(|e| Failed::Retry(e, None))
}

/// Splits a byte stream into server-sent events: `(name, data)`, where `name` is the `event:`
/// field or else the data's `type`, and `data` is the parsed JSON of the `data:` lines
/// (`Value::Null` for `[DONE]`; events whose data is not JSON are skipped).
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    event: String,
    data: String,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<(String, Value)> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let Some(event) = self.dispatch() {
                    events.push(event);
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            } else if let Some(value) = line.strip_prefix("event:") {
                self.event = value.trim().to_owned();
            }
            // `id:`, `retry:` and `:` comments (keep-alives) need nothing.
        }
        events
    }

    fn dispatch(&mut self) -> Option<(String, Value)> {
        let data = std::mem::take(&mut self.data);
        let mut name = std::mem::take(&mut self.event);
        if data.trim() == "[DONE]" {
            return Some((name, Value::Null));
        }
        let value = serde_json::from_str::<Value>(&data).ok()?;
        if name.is_empty() {
            name = value["type"].as_str().unwrap_or_default().to_owned();
        }
        Some((name, value))
    }
}

/// Streamed text, reported to the progress sink a line at a time.
#[derive(Default)]
struct LineBuffer(String);

impl LineBuffer {
    fn push(&mut self, delta: &str, request: &AgentRequest) {
        self.0.push_str(delta);
        while let Some(end) = self.0.find('\n') {
            let line: String = self.0.drain(..=end).collect();
            request
                .progress
                .line("text", line.trim_end_matches(['\n', '\r']));
        }
    }

    fn flush(&mut self, request: &AgentRequest) {
        if !self.0.is_empty() {
            request.progress.line("text", &std::mem::take(&mut self.0));
        }
    }
}

fn timed_out(provider: &str, request: &AgentRequest, last_error: &str) -> AgentError {
    let limit = request.timeout.map_or(0.0, |t| t.as_secs_f64());
    let mut message = format!("{provider} request timed out after {limit:.1}s");
    if !last_error.is_empty() {
        message.push_str(&format!(" (last error: {last_error})"));
    }
    AgentError::retryable(message)
}

/// Exponential backoff with a little jitter, capped.
fn backoff(options: &HttpOptions, attempt: u32) -> Duration {
    let exp = options
        .initial_backoff
        .saturating_mul(1u32 << (attempt - 1).min(16));
    let base = exp.min(options.max_backoff);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
    base + jitter
}

/// `retry-after-ms`, or `retry-after` in seconds (an HTTP date falls back to backoff).
pub(crate) fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.clamp(0.0, 3_600_000.0) / 1000.0));
    }
    let secs = header("retry-after")?.parse::<f64>().ok()?;
    Some(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)))
}

/// The message of an error reply: `error.message` (Anthropic, OpenAI, Gemini) or the body.
fn error_message(body: &str) -> String {
    let parsed = serde_json::from_str::<Value>(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["error"]["message"]
            .as_str()
            .or_else(|| v["message"].as_str())
    });
    match message {
        Some(m) => truncate(m, 1000),
        None if body.trim().is_empty() => "empty body".to_owned(),
        None => truncate(body.trim(), 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after_of(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after_of(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after_of(&h), Some(Duration::from_millis(150)));
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_of(&date), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut o = HttpOptions::new("X");
        o.initial_backoff = Duration::from_millis(100);
        o.max_backoff = Duration::from_millis(300);
        assert!(
            backoff(&o, 1) >= Duration::from_millis(100)
                && backoff(&o, 1) < Duration::from_millis(126)
        );
        assert!(backoff(&o, 2) >= Duration::from_millis(200));
        assert!(backoff(&o, 10) <= Duration::from_millis(375));
    }

    #[test]
    fn sse_parser_handles_split_chunks_crlf_comments_and_done() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\r\n\r\nevent: message_st").is_empty());
        let events = p.push(b"art\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata: {\"type\":\"x\"}\n\n");
        assert_eq!(
            events,
            [
                ("message_start".to_owned(), serde_json::json!({"a": 1})),
                ("x".to_owned(), serde_json::json!({"type": "x"})),
            ]
        );
        assert_eq!(
            p.push(b"data: not json\n\ndata: [DONE]\n\n"),
            [(String::new(), Value::Null)]
        );
    }

    #[test]
    fn error_message_prefers_the_api_error_field() {
        assert_eq!(
            error_message(r#"{"type":"error","error":{"type":"x","message":"overloaded"}}"#),
            "overloaded"
        );
        assert_eq!(
            error_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(error_message(""), "empty body");
    }
}
