//! Scalars from the wire: integers that arrive as numbers or strings of digits, codes, flags,
//! dates in many shapes, and bounded snippets of text.
//!
//! Subtle cases: an integral float is accepted only up to 2^53 (exact); a value above
//! [`MAX_SANE_VALUE`] is refused so that sizes fit an `off_t`; id 0 is no id; a timestamp above
//! 1e11 is milliseconds; a date without a zone is UTC; an unreadable date is `None`, not an
//! error; a snippet cuts on a character boundary.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{MAX_SANE_VALUE, WireError, WireResult};

/// Largest float that still holds an exact integer (2^53); integral floats above are refused.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// Timestamps above this are taken as milliseconds, below as seconds (1e11 s is year 5138).
const UNIX_MILLIS_THRESHOLD: u64 = 100_000_000_000;

/// A non-negative integer sent as a JSON number or a string of digits, at most
/// [`MAX_SANE_VALUE`]. `what` names the field in the error.
pub fn value_to_u64(v: &Value, what: &str) -> WireResult<u64> {
    let n = match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u
            } else if n.as_i64().is_some() {
                return Err(WireError::new(format!("{what} is negative ({n})")));
            } else {
                match n.as_f64() {
                    Some(f)
                        if f.is_finite()
                            && f.fract() == 0.0
                            && (0.0..=MAX_EXACT_FLOAT).contains(&f) =>
                    {
                        // Exact: integral and below 2^53.
                        f as u64
                    }
                    _ => {
                        return Err(WireError::new(format!(
                            "{what} is not a usable integer ({n})"
                        )));
                    }
                }
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WireError::new(format!(
                    "{what} is not an integer ({})",
                    snippet(s, 40)
                )));
            }
            t.parse::<u64>().map_err(|_| {
                WireError::new(format!("{what} is out of range ({})", snippet(s, 40)))
            })?
        }
        other => {
            return Err(WireError::new(format!(
                "{what} has the wrong type ({})",
                type_name(other)
            )));
        }
    };
    if n > MAX_SANE_VALUE {
        return Err(WireError::new(format!("{what} is out of range ({n})")));
    }
    Ok(n)
}

/// An id: like [`value_to_u64`], and not 0 (0 means "the root" in this API).
pub fn value_to_id(v: &Value, what: &str) -> WireResult<u64> {
    match value_to_u64(v, what)? {
        0 => Err(WireError::new(format!("{what} is 0"))),
        n => Ok(n),
    }
}

/// A `client_code`: a number or a string of digits (may be any width, 200, 404, 4710).
pub fn value_to_code(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean sent as `true`/`false`, `"true"`/`"false"`, `1`/`0`.
pub(super) fn value_to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Parse a date the way the API might send it (see the module note). `None` when unreadable.
pub fn parse_date(v: &Value) -> Option<SystemTime> {
    match v {
        Value::String(s) => parse_date_str(s.trim()),
        Value::Number(_) => {
            let n = value_to_u64(v, "date").ok()?;
            let d = if n >= UNIX_MILLIS_THRESHOLD {
                Duration::from_millis(n)
            } else {
                Duration::from_secs(n)
            };
            UNIX_EPOCH.checked_add(d)
        }
        _ => None,
    }
}

pub(super) fn parse_date_str(s: &str) -> Option<SystemTime> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    let utc: DateTime<Utc> = if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        d.with_timezone(&Utc)
    } else if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        d.with_timezone(&Utc)
    } else if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%z") {
        d.with_timezone(&Utc)
    } else {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
            .ok()?;
        naive.and_utc()
    };
    let secs = utc.timestamp();
    let nanos = utc.timestamp_subsec_nanos();
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// At most `max` characters of `s`, control characters replaced, `…` when cut. For error
/// messages and logs built from server text.
pub fn snippet(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A presigned URL must be an absolute http(s) URL.
pub(super) fn check_url(s: &str, what: &str) -> WireResult<String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(s.to_string()),
        _ => Err(WireError::new(format!("{what} is not an http(s) URL"))),
    }
}
