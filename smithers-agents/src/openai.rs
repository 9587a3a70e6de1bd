//! [`OpenAiAgent`]: OpenAI-compatible HTTP APIs, Chat Completions or Responses, so OpenAI,
//! Ollama, vLLM, OpenRouter and similar servers work by base URL.

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, TaskError, Usage};

use crate::http::{self, http_builder_methods, HttpOptions, SseFold, Wire};
use crate::schema::native_schema;
use crate::stream::{str_of, truncate, u64_of};

/// Which OpenAI-compatible endpoint to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenAiApi {
    /// `POST {base}/chat/completions`: what nearly every compatible server speaks.
    ChatCompletions,
    /// `POST {base}/responses`: OpenAI's newer API.
    Responses,
}

/// Calls an OpenAI-compatible API.
///
/// The API key comes from `OPENAI_API_KEY` (or [`api_key`](Self::api_key)); the base URL from
/// [`base_url`](Self::base_url), else `OPENAI_BASE_URL`, else `https://api.openai.com/v1`.
///
/// ```no_run
/// use smithers_agents::{OpenAiAgent, OpenAiApi};
/// let openai = OpenAiAgent::new("gpt-5.5").api(OpenAiApi::Responses).native_schema(true);
/// let local = OpenAiAgent::ollama("qwen3-coder");
/// let router = OpenAiAgent::new("anthropic/claude-sonnet-4.5")
///     .base_url("https://openrouter.ai/api/v1")
///     .api_key_env("OPENROUTER_API_KEY");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct OpenAiAgent {
    model: String,
    api: OpenAiApi,
    system_prompt: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    native_schema: bool,
    http: HttpOptions,
}

impl OpenAiAgent {
    /// An agent for `model` on the Chat Completions API, with the key from `OPENAI_API_KEY`.
    pub fn new(model: impl Into<String>) -> Self {
        OpenAiAgent {
            model: model.into(),
            api: OpenAiApi::ChatCompletions,
            system_prompt: None,
            max_tokens: None,
            temperature: None,
            native_schema: false,
            http: HttpOptions::new("OPENAI_API_KEY"),
        }
    }

    /// An agent for a local Ollama server (`http://127.0.0.1:11434/v1`, no API key).
    pub fn ollama(model: impl Into<String>) -> Self {
        Self::new(model)
            .base_url("http://127.0.0.1:11434/v1")
            .no_api_key()
    }

    http_builder_methods!("OPENAI_API_KEY", "OPENAI_BASE_URL");

    /// Send no API key when none is configured (local servers).
    pub fn no_api_key(mut self) -> Self {
        self.http.require_api_key = false;
        self
    }

    /// The endpoint (default Chat Completions).
    pub fn api(mut self, api: OpenAiApi) -> Self {
        self.api = api;
        self
    }

    /// The system prompt (`system` message, or `instructions` on the Responses API).
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// Limit on output tokens.
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// Sampling temperature.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Ask for JSON matching the output schema natively (`response_format` / `text.format` with
    /// `json_schema`, non-strict). Off by default since compatible servers differ; smithers
    /// validates the reply either way.
    pub fn native_schema(mut self, enabled: bool) -> Self {
        self.native_schema = enabled;
        self
    }

    fn body(&self, request: &AgentRequest) -> Value {
        let schema = self
            .native_schema
            .then(|| native_schema(&request.output_schema))
            .flatten()
            .map(|schema| json!({"name": schema_name(&request.output_type), "schema": schema, "strict": false}));
        let mut body = json!({"model": self.model});
        match self.api {
            OpenAiApi::ChatCompletions => {
                let mut messages = Vec::new();
                if let Some(system) = &self.system_prompt {
                    messages.push(json!({"role": "system", "content": system}));
                }
                messages.push(json!({"role": "user", "content": request.prompt}));
                body["messages"] = json!(messages);
                if let Some(max) = self.max_tokens {
                    body["max_tokens"] = json!(max);
                }
                if let Some(schema) = schema {
                    body["response_format"] = json!({"type": "json_schema", "json_schema": schema});
                }
            }
            OpenAiApi::Responses => {
                body["input"] = json!(request.prompt);
                body["store"] = json!(false);
                if let Some(system) = &self.system_prompt {
                    body["instructions"] = json!(system);
                }
                if let Some(max) = self.max_tokens {
                    body["max_output_tokens"] = json!(max);
                }
                if let Some(mut schema) = schema {
                    schema["type"] = json!("json_schema");
                    body["text"] = json!({"format": schema});
                }
            }
        }
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        if self.http.stream {
            body["stream"] = json!(true);
            if self.api == OpenAiApi::ChatCompletions {
                // Without it a chat stream carries no usage.
                body["stream_options"] = json!({"include_usage": true});
            }
        }
        body
    }
}

