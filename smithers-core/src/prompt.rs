//! Prompt assembly and JSON extraction shared by every agent.
//!
//! The engine sends an agent the task's prompt followed by the output's JSON schema and a
//! `## REQUIRED OUTPUT` instruction ([`assemble`]); on a retry after invalid output it appends the
//! validation error of the previous attempt. From the reply text it takes the JSON object with
//! [`extract_json`] (bare, in a ```` ```json ```` fence, or surrounded by prose: the last complete
//! top-level object wins) or [`extract_json_with`] (the last object that a validator accepts).

use serde_json::Value;

/// The heading that introduces the output instruction in an assembled prompt.
pub const REQUIRED_OUTPUT_HEADING: &str = "## REQUIRED OUTPUT";

/// The heading that introduces the previous attempt's validation error in an assembled prompt.
pub const PREVIOUS_ERROR_HEADING: &str = "## YOUR PREVIOUS REPLY WAS REJECTED";

/// Builds the full prompt of one attempt: the task's prompt, then the JSON schema its reply must
/// match with a `## REQUIRED OUTPUT` instruction, then (on a retry after invalid output) the
/// validation error of the previous attempt.
///
/// ```
/// use serde_json::json;
/// let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}});
/// let prompt = smithers_core::prompt::assemble("Check the build.", &schema, Some("missing field `ok`"));
/// assert!(prompt.starts_with("Check the build."));
/// assert!(prompt.contains("## REQUIRED OUTPUT"));
/// assert!(prompt.contains("missing field `ok`"));
/// ```
pub fn assemble(task_prompt: &str, schema: &Value, previous_error: Option<&str>) -> String {
    let schema_text = serde_json::to_string_pretty(schema).unwrap_or_else(|_| schema.to_string());
    let mut out = String::with_capacity(task_prompt.len() + schema_text.len() + 512);
    out.push_str(task_prompt.trim_end());
    out.push_str("\n\n");
    out.push_str(REQUIRED_OUTPUT_HEADING);
    out.push_str(
        "\n\nWhen you are done, reply with one JSON object that matches the JSON schema below. \
         Put it at the end of your reply in a ```json fenced block and write nothing after it. \
         Use exactly the property names of the schema; do not wrap the object in another object.\n\n",
    );
    out.push_str("```json\n");
    out.push_str(&schema_text);
    out.push_str("\n```\n");
    if let Some(error) = previous_error {
        out.push('\n');
        out.push_str(PREVIOUS_ERROR_HEADING);
        out.push_str("\n\nYour previous reply did not match the schema:\n\n");
        out.push_str(error.trim());
        out.push_str("\n\nFix this and reply again with a JSON object that matches the schema.\n");
    }
    out
}

/// An agent's reply that did not validate, and why: what a retry quotes back to the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedReply {
    /// The reply's text (its structured output, when it had no text).
    pub reply: String,
    /// The validation error.
    pub error: String,
}

/// Most characters of a rejected reply quoted back in the retry prompt (its head and its tail).
const MAX_QUOTED_REPLY: usize = 4000;

/// Builds the prompt of an attempt after an invalid reply: like [`assemble`], then the previous
/// reply quoted back (cut in the middle when long) with its validation error.
///
/// Only an invalid reply is fed back this way: after a transport error, a timeout or a cancel
/// the retry sends the original prompt ([`assemble`] with no error), since the agent's reply was
/// not at fault.
///
/// ```
/// use serde_json::json;
/// use smithers_core::prompt::{assemble_after_invalid_reply, RejectedReply};
/// let schema = json!({"type": "object", "required": ["ok"]});
/// let rejected = RejectedReply { reply: "{\"okay\": true}".into(), error: "missing field `ok`".into() };
/// let prompt = assemble_after_invalid_reply("Check the build.", &schema, &rejected);
/// assert!(prompt.contains("{\"okay\": true}"));
/// assert!(prompt.contains("missing field `ok`"));
/// ```
pub fn assemble_after_invalid_reply(
    task_prompt: &str,
    schema: &Value,
    rejected: &RejectedReply,
) -> String {
    let mut out = assemble(task_prompt, schema, None);
    out.push('\n');
    out.push_str(PREVIOUS_ERROR_HEADING);
    out.push_str("\n\nYour previous reply was:\n\n````text\n");
    out.push_str(&quote(rejected.reply.trim()));
    out.push_str("\n````\n\nIt did not match the schema: ");
    out.push_str(rejected.error.trim());
    out.push_str("\n\nFix this and reply again with a JSON object that matches the schema.\n");
    out
}

