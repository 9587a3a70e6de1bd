//! Prompt assembly and JSON extraction shared by every agent task.
//!
//! The engine appends the output's JSON schema and a REQUIRED OUTPUT instruction to the task's
//! prompt, and picks the output out of the reply: bare, fenced or surrounded by prose; the last
//! complete object that validates wins.

use serde_json::Value;

/// The prompt sent to an agent: the task prompt, the schema, the instruction, and on a retry the
/// error of the previous attempt.
pub fn assemble_prompt(task_prompt: &str, schema: &Value, previous_error: Option<&str>) -> String {
    let schema = serde_json::to_string_pretty(schema).unwrap_or_else(|_| schema.to_string());
    let mut p = String::with_capacity(task_prompt.len() + schema.len() + 256);
    p.push_str(task_prompt.trim_end());
    p.push_str("\n\n## REQUIRED OUTPUT\nYou MUST end your response with a single JSON object matching this JSON schema:\n```json\n");
    p.push_str(&schema);
    p.push_str("\n```\n");
    if let Some(e) = previous_error {
        p.push_str("\n## PREVIOUS ATTEMPT FAILED\nYour previous reply was rejected: ");
        p.push_str(e);
        p.push_str("\nReply again with a JSON object that matches the schema exactly.\n");
    }
    p
}

/// Every complete top-level JSON object in `text`, in order of appearance.
pub fn json_objects(text: &str) -> Vec<Value> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            if let Some(end) = object_end(bytes, i) {
                if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&text[i..=end]) {
                    out.push(v);
                    i = end + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// The index of the `}` closing the object opened at `start`, respecting strings.
fn object_end(b: &[u8], start: usize) -> Option<usize> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (j, &c) in b.iter().enumerate().skip(start) {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// The last complete JSON object in `text`.
pub fn extract_json(text: &str) -> Option<Value> {
    json_objects(text).pop()
}

/// The last complete JSON object in `text` for which `valid` holds.
pub fn extract_json_where(text: &str, valid: impl Fn(&Value) -> bool) -> Option<Value> {
    json_objects(text).into_iter().rev().find(|v| valid(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(text: &str, expect: Option<Value>) {
        assert_eq!(extract_json(text), expect, "input: {text}");
    }

    #[test]
    fn extracts_bare_fenced_and_prose_wrapped_objects() {
        check(r#"{"a":1}"#, Some(json!({"a":1})));
        check(
            "Here you go:\n```json\n{\"a\": \"}\"}\n```\nDone.",
            Some(json!({"a":"}"})),
        );
        check(
            r#"first {"a":1} then {"b":{"c":[1,2]}} end"#,
            Some(json!({"b":{"c":[1,2]}})),
        );
        check("no json here", None);
        check(r#"{"a": "unterminated"#, None);
        check(r#"{broken} {"ok":true}"#, Some(json!({"ok":true})));
    }

    #[test]
    fn last_valid_object_wins() {
        let text = r#"{"summary":"x","severity":"low"} and an example {"foo":1}"#;
        let v = extract_json_where(text, |v| v.get("summary").is_some());
        assert_eq!(v, Some(json!({"summary":"x","severity":"low"})));
    }

    #[test]
    fn prompt_has_schema_instruction_and_previous_error() {
        let p = assemble_prompt(
            "Fix it.",
            &json!({"type":"object"}),
            Some("missing field `diff`"),
        );
        assert!(p.starts_with("Fix it.\n\n## REQUIRED OUTPUT"));
        assert!(p.contains("\"type\": \"object\""));
        assert!(p.contains("missing field `diff`"));
    }
}
