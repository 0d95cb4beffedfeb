//! JSON values ↔ DynamoDB attribute values, so rows are plain serde types stored as native
//! attributes (a number is `N`, a string `S`), which conditions and updates can address.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Number, Value};

/// A serde value (an object) as an item.
pub fn to_item(value: &Value) -> HashMap<String, AttributeValue> {
    match value {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), to_attribute(v)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// One JSON value as an attribute.
pub fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(to_attribute).collect()),
        Value::Object(map) => AttributeValue::M(
            map.iter()
                .map(|(k, v)| (k.clone(), to_attribute(v)))
                .collect(),
        ),
    }
}

/// An item as a JSON object (for serde to read back).
pub fn from_item(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), from_attribute(v)))
            .collect::<Map<_, _>>(),
    )
}

fn from_attribute(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(n) => parse_number(n),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(items) => Value::Array(items.iter().map(from_attribute).collect()),
        AttributeValue::M(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), from_attribute(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

fn parse_number(n: &str) -> Value {
    if let Ok(u) = n.parse::<u64>() {
        return Value::Number(u.into());
    }
    if let Ok(i) = n.parse::<i64>() {
        return Value::Number(i.into());
    }
    n.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let value = serde_json::json!({
            "s": "x", "n": 18446744073709551615u64, "neg": -3, "f": 0.5, "b": true,
            "l": [1, "two"], "m": {"k": "v"},
        });
        assert_eq!(from_item(&to_item(&value)), value);
    }

    #[test]
    fn nulls_are_left_out() {
        let item = to_item(&serde_json::json!({"a": null, "b": 1}));
        assert_eq!(item.len(), 1);
    }
}
