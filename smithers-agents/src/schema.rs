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

/// [`native_schema`] rewritten for OpenAI's strict structured outputs (what Codex's
/// `--output-schema` uses): every object lists all its properties as `required` and forbids
/// others; a property that was optional accepts `null` instead (serde reads `null` as `None`);
/// keywords strict mode rejects (`default`, integer `format`s) are dropped.
pub(crate) fn strict_schema(schema: &Value) -> Option<Value> {
    let mut schema = native_schema(schema)?;
    make_strict(&mut schema);
    Some(schema)
}

fn make_strict(v: &mut Value) {
    let Some(map) = v.as_object_mut() else {
        if let Some(items) = v.as_array_mut() {
            items.iter_mut().for_each(make_strict);
        }
        return;
    };
    map.remove("default");
    let numeric = |t: &Value| matches!(t.as_str(), Some("integer" | "number"));
    let is_numeric = match map.get("type") {
        Some(Value::Array(types)) => types.iter().any(numeric),
        Some(t) => numeric(t),
        None => false,
    };
    if is_numeric {
        map.remove("format");
    }
    if matches!(map.get("properties"), Some(Value::Object(_))) {
        let required: Vec<String> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut names = Vec::new();
        if let Some(Value::Object(props)) = map.get_mut("properties") {
            for (name, p) in props.iter_mut() {
                if !required.contains(name) {
                    allow_null(p);
                }
                names.push(name.clone());
            }
        }
        map.insert(
            "required".into(),
            Value::Array(names.into_iter().map(Value::String).collect()),
        );
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for child in map.values_mut() {
        make_strict(child);
    }
}

/// Makes a property schema accept `null` as well.
fn allow_null(p: &mut Value) {
    let Some(map) = p.as_object_mut() else { return };
    match map.get_mut("type") {
        Some(Value::String(t)) if t != "null" => {
            let t = t.clone();
            map.insert("type".into(), serde_json::json!([t, "null"]));
        }
        Some(Value::Array(types)) => {
            if !types.iter().any(|t| t == "null") {
                types.push(Value::String("null".into()));
            }
        }
        _ => {
            if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                if !any
                    .iter()
                    .any(|s| s.get("type").and_then(Value::as_str) == Some("null"))
                {
                    any.push(serde_json::json!({"type": "null"}));
                }
            } else {
                let inner = std::mem::take(p);
                *p = serde_json::json!({"anyOf": [inner, {"type": "null"}]});
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_schema_requires_every_property_and_lets_optional_ones_be_null() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "summary": {"type": "string"},
                "count": {"type": "integer", "format": "int64", "default": 0},
                "files": {"type": "array", "items": {"type": "string"}, "default": []},
                "nested": {"$ref": "#/$defs/Nested"}
            },
            "required": ["summary", "nested"],
            "$defs": {"Nested": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}
        });
        assert_eq!(
            strict_schema(&schema).unwrap(),
            json!({
                "type": "object",
                "properties": {
                    "summary": {"type": "string"},
                    "count": {"type": ["integer", "null"]},
                    "files": {"type": ["array", "null"], "items": {"type": "string"}},
                    "nested": {"$ref": "#/$defs/Nested"}
                },
                "required": ["count", "files", "nested", "summary"],
                "additionalProperties": false,
                "$defs": {"Nested": {
                    "type": "object",
                    "properties": {"ok": {"type": ["boolean", "null"]}},
                    "required": ["ok"],
                    "additionalProperties": false
                }}
            })
        );
    }

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
