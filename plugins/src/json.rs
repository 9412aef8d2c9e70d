//! A JSON object of borrowed values, written once: what a push payload is
//! built as. A `serde_json::Value` tree owns a string per key and value,
//! about two dozen allocations per push; this owns one small vector per
//! object and the output.
//!
//! Keys are kept in sorted order, as `serde_json::Map` (a `BTreeMap`)
//! keeps them, so payloads are byte for byte what they were when built as
//! `Value`s, and inserting a key twice keeps the last value, as a map does.

use serde::ser::{Serialize, SerializeMap, Serializer};

/// A value in a [`JsonObject`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonValue<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Strs(&'a [String]),
    Object(JsonObject<'a>),
}

/// A JSON object whose keys are static and values borrowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct JsonObject<'a>(Vec<(&'static str, JsonValue<'a>)>);

impl<'a> JsonObject<'a> {
    pub(crate) fn new() -> Self {
        JsonObject(Vec::new())
    }

    /// Sets `key` to `value`, replacing an earlier value of that key.
    pub(crate) fn insert(&mut self, key: &'static str, value: impl Into<JsonValue<'a>>) {
        let value = value.into();
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    /// The object as compact JSON.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        // Writing to a Vec cannot fail, and every value here serialises.
        let _ = serde_json::to_writer(&mut out, self);
        out
    }
}

impl<'a> From<&'a str> for JsonValue<'a> {
    fn from(v: &'a str) -> Self {
        JsonValue::Str(v)
    }
}

impl From<u32> for JsonValue<'_> {
    fn from(v: u32) -> Self {
        JsonValue::Int(i64::from(v))
    }
}

impl From<i32> for JsonValue<'_> {
    fn from(v: i32) -> Self {
        JsonValue::Int(i64::from(v))
    }
}

impl From<bool> for JsonValue<'_> {
    fn from(v: bool) -> Self {
        JsonValue::Bool(v)
    }
}

impl<'a> From<&'a [String]> for JsonValue<'a> {
    fn from(v: &'a [String]) -> Self {
        JsonValue::Strs(v)
    }
}

impl<'a> From<JsonObject<'a>> for JsonValue<'a> {
    fn from(v: JsonObject<'a>) -> Self {
        JsonValue::Object(v)
    }
}

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            JsonValue::Str(v) => s.serialize_str(v),
            JsonValue::Int(v) => s.serialize_i64(*v),
            JsonValue::Bool(v) => s.serialize_bool(*v),
            JsonValue::Strs(v) => v.serialize(s),
            JsonValue::Object(v) => v.serialize(s),
        }
    }
}

impl Serialize for JsonObject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    #[test]
    fn writes_what_a_serde_json_map_writes() {
        let media = vec!["audio".to_owned(), "vid\"eo".to_owned()];
        let mut inner = JsonObject::new();
        inner.insert("title", "a \"quoted\" \\ title\n");
        inner.insert("body", "ünïcødé");
        let mut o = JsonObject::new();
        o.insert("zeta", 1u32);
        o.insert("aps", inner);
        o.insert("mutable-content", 1);
        o.insert("important", true);
        o.insert("media", media.as_slice());
        o.insert("zeta", 2u32); // replaced, as in a map

        let mut m_inner = Map::new();
        m_inner.insert("title".into(), "a \"quoted\" \\ title\n".into());
        m_inner.insert("body".into(), "ünïcødé".into());
        let mut m = Map::new();
        m.insert("zeta".into(), 1.into());
        m.insert("aps".into(), m_inner.into());
        m.insert("mutable-content".into(), 1.into());
        m.insert("important".into(), true.into());
        m.insert("media".into(), media.clone().into());
        m.insert("zeta".into(), 2.into());

        assert_eq!(o.to_vec(), Value::Object(m).to_string().into_bytes());
        let back: Value = serde_json::from_slice(&o.to_vec()).unwrap();
        assert_eq!(back["media"], json!(["audio", "vid\"eo"]));
    }

    #[test]
    fn an_empty_object_is_braces() {
        assert_eq!(JsonObject::new().to_vec(), b"{}");
    }
}
