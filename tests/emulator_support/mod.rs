//! Helpers for the emulator tests: a real emulator on port 0 in a temp folder, and a small
//! signed client built on reqwest and `vagonfs::api::auth` (deliberately not the project's
//! HTTP client, so these tests check the server against the contract alone).

#![allow(dead_code)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use vagonfs::api::API_PREFIX;
use vagonfs::api::auth::authorization;
use vagonfs::emulator::{EmulatorConfig, RunningEmulator, start};

pub const KEY: &str = "demo-key";
pub const SECRET: &str = "demo-secret";
pub const MIB: usize = 1024 * 1024;

/// An emulator in its own temp folder.
pub struct TestEmulator {
    pub emu: Option<RunningEmulator>,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

impl TestEmulator {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut EmulatorConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = EmulatorConfig::new(dir.path().join("data"));
        tweak(&mut cfg);
        let emu = start(cfg).await.expect("emulator starts");
        let client = Client::new(&emu.base_url());
        TestEmulator {
            emu: Some(emu),
            dir,
            client,
        }
    }

    pub fn emu(&self) -> &RunningEmulator {
        self.emu.as_ref().expect("running")
    }

    pub async fn stop(&mut self) {
        if let Some(emu) = self.emu.take() {
            emu.shutdown().await;
        }
    }

    /// Stop and start again on the same data folder.
    pub async fn restart(&mut self) {
        self.stop().await;
        let emu = start(EmulatorConfig::new(self.dir.path().join("data")))
            .await
            .expect("restart");
        self.client = Client::new(&emu.base_url());
        self.emu = Some(emu);
    }
}

/// A response: status and JSON body (Null when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

/// A signed client of the API.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Client {
            http: vagonfs_api::http::tls::client_builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("reqwest client"),
            base: base.to_string(),
        }
    }

    /// Send with an explicit Authorization value (or none); `path_and_query` is under the prefix.
    pub async fn send_raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        auth: Option<String>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{API_PREFIX}{path_and_query}", self.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        if !body.is_empty() {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body read");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
        }
    }

    /// The signature header for a request (path without query, as the contract signs it).
    pub fn sign(method: &Method, path_and_query: &str, body: &[u8]) -> String {
        let path = path_and_query.split('?').next().unwrap_or_default();
        authorization(
            KEY,
            SECRET,
            method.as_str(),
            &format!("{API_PREFIX}{path}"),
            body,
        )
    }

    /// A correctly signed request.
    pub async fn call(&self, method: Method, path_and_query: &str, body: Option<Value>) -> Answer {
        let bytes = body
            .map(|b| serde_json::to_vec(&b).expect("json"))
            .unwrap_or_default();
        let auth = Self::sign(&method, path_and_query, &bytes);
        self.send_raw(method, path_and_query, bytes, Some(auth))
            .await
    }

    pub async fn get(&self, path_and_query: &str) -> Answer {
        self.call(Method::GET, path_and_query, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    /// Create a folder; returns its id.
    pub async fn mkdir(&self, parent: u64, name: &str, machine: Option<u64>) -> u64 {
        let a = self
            .post(
                "/files",
                json!({"file_name": name, "object_type": "directory", "parent_id": parent, "machine_id": machine}),
            )
            .await;
        assert_eq!(a.status, 200, "mkdir {name}: {:?}", a.body);
        a.body["id"].as_u64().expect("numeric id")
    }

    /// Begin a file upload; the raw answer.
    pub async fn begin(
        &self,
        parent: u64,
        name: &str,
        size: usize,
        chunk_mb: u64,
        overwrite: bool,
    ) -> Answer {
        self.post(
            "/files",
            json!({"file_name": name, "object_type": "file", "content_type": "application/octet-stream",
                   "size": size, "chunk_size": chunk_mb, "overwrite": overwrite, "parent_id": parent}),
        )
        .await
    }

    /// PUT one part; returns (status, etag).
    pub async fn put_part(&self, url: &str, bytes: Vec<u8>) -> (u16, Option<String>) {
        let resp = self
            .http
            .put(url)
            .body(bytes)
            .send()
            .await
            .expect("part sent");
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (resp.status().as_u16(), etag)
    }

    /// Upload `bytes` in `chunk_mb` parts (in parallel) and complete; returns the file id.
    pub async fn upload_in(
        &self,
        parent: u64,
        name: &str,
        bytes: &[u8],
        chunk_mb: u64,
        overwrite: bool,
    ) -> u64 {
        let a = self
            .begin(parent, name, bytes.len(), chunk_mb, overwrite)
            .await;
        assert_eq!(a.status, 200, "create {name}: {:?}", a.body);
        let id = a.body["id"].as_u64().expect("id");
        let urls: Vec<String> = a.body["upload_urls"]
            .as_array()
            .expect("upload_urls")
            .iter()
            .map(|u| u.as_str().expect("url").to_string())
            .collect();
        let chunk = chunk_mb as usize * MIB;
        let puts = urls.iter().enumerate().map(|(i, url)| {
            let start = (i * chunk).min(bytes.len());
            let end = ((i + 1) * chunk).min(bytes.len());
            self.put_part(url, bytes[start..end].to_vec())
        });
        let results = futures::future::join_all(puts).await;
        let parts: Vec<Value> = results
            .into_iter()
            .enumerate()
            .map(|(i, (status, etag))| {
                assert_eq!(status, 200, "part {}", i + 1);
                json!({"part_number": i + 1, "etag": etag.expect("etag")})
            })
            .collect();
        let done = self
            .post(&format!("/files/{id}/complete"), json!({ "parts": parts }))
            .await;
        assert_eq!(done.status, 200, "complete {name}: {:?}", done.body);
        id
    }

    pub async fn upload(&self, parent: u64, name: &str, bytes: &[u8]) -> u64 {
        self.upload_in(parent, name, bytes, 1, false).await
    }

    /// Every item of a shared folder, via pagination (names).
    pub async fn names(&self, parent: u64) -> Vec<String> {
        let a = self
            .get(&format!("/files?parent_id={parent}&per_page=100"))
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f["attributes"]["name"].as_str().expect("name").to_string())
            .collect()
    }

    /// A fresh link to a file's bytes.
    pub async fn link(&self, id: u64) -> String {
        let a = self.get(&format!("/files/{id}/download")).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body["url"].as_str().expect("url").to_string()
    }

    /// GET a presigned URL, optionally with a Range header.
    pub async fn fetch(
        &self,
        url: &str,
        range: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self.http.get(url);
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        let resp = req.send().await.expect("fetch sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (
            status,
            headers,
            resp.bytes().await.expect("fetch body").to_vec(),
        )
    }

    /// A test hook under `/_emulator/`.
    pub async fn hook(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}/_emulator/{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("hook sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
        }
    }
}

/// Deterministic bytes (a simple LCG), different per seed.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}
