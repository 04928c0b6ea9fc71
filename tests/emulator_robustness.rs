//! The emulator under stress and over time: link expiry and tampering, injected faults and
//! resets, request stats, persistence across restarts and crash leftovers, concurrent clients,
//! and the `vagonfs emulator` command itself.

mod emulator_support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use emulator_support::{Client, TestEmulator, pattern};
use reqwest::Method;
use serde_json::json;
use vagonfs::emulator::Faults;

#[tokio::test]
async fn links_expire() {
    let t = TestEmulator::start_with(|cfg| {
        cfg.link_ttl = Duration::from_secs(1);
        cfg.upload_link_ttl = Duration::from_secs(1);
    })
    .await;
    let c = &t.client;
    let id = c.upload(0, "f", b"bytes").await;
    let link = c.link(id).await;
    assert_eq!(c.fetch(&link, None).await.0, 200);
    let pending = c.begin(0, "g", 3, 1, false).await;
    let put_url = pending.body["upload_urls"][0].as_str().unwrap().to_string();

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, _, body) = c.fetch(&link, None).await;
    assert_eq!(status, 403);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["client_code"], 403);
    assert_eq!(c.put_part(&put_url, b"abc".to_vec()).await.0, 403);
    // A fresh link works again.
    assert_eq!(c.fetch(&c.link(id).await, None).await.0, 200);
}

#[tokio::test]
async fn tampered_links_are_refused() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let a = c.upload(0, "a", b"aaa").await;
    let b = c.upload(0, "b", b"bbb").await;
    let link = c.link(a).await;
    let (path, query) = link.split_once('?').unwrap();

    let last = link.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &link[..link.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let other_file = format!(
        "{}?{query}",
        path.replace(&format!("/files/{a}"), &format!("/files/{b}"))
    );
    let exp: String = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("exp="))
        .unwrap()
        .to_string();
    let longer = link.replace(
        &format!("exp={exp}"),
        &format!("exp={}", exp.parse::<i64>().unwrap() + 3_600_000),
    );
    for bad in [
        flipped,
        other_file,
        longer,
        path.to_string(),
        format!("{path}?exp={exp}"),
    ] {
        assert_eq!(c.fetch(&bad, None).await.0, 403, "{bad}");
    }
    // A download link is not an upload link.
    assert_eq!(
        c.http
            .put(&link)
            .body("x")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        405
    );
    let upload = c.begin(0, "c", 1, 1, false).await;
    let upload_id = upload.body["id"].as_u64().unwrap();
    let put_url = upload.body["upload_urls"][0].as_str().unwrap();
    let put_as_get = put_url.replace(
        &format!("/_data/parts/{upload_id}/1?"),
        &format!("/_data/files/{upload_id}?"),
    );
    assert_ne!(put_as_get, put_url);
    assert_eq!(c.fetch(&put_as_get, None).await.0, 403);
    assert_eq!(
        c.fetch(&link, None).await.0,
        200,
        "the genuine link still works"
    );
}

