//! [`AnthropicAgent`]: the Anthropic Messages API over HTTP.

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, Usage};

use crate::http::{self, http_builder_methods, HttpOptions, SseFold, Wire};
use crate::schema::native_schema;
use crate::stream::{str_of, u64_of};

/// The name of the tool that carries structured output (the name Claude Code uses too).
const OUTPUT_TOOL: &str = "StructuredOutput";

/// Calls the Anthropic Messages API (`POST {base}/v1/messages`).
///
/// The API key comes from `ANTHROPIC_API_KEY` (or [`api_key`](Self::api_key)); the base URL from
/// [`base_url`](Self::base_url), else `ANTHROPIC_BASE_URL`, else `https://api.anthropic.com`.
/// With [`native_schema`](Self::native_schema) (the default) the output schema is offered as a
/// forced tool, and its input is the response's `json`.
///
/// ```no_run
/// use smithers_agents::AnthropicAgent;
/// let agent = AnthropicAgent::new("claude-sonnet-4-5").max_tokens(4096).system_prompt("Be terse.");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct AnthropicAgent {
    model: String,
    system_prompt: Option<String>,
    max_tokens: u32,
    temperature: Option<f64>,
    native_schema: bool,
    http: HttpOptions,
}

impl AnthropicAgent {
    /// An agent for `model`, with the API key from `ANTHROPIC_API_KEY`.
    pub fn new(model: impl Into<String>) -> Self {
        AnthropicAgent {
            model: model.into(),
            system_prompt: None,
            max_tokens: 8192,
            temperature: None,
            native_schema: true,
            http: HttpOptions::new("ANTHROPIC_API_KEY"),
        }
    }

    /// The system prompt.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// `max_tokens` of the reply (default 8192).
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = tokens;
        self
    }

    /// Sampling temperature.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Whether to force a `StructuredOutput` tool whose input schema is the output schema
    /// (default true). Smithers validates the result either way.
    pub fn native_schema(mut self, enabled: bool) -> Self {
        self.native_schema = enabled;
        self
    }

    http_builder_methods!("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL");

    fn body(&self, request: &AgentRequest) -> Value {
        let mut body = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        });
        if let Some(system) = &self.system_prompt {
            body["system"] = json!(system);
        }
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        if self.http.stream {
            body["stream"] = json!(true);
        }
        if let Some(schema) = self
            .native_schema
            .then(|| native_schema(&request.output_schema))
            .flatten()
        {
            body["tools"] = json!([{
                "name": OUTPUT_TOOL,
                "description": "Return the final answer as structured output matching the schema.",
                "input_schema": schema,
            }]);
            body["tool_choice"] = json!({"type": "tool", "name": OUTPUT_TOOL});
        }
        body
    }
}