/// `text`, or its head and tail around a marker when longer than [`MAX_QUOTED_REPLY`].
fn quote(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_QUOTED_REPLY {
        return text.to_owned();
    }
    let half = MAX_QUOTED_REPLY / 2;
    let head: String = text.chars().take(half).collect();
    let tail: String = text.chars().skip(count - half).collect();
    format!(
        "{head}\n[... {} characters left out ...]\n{tail}",
        count - 2 * half
    )
}

/// Extracts the last complete top-level JSON object from `text`.
///
/// Handles a bare object, objects in ```` ```json ```` fences and objects surrounded by prose.
/// Objects nested inside another object are not candidates; text that only looks like JSON
/// (`{like this}`) is skipped.
///
/// ```
/// use serde_json::json;
/// let text = "Here is a draft {\"a\": 1}\nand the final answer:\n```json\n{\"a\": 2}\n```\nDone.";
/// assert_eq!(smithers_core::prompt::extract_json(text), Some(json!({"a": 2})));
/// ```
pub fn extract_json(text: &str) -> Option<Value> {
    extract_json_with(text, |_| true)
}

/// Like [`extract_json`], but returns the last top-level object for which `accept` returns true,
/// so a reply that quotes an example object before its real answer (or after it) still yields
/// the object that validates.
///
/// ```
/// use serde_json::json;
/// let text = "{\"summary\": \"ok\"} and an example: {\"other\": true}";
/// let found = smithers_core::prompt::extract_json_with(text, |v| v.get("summary").is_some());
/// assert_eq!(found, Some(json!({"summary": "ok"})));
/// ```
pub fn extract_json_with(text: &str, mut accept: impl FnMut(&Value) -> bool) -> Option<Value> {
    top_level_objects(text)
        .into_iter()
        .rev()
        .find(|v| accept(v))
}

