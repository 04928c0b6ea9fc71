//! Removing secrets from text that is shown or logged.
//!
//! Subtle case owned here: transport errors from the HTTP stack quote the request URL, and
//! presigned URLs carry their signature in the query string, which must never reach
//! `vagonfs status`, the metrics page or a log. The path stays: it helps diagnosis.

/// Drops the query string (and fragment) of every `http://` / `https://` URL in `text`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url_start(rest) {
        out.push_str(&rest[..start]);
        let url_and_after = &rest[start..];
        let end = url_and_after
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(url_and_after.len());
        let url = &url_and_after[..end];
        match url.find(['?', '#']) {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?[redacted]");
            }
            None => out.push_str(url),
        }
        rest = &url_and_after[end..];
    }
    out.push_str(rest);
    out
}

fn find_url_start(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_urls_cases() {
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(
            redact_urls("HTTPS://h/p?X-Sig=1 and more"),
            "HTTPS://h/p?[redacted] and more"
        );
        assert_eq!(
            redact_urls("a http://x/y#frag, b https://z/w?s=2"),
            "a http://x/y?[redacted], b https://z/w?[redacted]"
        );
        assert_eq!(
            redact_urls("plain https://host/path"),
            "plain https://host/path"
        );
    }
}