/// OpenAI wants `^[a-zA-Z0-9_-]{1,64}$`.
fn schema_name(output_type: &str) -> String {
    let name: String = output_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "output".to_owned()
    } else {
        name
    }
}

#[async_trait::async_trait]
impl Agent for OpenAiAgent {
    fn name(&self) -> &str {
        "openai"
    }

    fn signature(&self) -> Value {
        let api = match self.api {
            OpenAiApi::ChatCompletions => "chat_completions",
            OpenAiApi::Responses => "responses",
        };
        json!({
            "agent": self.name(),
            "api": api,
            "model": self.model,
            "base_url": self.http.base_url,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "system_prompt": self.system_prompt,
            "native_schema": self.native_schema,
        })
    }

    fn model(&self) -> Option<String> {
        Some(self.model.clone())
    }

    fn system_prompt(&self) -> Option<String> {
        self.system_prompt.clone()
    }

    async fn generate(&self, request: AgentRequest) -> Result<AgentResponse, AgentError> {
        let key = self.http.api_key("OpenAI-compatible")?;
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            let value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                AgentError::terminal(format!(
                    "{} holds characters not allowed in a header",
                    self.http.api_key_env
                ))
            })?;
            headers.insert(AUTHORIZATION, value);
        }
        let base = self
            .http
            .base_url("OPENAI_BASE_URL", "https://api.openai.com/v1");
        let (url, provider) = match self.api {
            OpenAiApi::ChatCompletions => (
                format!("{base}/chat/completions"),
                "OpenAI-compatible chat completions",
            ),
            OpenAiApi::Responses => (format!("{base}/responses"), "OpenAI-compatible responses"),
        };
        let wire = match (self.http.stream, self.api) {
            (false, _) => Wire::Json,
            (true, OpenAiApi::ChatCompletions) => Wire::Sse(|| Box::<ChatStream>::default()),
            (true, OpenAiApi::Responses) => Wire::Sse(|| Box::<ResponseStream>::default()),
        };
        let reply = http::post(
            provider,
            &self.http,
            &url,
            headers,
            &self.body(&request),
            &request,
            &wire,
        )
        .await?;
        let response = match self.api {
            OpenAiApi::ChatCompletions => parse_chat(&reply),
            OpenAiApi::Responses => parse_responses(&reply),
        }
        .map_err(|e| AgentError {
            error: e,
            usage: usage_of(&reply),
            transcript: Some(format!("{reply}\n")),
            exit_code: None,
            session_id: None,
        })?;
        // A stream has already reported its text line by line.
        if !response.text.is_empty() && !self.http.stream {
            request.progress.line("text", &response.text);
        }
        Ok(response)
    }
}

fn usage_of(reply: &Value) -> Usage {
    let u = &reply["usage"];
    Usage {
        input_tokens: u64_of(u, "prompt_tokens").or_else(|| u64_of(u, "input_tokens")),
        output_tokens: u64_of(u, "completion_tokens").or_else(|| u64_of(u, "output_tokens")),
        cache_read_tokens: u64_of(&u["prompt_tokens_details"], "cached_tokens")
            .or_else(|| u64_of(&u["input_tokens_details"], "cached_tokens")),
        cache_write_tokens: None,
        // OpenRouter reports the cost it charged.
        cost_usd: u.get("cost").and_then(Value::as_f64),
    }
}

fn response(reply: &Value, text: String) -> AgentResponse {
    let json = serde_json::from_str::<Value>(text.trim())
        .ok()
        .filter(Value::is_object);
    AgentResponse {
        text,
        json,
        usage: usage_of(reply),
        session_id: str_of(reply, "id").map(str::to_owned),
        exit_code: None,
        transcript: Some(format!("{reply}\n")),
        model: str_of(reply, "model").map(str::to_owned),
    }
}