/// Every top-level JSON object in `text`, in order.
fn top_level_objects(text: &str) -> Vec<Value> {
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(offset) = text[pos..].find('{') {
        let start = pos + offset;
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(value @ Value::Object(_))) => {
                found.push(value);
                pos = start + stream.byte_offset();
            }
            _ => pos = start + 1,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(text: &str, expected: Option<Value>) {
        assert_eq!(extract_json(text), expected, "text: {text:?}");
    }

    #[test]
    fn extracts_bare_object() {
        check(
            r#"{"summary":"ok","severity":"low"}"#,
            Some(json!({"summary": "ok", "severity": "low"})),
        );
        check(
            "  \n{\"a\": [1, 2, {\"b\": null}]}\n ",
            Some(json!({"a": [1, 2, {"b": null}]})),
        );
    }

    #[test]
    fn extracts_fenced_object() {
        check("```json\n{\"a\": 1}\n```", Some(json!({"a": 1})));
        check("```\n{\"a\": 1}\n```", Some(json!({"a": 1})));
        check(
            "Result:\n```JSON\n{\n  \"a\": \"x\"\n}\n```\nThanks!",
            Some(json!({"a": "x"})),
        );
    }

    #[test]
    fn extracts_object_surrounded_by_prose() {
        check(
            "I looked at the code. {\"a\": true} That is all.",
            Some(json!({"a": true})),
        );
        check("Answer: {\"a\": 1}.", Some(json!({"a": 1})));
    }

    #[test]
    fn last_complete_object_wins() {
        check("{\"a\": 1}\n{\"a\": 2}", Some(json!({"a": 2})));
        check(
            "first ```json\n{\"a\": 1}\n``` then ```json\n{\"a\": 2}\n```",
            Some(json!({"a": 2})),
        );
        // An incomplete object after the last complete one does not hide it.
        check("{\"a\": 1} and then {\"a\": 2", Some(json!({"a": 1})));
    }

    #[test]
    fn nested_objects_are_not_candidates() {
        check(
            "{\"outer\": {\"inner\": 1}} trailing",
            Some(json!({"outer": {"inner": 1}})),
        );
    }

    #[test]
    fn braces_inside_strings_do_not_confuse_the_scan() {
        check(
            r#"{"code": "fn f() { let x = {}; }"}"#,
            Some(json!({"code": "fn f() { let x = {}; }"})),
        );
        check(r#"{"a": "}"} {"b": "{"}"#, Some(json!({"b": "{"})));
    }

    #[test]
    fn prose_braces_are_skipped() {
        check(
            "Use {placeholders} like {this}: {\"a\": 1}",
            Some(json!({"a": 1})),
        );
        check("{not json} {\"a\": 1} {also not}", Some(json!({"a": 1})));
    }

    #[test]
    fn no_object_gives_none() {
        check("", None);
        check("I could not do it.", None);
        check("[1, 2, 3]", None);
        check("\"a string\"", None);
        check("{\"unterminated\": ", None);
        check("{'single': 'quotes'}", None);
    }

    #[test]
    fn unicode_around_and_inside_is_fine() {
        check(
            "Voilà — résultat : {\"note\": \"ça marche ✓\"} ✔",
            Some(json!({"note": "ça marche ✓"})),
        );
    }

    #[test]
    fn validator_picks_the_last_object_that_validates() {
        let text = "{\"summary\": \"first\"} example: {\"other\": 1} final {\"summary\": \"second\"} {\"x\": 2}";
        let found = extract_json_with(text, |v| v.get("summary").is_some());
        assert_eq!(found, Some(json!({"summary": "second"})));
        assert_eq!(extract_json_with(text, |_| false), None);
        assert_eq!(extract_json(text), Some(json!({"x": 2})));
    }

    #[test]
    fn validator_sees_candidates_last_first_and_stops_at_the_first_accepted() {
        let mut seen = Vec::new();
        let found = extract_json_with("{\"n\":1}{\"n\":2}{\"n\":3}", |v| {
            seen.push(v["n"].as_i64().unwrap_or_default());
            v["n"] == 2
        });
        assert_eq!(found, Some(json!({"n": 2})));
        assert_eq!(seen, vec![3, 2]);
    }

    #[test]
    fn assemble_puts_prompt_then_schema_then_instruction() {
        let schema = json!({"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}});
        let prompt = assemble("Analyze the bug.\n\n", &schema, None);
        assert!(
            prompt.starts_with("Analyze the bug.\n\n## REQUIRED OUTPUT\n"),
            "{prompt}"
        );
        assert!(
            prompt.contains("\"required\": [\n    \"summary\"\n  ]"),
            "schema is pretty-printed: {prompt}"
        );
        assert!(prompt.contains("```json\n{"), "{prompt}");
        assert!(!prompt.contains(PREVIOUS_ERROR_HEADING));
        // The schema printed in the prompt is itself extractable, so the reply must come after it.
        assert_eq!(extract_json(&prompt), Some(schema));
    }

    #[test]
    fn an_invalid_reply_is_quoted_back_with_its_error_and_long_ones_are_cut() {
        let schema = json!({"type": "object"});
        let rejected = RejectedReply {
            reply: "I think it is fine.".into(),
            error: "no JSON object for `Verdict`".into(),
        };
        let prompt = assemble_after_invalid_reply("Review it.", &schema, &rejected);
        assert!(prompt.starts_with(&assemble("Review it.", &schema, None)));
        assert!(prompt.ends_with(
            "## YOUR PREVIOUS REPLY WAS REJECTED\n\nYour previous reply was:\n\n````text\nI think it is fine.\n````\n\n\
             It did not match the schema: no JSON object for `Verdict`\n\n\
             Fix this and reply again with a JSON object that matches the schema.\n"
        ), "{prompt}");
        let long = RejectedReply {
            reply: format!("{}{}", "a".repeat(5000), "z".repeat(5000)),
            error: "e".into(),
        };
        let prompt = assemble_after_invalid_reply("Review it.", &schema, &long);
        assert!(prompt.contains(&format!(
            "{}\n[... 6000 characters left out ...]\n{}",
            "a".repeat(2000),
            "z".repeat(2000)
        )));
    }

    #[test]
    fn assemble_appends_previous_error_on_retry() {
        let schema = json!({"type": "object"});
        let prompt = assemble(
            "Fix it.",
            &schema,
            Some("  missing field `diff` at line 1 column 40\n"),
        );
        let required = prompt.find(REQUIRED_OUTPUT_HEADING).unwrap_or(usize::MAX);
        let previous = prompt.find(PREVIOUS_ERROR_HEADING).unwrap_or(0);
        assert!(required < previous, "{prompt}");
        assert!(
            prompt.contains("\n\nmissing field `diff` at line 1 column 40\n\n"),
            "{prompt}"
        );
    }
}
