//! Authentication: the HMAC signature is checked exactly (key, secret, time window, nonce reuse).

use super::*;

#[tokio::test]
async fn hmac_signature_is_checked_exactly() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let path = format!("{API_PREFIX}/files");

    assert_eq!(c.get("/files").await.status, 200);

    let header = |secret: &str, key: &str, ts: i64, nonce: &str| {
        let sig = sign(key, secret, "GET", &path, ts, nonce, b"");
        format!("HMAC {key}:{sig}:{nonce}:{ts}")
    };
    let expect_401 = |a: emulator_support::Answer, what: &str| {
        assert_eq!(a.status, 401, "{what}: {:?}", a.body);
        assert_eq!(a.body["client_code"], 401, "{what}");
        assert!(
            a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    };

    let wrong_secret = header("not-the-secret", KEY, now_ms(), "n-wrong-secret");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(wrong_secret))
            .await,
        "wrong secret",
    );

    let unknown_key = header(SECRET, "someone-else", now_ms(), "n-unknown-key");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(unknown_key))
            .await,
        "unknown key",
    );

    let stale = header(SECRET, KEY, now_ms() - 6 * 60 * 1000, "n-stale");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(stale)).await,
        "stale timestamp",
    );
    let future = header(SECRET, KEY, now_ms() + 6 * 60 * 1000, "n-future");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(future))
            .await,
        "future timestamp",
    );
    let seconds = header(SECRET, KEY, now_ms() / 1000, "n-seconds");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(seconds))
            .await,
        "timestamp in seconds",
    );

    expect_401(
        c.send_raw(Method::GET, "/files", vec![], None).await,
        "no header",
    );
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some("Bearer abc".into()))
            .await,
        "other scheme",
    );

    // A nonce works once.
    let once = header(SECRET, KEY, now_ms(), "n-once");
    assert_eq!(
        c.send_raw(Method::GET, "/files", vec![], Some(once.clone()))
            .await
            .status,
        200
    );
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(once)).await,
        "reused nonce",
    );

    // The query is not signed; the path is.
    let signed_for_files = header(SECRET, KEY, now_ms(), "n-query");
    let a = c
        .send_raw(
            Method::GET,
            "/files?page=1&per_page=5",
            vec![],
            Some(signed_for_files),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let other_path = header(SECRET, KEY, now_ms(), "n-path");
    expect_401(
        c.send_raw(Method::GET, "/machines", vec![], Some(other_path))
            .await,
        "other path",
    );

    // The raw body bytes are signed: whitespace matters.
    let body = br#"{"file_name": "d", "object_type": "directory"}"#.to_vec();
    let auth = Client::sign(&Method::POST, "/files", &body);
    let mut altered = body.clone();
    altered.insert(1, b' ');
    expect_401(
        c.send_raw(Method::POST, "/files", altered, Some(auth))
            .await,
        "altered body",
    );
    let auth = Client::sign(&Method::POST, "/files", &body);
    assert_eq!(
        c.send_raw(Method::POST, "/files", body, Some(auth))
            .await
            .status,
        200
    );
}
