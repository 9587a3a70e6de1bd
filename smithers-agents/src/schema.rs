//! The output schema as the agents hand it to a tool's native structured-output option
//! (`--json-schema`, `--output-schema`, a forced tool, `response_format`).

use serde_json::Value;

/// The schema to pass natively, or `None` when it is not an object schema (a tool input or a
/// strict response format must be an object).
///
/// The top-level `$schema` is dropped: Claude Code 2.1.197 silently ignores a `--json-schema`
/// whose `$schema` is draft 2020-12 (what `schemars` writes) and then offers no
/// `StructuredOutput` tool; the APIs do not need it either. Smithers validates the reply against
/// the full schema regardless.
pub(crate) fn native_schema(schema: &Value) -> Option<Value> {
    let is_object = schema.get("type").and_then(Value::as_str) == Some("object")
        || schema.get("properties").is_some();
    if !is_object {
        return None;
    }
    let mut schema = schema.clone();
    if let Some(map) = schema.as_object_mut() {
        map.remove("$schema");
    }
    Some(schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_object_schemas_without_the_draft_uri() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"a": {"type": "string"}}
        });
        assert_eq!(
            native_schema(&schema),
            Some(json!({"type": "object", "properties": {"a": {"type": "string"}}}))
        );
        assert!(native_schema(&json!({"properties": {}})).is_some());
        assert_eq!(native_schema(&json!({"type": "string"})), None);
        assert_eq!(native_schema(&Value::Null), None);
    }
}