#[async_trait::async_trait]
impl Agent for AnthropicAgent {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn signature(&self) -> Value {
        json!({
            "agent": self.name(),
            "model": self.model,
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
        let key = self.http.api_key("Anthropic")?;
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        if let Some(key) = key {
            let value = HeaderValue::from_str(&key).map_err(|_| {
                AgentError::terminal(format!(
                    "{} holds characters not allowed in a header",
                    self.http.api_key_env
                ))
            })?;
            headers.insert("x-api-key", value);
        }
        let url = format!(
            "{}/v1/messages",
            self.http
                .base_url("ANTHROPIC_BASE_URL", "https://api.anthropic.com")
        );
        let wire = if self.http.stream {
            Wire::Sse(|| Box::<MessageStream>::default())
        } else {
            Wire::Json
        };
        let reply = http::post(
            "Anthropic",
            &self.http,
            &url,
            headers,
            &self.body(&request),
            &request,
            &wire,
        )
        .await?;
        let response = parse_reply(&reply);
        // A stream has already reported its text line by line.
        if !response.text.is_empty() && !self.http.stream {
            request.progress.line("text", &response.text);
        }
        Ok(response)
    }
}

/// Text, tool input and usage of a Messages API reply.
fn parse_reply(reply: &Value) -> AgentResponse {
    let mut text = Vec::new();
    let mut json = None;
    for block in reply["content"].as_array().into_iter().flatten() {
        match str_of(block, "type") {
            Some("text") => text.extend(str_of(block, "text").map(str::to_owned)),
            Some("tool_use") if str_of(block, "name") == Some(OUTPUT_TOOL) => {
                json = block.get("input").cloned()
            }
            _ => {}
        }
    }
    let mut text = text.join("\n");
    if let (true, Some(json)) = (text.trim().is_empty(), &json) {
        text = json.to_string();
    }
    let u = &reply["usage"];
    AgentResponse {
        text,
        json,
        usage: Usage {
            input_tokens: u64_of(u, "input_tokens"),
            output_tokens: u64_of(u, "output_tokens"),
            cache_read_tokens: u64_of(u, "cache_read_input_tokens"),
            cache_write_tokens: u64_of(u, "cache_creation_input_tokens"),
            cost_usd: None,
        },
        session_id: str_of(reply, "id").map(str::to_owned),
        exit_code: None,
        transcript: Some(format!("{reply}\n")),
        model: str_of(reply, "model").map(str::to_owned),
    }
}

/// Folds the Messages API's stream (`message_start`, `content_block_start`/`_delta`/`_stop`,
/// `message_delta`, `message_stop`, `ping`, `error`) back into the message it streams.
#[derive(Default)]
struct MessageStream {
    message: Value,
    /// The `input_json_delta` pieces of each tool-use block, by block index.
    partial_json: Vec<String>,
    done: bool,
}

impl SseFold for MessageStream {
    fn event(&mut self, name: &str, data: &Value) -> Result<Option<String>, String> {
        let index = data["index"].as_u64().and_then(|i| usize::try_from(i).ok());
        match name {
            "message_start" => {
                self.message = data["message"].clone();
                self.message["content"] = json!([]);
            }
            "content_block_start" => {
                let i = index.ok_or("content_block_start without an index")?;
                let blocks = self.blocks()?;
                blocks.resize(blocks.len().max(i + 1), Value::Null);
                blocks[i] = data["content_block"].clone();
                self.partial_json
                    .resize(self.partial_json.len().max(i + 1), String::new());
            }
            "content_block_delta" => {
                let i = index.ok_or("content_block_delta without an index")?;
                let delta = &data["delta"];
                let block = self
                    .blocks()?
                    .get_mut(i)
                    .ok_or("content_block_delta before its content_block_start")?;
                match str_of(delta, "type") {
                    Some("text_delta") => {
                        let piece = str_of(delta, "text").unwrap_or_default();
                        let text = format!("{}{piece}", str_of(block, "text").unwrap_or_default());
                        block["text"] = json!(text);
                        return Ok(Some(piece.to_owned()));
                    }
                    Some("input_json_delta") => {
                        let piece = str_of(delta, "partial_json").unwrap_or_default();
                        self.partial_json[i].push_str(piece);
                    }
                    // thinking, signature and later kinds.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let i = index.ok_or("content_block_stop without an index")?;
                let partial = std::mem::take(&mut self.partial_json[i]);
                if !partial.trim().is_empty() {
                    let input = serde_json::from_str::<Value>(&partial)
                        .map_err(|e| format!("the streamed tool input is not valid JSON ({e})"))?;
                    if let Some(block) = self.blocks()?.get_mut(i) {
                        block["input"] = input;
                    }
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"].get("stop_reason").filter(|r| !r.is_null()) {
                    self.message["stop_reason"] = reason.clone();
                }
                // Counts here are cumulative: they replace those of `message_start`.
                if !self.message["usage"].is_object() {
                    self.message["usage"] = json!({});
                }
                if let (Some(usage), Some(total)) = (
                    data["usage"].as_object(),
                    self.message["usage"].as_object_mut(),
                ) {
                    for (key, value) in usage.iter().filter(|(_, v)| !v.is_null()) {
                        total.insert(key.clone(), value.clone());
                    }
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                return Err(format!(
                    "the stream reported an error: {}",
                    str_of(&data["error"], "message").unwrap_or("unknown")
                ))
            }
            // ping and later kinds.
            _ => {}
        }
        Ok(None)
    }

    fn finish(self: Box<Self>) -> Result<Value, String> {
        if self.done {
            Ok(self.message)
        } else {
            Err("the stream ended before message_stop".to_owned())
        }
    }
}

impl MessageStream {
    fn blocks(&mut self) -> Result<&mut Vec<Value>, String> {
        self.message["content"]
            .as_array_mut()
            .ok_or_else(|| "a content block before message_start".to_owned())
    }
}
