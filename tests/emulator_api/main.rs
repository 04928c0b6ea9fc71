//! The emulator's API against the contract: authentication, listings and pagination, the upload
//! flow, conflicts, quota, delete, downloads and zips, machines and their live disk, the test
//! hooks. Each test runs a real emulator on port 0 in its own temp folder.

#[path = "../emulator_support/mod.rs"]
mod emulator_support;

mod downloads;
mod listings;
mod machines;
mod signing;
mod storage;
mod uploads;

use std::io::Read;

use emulator_support::{Client, KEY, MIB, SECRET, TestEmulator, pattern};
use reqwest::Method;
use serde_json::{Value, json};
use vagonfs::api::API_PREFIX;
use vagonfs::api::auth::sign;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
