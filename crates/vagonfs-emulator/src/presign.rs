//! Presigned data-plane URLs: `{base}{path}?exp={unix ms}&sig={hex}`.
//!
//! `sig` is HMAC-SHA256, keyed with a per-data-folder server key (so links survive a restart),
//! over `{METHOD}\n{path}\n{exp}`. A link is refused (403) when `exp` has passed, or when the
//! method, the path or `exp` was changed, or the signature is missing or malformed. The query may
//! carry other parameters; they are ignored (they are not part of what is signed, and change
//! nothing the server does).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::reply::now_ms;

type HmacSha256 = Hmac<Sha256>;

/// Why a presigned URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("link expired")]
    Expired,
    #[error("link signature invalid")]
    Invalid,
}

/// Signs and checks data-plane URLs.
#[derive(Clone)]
pub struct Presigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for Presigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presigner { key: <hidden> }")
    }
}

impl Presigner {
    pub fn new(key: &[u8]) -> Self {
        Presigner { key: key.to_vec() }
    }

    fn mac(&self, method: &str, path: &str, exp: i64) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// `{base}{path}?exp=..&sig=..`, valid for `ttl` from now. `path` must be URL-safe as is.
    pub fn url(&self, base: &str, method: &str, path: &str, ttl: Duration) -> String {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let exp = now_ms().saturating_add(ttl_ms);
        let sig = hex::encode(self.mac(method, path, exp).finalize().into_bytes());
        format!("{base}{path}?exp={exp}&sig={sig}")
    }

    /// Check a request's method, path and raw query string.
    pub fn check(&self, method: &str, path: &str, query: Option<&str>) -> Result<(), LinkError> {
        let mut exp = None;
        let mut sig = None;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "exp" => exp = Some(v.into_owned()),
                "sig" => sig = Some(v.into_owned()),
                _ => {}
            }
        }
        let exp: i64 = exp.and_then(|e| e.parse().ok()).ok_or(LinkError::Invalid)?;
        let sig = sig
            .and_then(|s| hex::decode(s).ok())
            .ok_or(LinkError::Invalid)?;
        self.mac(method, path, exp)
            .verify_slice(&sig)
            .map_err(|_| LinkError::Invalid)?;
        if now_ms() > exp {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (&str, &str) {
        let rest = url.strip_prefix("http://h").unwrap();
        rest.split_once('?').unwrap()
    }

    #[test]
    fn signed_url_round_trips_and_tampering_is_refused() {
        let p = Presigner::new(b"k");
        let url = p.url("http://h", "GET", "/_data/files/7", Duration::from_secs(60));
        let (path, query) = split(&url);
        assert_eq!(p.check("GET", path, Some(query)), Ok(()));
        assert_eq!(p.check("PUT", path, Some(query)), Err(LinkError::Invalid));
        assert_eq!(
            p.check("GET", "/_data/files/8", Some(query)),
            Err(LinkError::Invalid)
        );
        assert_eq!(p.check("GET", path, None), Err(LinkError::Invalid));
        let bumped = query.replacen("exp=", "exp=9", 1);
        assert_eq!(p.check("GET", path, Some(&bumped)), Err(LinkError::Invalid));
        assert_eq!(
            Presigner::new(b"other").check("GET", path, Some(query)),
            Err(LinkError::Invalid)
        );
    }

    #[test]
    fn expired_link_is_refused() {
        let p = Presigner::new(b"k");
        let url = p.url("http://h", "GET", "/x", Duration::ZERO);
        let (path, query) = split(&url);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(p.check("GET", path, Some(query)), Err(LinkError::Expired));
    }
}