fn parse_chat(reply: &Value) -> Result<AgentResponse, TaskError> {
    let choice = reply["choices"].get(0).ok_or_else(|| {
        TaskError::retryable(format!(
            "chat completion has no choices: {}",
            truncate(&reply.to_string(), 300)
        ))
    })?;
    let message = &choice["message"];
    if let Some(refusal) = str_of(message, "refusal") {
        return Err(TaskError::terminal(format!("the model refused: {refusal}")));
    }
    Ok(response(
        reply,
        str_of(message, "content").unwrap_or_default().to_owned(),
    ))
}

fn parse_responses(reply: &Value) -> Result<AgentResponse, TaskError> {
    if let Some(message) = reply
        .get("error")
        .filter(|e| !e.is_null())
        .map(|e| str_of(e, "message").unwrap_or("unknown"))
    {
        return Err(TaskError::retryable(format!(
            "the response failed: {message}"
        )));
    }
    let mut text = Vec::new();
    for item in reply["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| str_of(i, "type") == Some("message"))
    {
        for part in item["content"].as_array().into_iter().flatten() {
            match str_of(part, "type") {
                Some("output_text") => text.extend(str_of(part, "text").map(str::to_owned)),
                Some("refusal") => {
                    return Err(TaskError::terminal(format!(
                        "the model refused: {}",
                        str_of(part, "refusal").unwrap_or_default()
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(response(reply, text.join("")))
}

/// Folds a Chat Completions stream (`chat.completion.chunk` objects, then `[DONE]`) back into a
/// `chat.completion`.
#[derive(Default)]
struct ChatStream {
    id: Option<Value>,
    model: Option<Value>,
    content: String,
    refusal: Option<String>,
    finish_reason: Option<Value>,
    usage: Option<Value>,
    done: bool,
}

impl SseFold for ChatStream {
    fn event(&mut self, _name: &str, data: &Value) -> Result<Option<String>, String> {
        if data.is_null() {
            self.done = true;
            return Ok(None);
        }
        if let Some(error) = data.get("error").filter(|e| !e.is_null()) {
            return Err(format!(
                "the stream reported an error: {}",
                str_of(error, "message").unwrap_or("unknown")
            ));
        }
        self.id = self.id.take().or_else(|| data.get("id").cloned());
        self.model = self.model.take().or_else(|| data.get("model").cloned());
        if let Some(usage) = data.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let Some(choice) = data["choices"].get(0) else {
            return Ok(None);
        };
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.finish_reason = Some(reason.clone());
        }
        if let Some(refusal) = str_of(&choice["delta"], "refusal") {
            self.refusal
                .get_or_insert_with(String::new)
                .push_str(refusal);
        }
        match str_of(&choice["delta"], "content") {
            Some(piece) if !piece.is_empty() => {
                self.content.push_str(piece);
                Ok(Some(piece.to_owned()))
            }
            _ => Ok(None),
        }
    }

    fn finish(self: Box<Self>) -> Result<Value, String> {
        // Some compatible servers end without `[DONE]`; a finish reason is as good.
        if !self.done && self.finish_reason.is_none() {
            return Err("the stream ended before [DONE]".to_owned());
        }
        let mut message = json!({"role": "assistant", "content": self.content});
        if let Some(refusal) = self.refusal {
            message["refusal"] = json!(refusal);
        }
        Ok(json!({
            "id": self.id,
            "object": "chat.completion",
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }))
    }
}

/// Folds a Responses stream into the response of its final `response.completed` (or
/// `response.failed` / `response.incomplete`) event, which carries the whole output and usage.
#[derive(Default)]
struct ResponseStream {
    response: Option<Value>,
}

impl SseFold for ResponseStream {
    fn event(&mut self, name: &str, data: &Value) -> Result<Option<String>, String> {
        match name {
            "response.output_text.delta" => Ok(str_of(data, "delta").map(str::to_owned)),
            "response.completed" | "response.failed" | "response.incomplete" => {
                self.response = Some(data["response"].clone());
                Ok(None)
            }
            "error" => Err(format!(
                "the stream reported an error: {}",
                str_of(data, "message")
                    .or_else(|| str_of(&data["error"], "message"))
                    .unwrap_or("unknown")
            )),
            _ => Ok(None),
        }
    }

    fn finish(self: Box<Self>) -> Result<Value, String> {
        self.response
            .ok_or_else(|| "the stream ended before response.completed".to_owned())
    }
}
