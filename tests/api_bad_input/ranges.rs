//! Presigned URLs: parts keep their ETag and carry no Authorization; ranges and streams cut short are resumed; short or misplaced bodies are errors.

use super::*;

#[tokio::test]
async fn part_upload_keeps_the_etag_and_sends_no_authorization() {
    let router = Router::new()
        .route(
            "/part/ok",
            put(|headers: HeaderMap, body: Bytes| async move {
                assert!(
                    headers.get(header::AUTHORIZATION).is_none(),
                    "presigned: no HMAC"
                );
                assert_eq!(&body[..], b"part bytes");
                (
                    StatusCode::OK,
                    [(header::ETAG, "\"9e107d9d372bb6826bd81d3542a419d6\"")],
                    "",
                )
            }),
        )
        .route("/part/noetag", put(|| async { StatusCode::OK }))
        .route(
            "/part/expired",
            put(|| async { (StatusCode::FORBIDDEN, "<Error>AccessDenied</Error>") }),
        );
    let base = spawn(router).await;
    let api = client(&base);
    let etag = api
        .upload_part(
            &format!("{base}/part/ok?X-Sig=abc"),
            Bytes::from_static(b"part bytes"),
        )
        .await
        .unwrap();
    assert_eq!(etag, "\"9e107d9d372bb6826bd81d3542a419d6\"");
    let err = api
        .upload_part(&format!("{base}/part/noetag"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed);
    let err = api
        .upload_part(
            &format!("{base}/part/expired?X-Sig=secret-sig"),
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::LinkRefused { status: 403 }));
    assert!(!err.to_string().contains("secret-sig"));
}

const OBJECT_LEN: usize = 100_000;

fn object() -> Vec<u8> {
    (0..OBJECT_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

fn requested_range(headers: &HeaderMap) -> (usize, Option<usize>) {
    let v = headers.get(header::RANGE).unwrap().to_str().unwrap();
    let (a, b) = v.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
    (
        a.parse().unwrap(),
        if b.is_empty() {
            None
        } else {
            Some(b.parse::<usize>().unwrap() + 1)
        },
    )
}

/// A ranged GET server whose first answer is cut after half its body.
/// The ranges a test server was asked for, in order.
type SeenRanges = Arc<Mutex<Vec<(usize, Option<usize>)>>>;

fn cutting_server(ranges: SeenRanges) -> Router {
    let calls = Arc::new(AtomicU32::new(0));
    Router::new().route(
        "/obj",
        get(move |headers: HeaderMap| {
            let ranges = ranges.clone();
            let calls = calls.clone();
            async move {
                let data = object();
                let (start, end) = requested_range(&headers);
                let end = end.unwrap_or(OBJECT_LEN).min(OBJECT_LEN);
                ranges.lock().unwrap().push((start, Some(end)));
                let body = data[start..end].to_vec();
                let len = body.len();
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                let stream_body = if first {
                    // Half the body goes out, then the connection breaks.
                    let half = Bytes::from(body[..len / 2].to_vec());
                    let cut = futures::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Err(std::io::Error::other("cut"))
                    });
                    Body::from_stream(futures::stream::once(async { Ok(half) }).chain(cut))
                } else {
                    Body::from(body)
                };
                Response::builder()
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{}/{OBJECT_LEN}", end - 1),
                    )
                    .header(header::CONTENT_LENGTH, len)
                    .body(stream_body)
                    .unwrap()
            }
        }),
    )
}

#[tokio::test]
async fn a_range_cut_short_is_resumed_for_the_rest() {
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let base = spawn(cutting_server(ranges.clone())).await;
    let api = client(&base);
    let got = api
        .get_range(&format!("{base}/obj?sig=1"), 1000..81_000)
        .await
        .unwrap();
    assert_eq!(&got[..], &object()[1000..81_000]);
    let ranges = ranges.lock().unwrap();
    assert_eq!(ranges.len(), 2);
    assert_eq!(ranges[0], (1000, Some(81_000)));
    assert_eq!(
        ranges[1],
        (41_000, Some(81_000)),
        "the retry asks only for the missing bytes"
    );
}

#[tokio::test]
async fn a_stream_cut_short_is_resumed() {
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let base = spawn(cutting_server(ranges.clone())).await;
    let api = client(&base);
    let mut s = api.get_stream(&format!("{base}/obj"), 10).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = s.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, &object()[10..]);
    let ranges = ranges.lock().unwrap();
    assert_eq!(ranges.len(), 2);
    assert_eq!(ranges[0].0, 10);
    assert!(
        ranges[1].0 > 10,
        "resumed past the bytes already received: {ranges:?}"
    );
}

#[tokio::test]
async fn short_or_misplaced_bodies_are_errors_never_short_data() {
    let router = Router::new()
        // 200 with a body shorter than the range asked.
        .route(
            "/short200",
            get(|| async { (StatusCode::OK, vec![1u8; 10]) }),
        )
        // 206 for an object that ends before the range does.
        .route(
            "/clamped",
            get(|| async {
                Response::builder()
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, "bytes 0-49/50")
                    .body(Body::from(vec![1u8; 50]))
                    .unwrap()
            }),
        )
        // 206 starting at the wrong offset.
        .route(
            "/elsewhere",
            get(|| async {
                Response::builder()
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, "bytes 0-99/1000")
                    .body(Body::from(vec![1u8; 100]))
                    .unwrap()
            }),
        )
        // 200 with the whole (small) object: sliced.
        .route("/full", get(|| async { (StatusCode::OK, object()) }))
        .route("/gone", get(|| async { StatusCode::FORBIDDEN }));
    let base = spawn(router).await;
    let api = client(&base);
    let err = api
        .get_range(&format!("{base}/short200"), 0..100)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed, "{err}");
    let err = api
        .get_range(&format!("{base}/clamped"), 0..100)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed, "{err}");
    let err = api
        .get_range(&format!("{base}/elsewhere"), 500..600)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed, "{err}");
    let got = api
        .get_range(&format!("{base}/full"), 500..1500)
        .await
        .unwrap();
    assert_eq!(&got[..], &object()[500..1500]);
    let err = api
        .get_range(&format!("{base}/gone"), 0..10)
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::LinkRefused { status: 403 }));
    assert!(matches!(
        api.get_stream(&format!("{base}/gone"), 0).await,
        Err(ApiError::LinkRefused { .. })
    ));
    assert!(
        api.get_range(&format!("{base}/full"), 5..5)
            .await
            .unwrap()
            .is_empty()
    );
}