#[tokio::test]
async fn injected_failures_and_throttling() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let id = c.upload(0, "f", b"data").await;
    let link = c.link(id).await;

    t.emu()
        .set_faults(Faults {
            fail_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let a = c.get("/files").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body["client_code"], 503);
    assert_eq!(
        c.fetch(&link, None).await.0,
        503,
        "the data plane fails too"
    );
    assert_eq!(
        c.hook(Method::GET, "stats", None).await.status,
        200,
        "hooks are never faulted"
    );

    t.emu()
        .set_faults(Faults {
            throttle_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let a = c.get("/files").await;
    assert_eq!(a.status, 429);
    assert_eq!(a.headers["retry-after"], "1");
    assert!(
        t.emu()
            .set_faults(Faults {
                fail_rate: 2.0,
                ..Faults::default()
            })
            .is_err()
    );

    // At runtime through the hook; half the requests fail.
    let set = c
        .hook(
            Method::POST,
            "faults",
            Some(json!({"fail_rate": 0.5, "throttle_rate": 0.0})),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["fail_rate"], 0.5);
    assert_eq!(
        c.hook(Method::POST, "faults", Some(json!({"fail_rate": 7})))
            .await
            .status,
        400
    );
    let mut ok = 0;
    let mut failed = 0;
    for _ in 0..200 {
        match c.get("/files").await.status {
            200 => ok += 1,
            503 => failed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // With p = 0.5 over 200 requests, either count being 0 has probability 2^-199.
    assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");
    c.hook(
        Method::POST,
        "faults",
        Some(json!({"fail_rate": 0.0, "latency_ms": 1})),
    )
    .await;
    assert_eq!(c.get("/files").await.status, 200);
    assert_eq!(
        t.emu().faults(),
        Faults {
            latency_ms: 1,
            ..Faults::default()
        }
    );
}

#[tokio::test]
async fn injected_resets_cut_data_transfers() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let content = pattern(300_000, 9);
    let id = c.upload(0, "f", &content).await;
    let link = c.link(id).await;
    let pending = c.begin(0, "g", 200_000, 1, false).await;
    let put_url = pending.body["upload_urls"][0].as_str().unwrap().to_string();
    let pending_id = pending.body["id"].as_u64().unwrap();

    t.emu()
        .set_faults(Faults {
            reset_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let got = async {
        let resp = c.http.get(&link).send().await?;
        resp.bytes().await
    }
    .await;
    assert!(
        got.is_err(),
        "a reset download must fail, got {:?}",
        got.map(|b| b.len())
    );
    let put = c.http.put(&put_url).body(pattern(200_000, 10)).send().await;
    assert!(
        put.is_err(),
        "a reset upload must fail, got {:?}",
        put.map(|r| r.status())
    );
    // API calls are not reset.
    assert_eq!(c.get("/files").await.status, 200);

    t.emu().set_faults(Faults::default()).unwrap();
    // The cut part was not recorded.
    let complete = c
        .post(
            &format!("/files/{pending_id}/complete"),
            json!({"parts": [{"part_number": 1, "etag": "\"x\""}]}),
        )
        .await;
    assert_eq!(complete.status, 422);
    let (status, _, body) = c.fetch(&link, None).await;
    assert_eq!(status, 200);
    assert!(body == content);
}

#[tokio::test]
async fn stats_count_requests_by_family() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let id = c.upload(0, "f", b"x").await;
    c.hook(Method::POST, "reset-stats", None).await;
    c.get("/files").await;
    c.get("/machines/1/files").await;
    c.get("/files/session-recordings").await;
    c.send_raw(Method::GET, "/files", vec![], None).await; // 401, still counted
    let link = c.link(id).await;
    c.fetch(&link, None).await;
    c.fetch(&link, Some("bytes=0-0")).await;
    let stats = c.hook(Method::GET, "stats", None).await.body;
    assert_eq!(stats["list_files"], 4);
    assert_eq!(stats["file_link"], 1);
    assert_eq!(stats["data_get"], 2);
    assert_eq!(stats["create"], 0);
    assert_eq!(t.emu().stats()["list_files"], 4);
    t.emu().reset_stats();
    assert_eq!(t.emu().stats()["data_get"], 0);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let mut t = TestEmulator::start().await;
    let content = pattern(1_500_000, 4);
    let dir = t.client.mkdir(0, "kept", None).await;
    let file = t.client.upload(dir, "kept.bin", &content).await;
    let m2 = t.client.upload_in(0, "on-machine", b"m", 1, false).await;
    let link = t.client.link(file).await;
    let pending = t.client.begin(dir, "never-completed", 5, 1, false).await;
    let pending_id = pending.body["id"].as_u64().unwrap();
    let before = t.client.get(&format!("/files?parent_id={dir}")).await.body["files"].clone();

    t.restart().await;
    let c = &t.client;
    let after = c.get(&format!("/files?parent_id={dir}")).await.body["files"].clone();
    assert_eq!(before, after, "same entries, same ids, sizes and dates");
    assert_eq!(c.names(0).await, ["kept", "on-machine"]);
    let (_, _, bytes) = c.fetch(&c.link(file).await, None).await;
    assert!(bytes == content);
    // The old link was issued on another port; its path and signature still hold.
    let port_free = link
        .split_once("/_data/")
        .map(|(_, rest)| format!("{}/_data/{rest}", c.base))
        .unwrap();
    assert_eq!(
        c.fetch(&port_free, None).await.0,
        200,
        "the signing key is kept"
    );
    // The pending upload is still not listed, and can still be completed.
    let url = pending.body["upload_urls"][0]
        .as_str()
        .unwrap()
        .split_once("/_data/")
        .unwrap()
        .1
        .to_string();
    let (status, etag) = c
        .put_part(&format!("{}/_data/{url}", c.base), b"12345".to_vec())
        .await;
    assert_eq!(status, 200);
    let done = c
        .post(
            &format!("/files/{pending_id}/complete"),
            json!({"parts": [{"part_number": 1, "etag": etag}]}),
        )
        .await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    // New ids continue the sequence.
    let newer = c.mkdir(0, "newer", None).await;
    assert!(newer > m2.max(pending_id));
}

#[tokio::test]
async fn crash_leftovers_are_cleaned_on_start() {
    let mut t = TestEmulator::start().await;
    let id = t.client.upload(0, "real", b"real bytes").await;
    t.stop().await;
    let data = t.dir.path().join("data");
    std::fs::write(data.join("blobs/orphan-blob"), b"x").unwrap();
    std::fs::write(data.join("tmp/half-written"), b"x").unwrap();
    std::fs::create_dir_all(data.join("parts/999999")).unwrap();
    std::fs::write(data.join("parts/999999/1-abc"), b"x").unwrap();
    t.restart().await;
    assert!(!data.join("blobs/orphan-blob").exists());
    assert!(!data.join("tmp/half-written").exists());
    assert!(!data.join("parts/999999").exists());
    let (status, _, bytes) = t.client.fetch(&t.client.link(id).await, None).await;
    assert_eq!((status, bytes.as_slice()), (200, b"real bytes".as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_clients() {
    let t = TestEmulator::start().await;
    let tasks: Vec<_> = (0..24u32)
        .map(|i| {
            let c: Client = t.client.clone();
            tokio::spawn(async move {
                let dir = c.mkdir(0, &format!("client-{i}"), None).await;
                let content = pattern(50_000 + i as usize * 1000, i);
                let id = c.upload(dir, "data.bin", &content).await;
                assert_eq!(c.names(dir).await, ["data.bin"]);
                let (status, _, body) = c.fetch(&c.link(id).await, Some("bytes=1000-")).await;
                assert_eq!(status, 206);
                assert!(body == content[1000..]);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    assert_eq!(t.client.get("/files?per_page=100").await.body["count"], 24);
}

/// The child process, killed if a test fails before stopping it.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_command_prints_its_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_vagonfs"))
            .args(["emulator", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vagonfs emulator"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let base = line
        .strip_prefix("vagonfs emulator listening on ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"),
        "{base}"
    );
    let c = Client::new(base);
    assert_eq!(c.get("/machines").await.status, 200);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.0.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_arguments_exit_with_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--fail-rate", "2"],
        vec!["--machines", "many"],
        vec!["--link-ttl", "0"],
        vec!["--listen", "not-an-address"],
        vec!["--api-key", "a:b"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vagonfs"))
            .arg("emulator")
            .arg("--data")
            .arg(dir.path())
            .args(&args)
            .output()
            .expect("run vagonfs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            !out.stderr.is_empty(),
            "{args:?}: a message explains the error"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
