//! Objects from the wire: the parsed body, [`Resource`] (a field looked up in JSON:API
//! `attributes` first, then at the top level), the paging envelope and the item decoding loop.
//!
//! Subtle cases: a bad *shape* (not an object, the list not an array) is a [`WireError`]; one
//! bad *item* is skipped with a warning naming its index, so one broken entry does not make a
//! whole folder unreadable; a missing `next_page` is derived from `count` and the page size.

use serde_json::{Map, Value};

use super::scalar::*;
use super::{JsonObject, WireError, WireResult};

/// Parse a whole response body as a JSON object.
pub fn parse_object(body: &[u8]) -> WireResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(WireError::new(format!(
            "expected a JSON object, got {}",
            type_name(&other)
        ))),
        Err(e) => Err(WireError::new(format!("invalid JSON: {e}"))),
    }
}

/// A JSON object that may be JSON:API-wrapped: fields are looked up in `attributes` first, then
/// at the top level. `null` counts as absent.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    top: &'a Map<String, Value>,
    attributes: Option<&'a Map<String, Value>>,
}

impl<'a> Resource<'a> {
    pub fn new(top: &'a Map<String, Value>) -> Self {
        let attributes = match top.get("attributes") {
            Some(Value::Object(a)) => Some(a),
            _ => None,
        };
        Resource { top, attributes }
    }

    /// A resource from a value that must be an object.
    pub fn from_value(v: &'a Value, what: &str) -> WireResult<Self> {
        match v {
            Value::Object(m) => Ok(Resource::new(m)),
            other => Err(WireError::new(format!(
                "{what} is not an object ({})",
                type_name(other)
            ))),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let found = self
            .attributes
            .and_then(|a| a.get(key))
            .filter(|v| !v.is_null())
            .or_else(|| self.top.get(key));
        found.filter(|v| !v.is_null())
    }

    pub fn required(&self, key: &str) -> WireResult<&'a Value> {
        self.get(key)
            .ok_or_else(|| WireError::new(format!("missing field `{key}`")))
    }

    pub fn required_id(&self, key: &str) -> WireResult<u64> {
        value_to_id(self.required(key)?, key)
    }

    pub fn required_u64(&self, key: &str) -> WireResult<u64> {
        value_to_u64(self.required(key)?, key)
    }

    /// Absent → `None`; present but unusable → error.
    pub fn optional_u64(&self, key: &str) -> WireResult<Option<u64>> {
        self.get(key).map(|v| value_to_u64(v, key)).transpose()
    }

    /// Absent or unusable → `None` (for fields that are only informative).
    pub fn lenient_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| value_to_u64(v, key).ok())
    }

    pub fn required_str(&self, key: &str) -> WireResult<&'a str> {
        match self.required(key)? {
            Value::String(s) => Ok(s),
            other => Err(WireError::new(format!(
                "field `{key}` is not a string ({})",
                type_name(other)
            ))),
        }
    }

    /// Absent → `None`; present but not a string → error.
    pub fn optional_str(&self, key: &str) -> WireResult<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(WireError::new(format!(
                "field `{key}` is not a string ({})",
                type_name(other)
            ))),
        }
    }

    /// Absent → `None`; present but not an absolute http(s) URL → error.
    pub fn optional_url(&self, key: &str) -> WireResult<Option<String>> {
        self.optional_str(key)?
            .map(|u| check_url(u, key))
            .transpose()
    }

    /// Absent or not a string → `None`.
    pub fn lenient_str(&self, key: &str) -> Option<&'a str> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// The object under the first of `keys` that holds one, else `obj` itself: an answer may wrap
/// its payload (`{"download": {...}}`) or not.
pub(super) fn payload<'a>(obj: &'a JsonObject, keys: &[&str]) -> Resource<'a> {
    keys.iter()
        .find_map(|k| match obj.get(*k) {
            Some(Value::Object(inner)) => Some(Resource::new(inner)),
            _ => None,
        })
        .unwrap_or_else(|| Resource::new(obj))
}

/// The array under the first of `keys` present in `obj`. Missing → error; not an array → error.
pub(super) fn list_under<'a>(
    obj: &'a Map<String, Value>,
    keys: &[&str],
) -> WireResult<&'a Vec<Value>> {
    for key in keys {
        match obj.get(*key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => return Ok(items),
            Some(other) => {
                return Err(WireError::new(format!(
                    "field `{key}` is not an array ({})",
                    type_name(other)
                )));
            }
        }
    }
    Err(WireError::new(format!(
        "missing list (looked for {})",
        keys.join(", ")
    )))
}

/// `count`, `page`, `next_page` of a list envelope. `next_page` null, absent, `false` or 0 → last
/// page.
pub(super) struct Paging {
    pub(super) count: Option<u64>,
    pub(super) page: u32,
    pub(super) next_page: Option<u32>,
}

pub(super) fn paging(obj: &Map<String, Value>, requested_page: u32) -> WireResult<Paging> {
    let env = Resource::new(obj);
    let count = env.optional_u64("count")?;
    let page = match env.optional_u64("page")? {
        Some(p) => to_page(p, "page")?,
        None => requested_page,
    };
    let next_page = match env.get("next_page") {
        None | Some(Value::Bool(false)) => None,
        Some(v) => match value_to_u64(v, "next_page")? {
            0 => None,
            n => Some(to_page(n, "next_page")?),
        },
    };
    Ok(Paging {
        count,
        page,
        next_page,
    })
}

pub(super) fn to_page(n: u64, what: &str) -> WireResult<u32> {
    u32::try_from(n).map_err(|_| WireError::new(format!("{what} is out of range ({n})")))
}

/// Decode a list, keeping the good items and logging (then dropping) the bad ones.
pub(super) fn decode_items<T>(
    items: &[Value],
    what: &str,
    decode: impl Fn(&Value) -> WireResult<T>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match decode(item) {
            Ok(v) => out.push(v),
            Err(e) => {
                let id = match item {
                    Value::Object(m) => m.get("id").map(|v| snippet(&v.to_string(), 40)),
                    _ => None,
                };
                tracing::warn!(
                    index,
                    id = id.as_deref().unwrap_or("?"),
                    reason = %e,
                    "skipping a {what} the server sent that cannot be used"
                );
            }
        }
    }
    out
}
