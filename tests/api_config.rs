//! Credentials loading: precedence, file permission refusal, and the secret never shown.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vagonfs::config::{ConfigError, Credentials, DEFAULT_API_URL, load_with};

const SECRET: &str = "s3cr3t-sentinel-value";

fn write_creds(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn file_body(key: &str) -> String {
    format!("api_url = \"http://127.0.0.1:8080\"\napi_key = \"{key}\"\napi_secret = \"{SECRET}\"\n")
}

/// An environment made of the given pairs only.
fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

#[test]
fn explicit_file_wins_over_env_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let explicit = write_creds(
        dir.path(),
        "explicit.toml",
        &file_body("from-explicit"),
        0o600,
    );
    write_creds(
        dir.path(),
        "xdg/vagonfs/config.toml",
        &file_body("from-config"),
        0o600,
    );
    let env = env_of(vec![
        ("VAGON_API_KEY", "from-env".into()),
        ("VAGON_API_SECRET", "env-secret".into()),
        (
            "XDG_CONFIG_HOME",
            dir.path().join("xdg").display().to_string(),
        ),
    ]);
    let c = load_with(Some(&explicit), &env).unwrap().unwrap();
    assert_eq!(c.api_key, "from-explicit");
    assert_eq!(c.api_url, "http://127.0.0.1:8080");
    assert_eq!(c.api_secret, SECRET);
}

#[test]
fn env_wins_over_config_file_and_defaults_the_url() {
    let dir = tempfile::tempdir().unwrap();
    write_creds(
        dir.path(),
        "xdg/vagonfs/config.toml",
        &file_body("from-config"),
        0o600,
    );
    let xdg = dir.path().join("xdg").display().to_string();
    let env = env_of(vec![
        ("VAGON_API_KEY", "from-env".into()),
        ("VAGON_API_SECRET", "env-secret".into()),
        ("XDG_CONFIG_HOME", xdg.clone()),
    ]);
    let c = load_with(None, &env).unwrap().unwrap();
    assert_eq!(
        (c.api_key.as_str(), c.api_url.as_str()),
        ("from-env", DEFAULT_API_URL)
    );
    let env = env_of(vec![
        ("VAGON_API_KEY", "from-env".into()),
        ("VAGON_API_SECRET", "env-secret".into()),
        ("VAGON_API_URL", "http://127.0.0.1:9999".into()),
        ("XDG_CONFIG_HOME", xdg),
    ]);
    assert_eq!(
        load_with(None, &env).unwrap().unwrap().api_url,
        "http://127.0.0.1:9999"
    );
}

#[test]
fn config_file_under_xdg_or_home() {
    let dir = tempfile::tempdir().unwrap();
    write_creds(
        dir.path(),
        "xdg/vagonfs/config.toml",
        &file_body("from-xdg"),
        0o600,
    );
    write_creds(
        dir.path(),
        "home/.config/vagonfs/config.toml",
        &file_body("from-home"),
        0o400,
    );
    let home = dir.path().join("home").display().to_string();
    let xdg = dir.path().join("xdg").display().to_string();
    let env = env_of(vec![("HOME", home.clone()), ("XDG_CONFIG_HOME", xdg)]);
    assert_eq!(load_with(None, &env).unwrap().unwrap().api_key, "from-xdg");
    let env = env_of(vec![("HOME", home)]);
    assert_eq!(load_with(None, &env).unwrap().unwrap().api_key, "from-home");
}

#[test]
fn nothing_configured_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_of(vec![("HOME", dir.path().display().to_string())]);
    assert!(load_with(None, &env).unwrap().is_none());
    // Empty variables count as unset.
    let env = env_of(vec![
        ("HOME", dir.path().display().to_string()),
        ("VAGON_API_KEY", String::new()),
        ("VAGON_API_SECRET", " ".into()),
    ]);
    assert!(load_with(None, &env).unwrap().is_none());
}

#[test]
fn readable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o666] {
        let path = write_creds(
            dir.path(),
            &format!("c{mode:o}.toml"),
            &file_body("k"),
            mode,
        );
        let err = load_with(Some(&path), &env_of(vec![])).unwrap_err();
        assert!(
            matches!(err, ConfigError::InsecurePermissions { .. }),
            "{mode:o}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        assert!(!msg.contains(SECRET));
    }
    // The default config file is checked the same way.
    write_creds(
        dir.path(),
        "xdg/vagonfs/config.toml",
        &file_body("k"),
        0o644,
    );
    let env = env_of(vec![(
        "XDG_CONFIG_HOME",
        dir.path().join("xdg").display().to_string(),
    )]);
    assert!(matches!(
        load_with(None, &env),
        Err(ConfigError::InsecurePermissions { .. })
    ));
}

#[test]
fn missing_or_bad_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    assert!(matches!(
        load_with(Some(&missing), &env_of(vec![])),
        Err(ConfigError::Read { .. })
    ));
    let bad = write_creds(
        dir.path(),
        "bad.toml",
        &format!("api_key = \"k\"\napi_secret = {SECRET}\n"),
        0o600,
    );
    let err = load_with(Some(&bad), &env_of(vec![])).unwrap_err();
    assert!(matches!(err, ConfigError::BadToml { .. }));
    assert!(!err.to_string().contains(SECRET), "{err}");
    let half = write_creds(dir.path(), "half.toml", "api_key = \"k\"\n", 0o600);
    let err = load_with(Some(&half), &env_of(vec![])).unwrap_err();
    assert!(
        err.to_string().contains("missing key `api_secret`"),
        "{err}"
    );
    let url = write_creds(
        dir.path(),
        "url.toml",
        &format!("api_url = \"ftp://x\"\napi_key = \"k\"\napi_secret = \"{SECRET}\"\n"),
        0o600,
    );
    let err = load_with(Some(&url), &env_of(vec![])).unwrap_err();
    assert!(matches!(err, ConfigError::BadUrl { .. }), "{err}");
    let env = env_of(vec![("VAGON_API_SECRET", SECRET.into())]);
    let err = load_with(None, &env).unwrap_err();
    assert!(err.to_string().contains("VAGON_API_KEY"), "{err}");
    assert!(!err.to_string().contains(SECRET));
}

#[test]
fn the_secret_is_redacted_in_debug() {
    let c = Credentials::new("https://api.vagon.io", "key", SECRET).unwrap();
    assert!(!format!("{c:?}").contains(SECRET));
    assert!(!format!("{c:#?}").contains(SECRET));
    let api = vagonfs::api::http::HttpFilesApi::new(c, Default::default()).unwrap();
    assert!(!format!("{api:?}").contains(SECRET));
}

#[test]
fn help_never_shows_the_secret_from_the_environment() {
    let bin = env!("CARGO_BIN_EXE_vagonfs");
    for args in [
        vec!["--help"],
        vec!["mount", "--help"],
        vec!["emulator", "--help"],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .env("VAGON_API_SECRET", SECRET)
            .env("VAGON_API_KEY", "key")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.is_empty(), "{args:?} printed nothing");
        assert!(!text.contains(SECRET), "{args:?} shows the secret");
    }
}
