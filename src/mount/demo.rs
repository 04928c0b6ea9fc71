//! The embedded default: with no credentials configured, `vagonfs mount DIR` runs the emulator
//! in-process on 127.0.0.1 (any free port), keeps its data in `$XDG_DATA_HOME/vagonfs/demo`
//! (`~/.local/share/vagonfs/demo`), and fills it with a small demo tree on first use.
//!
//! The tree is made through the Files API like any client would (create, upload parts,
//! complete), never by writing the emulator's files. It holds a README.txt explaining the demo,
//! a few folders and text files, a PNG image generated here, one 64 MiB file of deterministic
//! bytes ([`fill_pattern`]), and a welcome file on each demo machine.
//!
//! Subtle cases: seeding is idempotent (a folder already there is reused, a file already there
//! with the right size is kept), so an interrupted seed simply resumes on the next mount; a
//! marker file written only after the whole tree is complete means a finished seed never runs
//! again, even if the user later deletes demo files. The API key pair is random per run, so no
//! other local user can guess it and write into the demo storage while it is mounted.

use std::ffi::OsString;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::info;

use super::MountError;
use super::client::connect;
use crate::api::paging::{list_all, list_all_machines};
use crate::api::{ApiError, ApiResult, CompletedPart, CreateRequest, FilesApi, ObjectType, Space};
use crate::config::Credentials;
use crate::daemon::metrics::Metrics;
use crate::emulator::{EmulatorConfig, RunningEmulator};

/// Machines the demo organization has.
pub const DEMO_MACHINES: u32 = 2;
/// Storage quota of each demo storage, bytes (10 GiB).
pub const DEMO_QUOTA_BYTES: u64 = 10 * 1024 * 1024 * 1024;
/// Validity of the demo's download links (the service's 15 minutes).
pub const DEMO_LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// Size of the big demo file, bytes.
pub const BIG_FILE_SIZE: u64 = 64 * 1024 * 1024;
/// Path of the big demo file in the shared storage.
pub const BIG_FILE_PATH: &str = "Media/sample-64MiB.bin";
/// Part size asked for when seeding, MiB (bounds the memory a part takes).
const SEED_CHUNK_MIB: u64 = 16;
const MIB: u64 = 1024 * 1024;
/// The marker of a complete seed, inside the data folder; its content names the tree version.
pub const SEED_MARKER: &str = ".vagonfs-demo-seeded";
const SEED_VERSION: &str = "vagonfs demo tree v1\n";
/// Seed of the big file's deterministic bytes.
const PATTERN_SEED: u64 = 0x5641_474f_4e46_5321; // "VAGONFS!"
/// Size of the demo image, pixels.
const PNG_WIDTH: u32 = 160;
const PNG_HEIGHT: u32 = 96;

/// A running demo backend.
pub struct Demo {
    pub url: String,
    pub data_dir: PathBuf,
    pub api: Arc<dyn FilesApi>,
    pub emulator: RunningEmulator,
}

/// `$XDG_DATA_HOME/vagonfs/demo`, else `$HOME/.local/share/vagonfs/demo`.
pub fn data_dir() -> Result<PathBuf, MountError> {
    data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

/// [`data_dir`] from the two variables' values. A relative XDG_DATA_HOME is ignored, as the
/// XDG spec says.
fn data_dir_from(
    xdg_data_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, MountError> {
    let xdg = xdg_data_home.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = match (xdg, home.filter(|h| !h.is_empty())) {
        (Some(dir), _) => dir,
        (None, Some(home)) => PathBuf::from(home).join(".local").join("share"),
        (None, None) => {
            return Err(MountError::Demo(
                "neither XDG_DATA_HOME nor HOME is set: no place for the demo data".into(),
            ));
        }
    };
    Ok(base.join("vagonfs").join("demo"))
}

/// Start the demo emulator and seed it if needed; its client is metered into `metrics`.
pub async fn start(metrics: &Arc<Metrics>) -> Result<Demo, MountError> {
    let data_dir = data_dir()?;
    std::fs::create_dir_all(&data_dir)
        .map_err(|err| MountError::Demo(format!("{}: {err}", data_dir.display())))?;
    let api_key = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let api_secret = uuid::Uuid::new_v4().simple().to_string();
    let emulator = crate::emulator::start(EmulatorConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        api_key: api_key.clone(),
        api_secret: api_secret.clone(),
        machines: DEMO_MACHINES,
        quota_bytes: DEMO_QUOTA_BYTES,
        link_ttl: DEMO_LINK_TTL,
        ..EmulatorConfig::new(data_dir.clone())
    })
    .await
    .map_err(|err| MountError::Demo(format!("{err:#}")))?;
    let url = emulator.base_url();
    let creds = Credentials::new(url.clone(), api_key, api_secret)
        .map_err(|err| MountError::Demo(err.to_string()))?;
    let api = connect(creds, metrics, None)?;

    let marker = data_dir.join(SEED_MARKER);
    if !marker.exists() {
        info!("seeding the demo tree in {}", data_dir.display());
        seed(api.as_ref(), &data_dir)
            .await
            .map_err(|err| MountError::Demo(format!("seeding the demo tree: {err}")))?;
        std::fs::write(&marker, SEED_VERSION)
            .map_err(|err| MountError::Demo(format!("{}: {err}", marker.display())))?;
        info!("demo tree ready");
    }
    Ok(Demo {
        url,
        data_dir,
        api,
        emulator,
    })
}

/// What a demo file holds.
enum Content {
    Bytes(Vec<u8>),
    /// [`fill_pattern`] bytes of this size.
    Pattern(u64),
}

impl Content {
    fn size(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Pattern(size) => *size,
        }
    }

    fn fill(&self, offset: u64, buf: &mut [u8]) {
        match self {
            Content::Bytes(b) => {
                // Callers stay within size(); offsets fit in usize since the bytes are in memory.
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let end = start.saturating_add(buf.len()).min(b.len());
                buf[..end - start].copy_from_slice(&b[start..end]);
            }
            Content::Pattern(_) => fill_pattern(offset, buf),
        }
    }
}

/// Create the demo tree (what is already there is kept).
async fn seed(api: &dyn FilesApi, data_dir: &std::path::Path) -> ApiResult<()> {
    let shared = Space::Shared;
    let readme = readme_text(data_dir);
    ensure_file(
        api,
        shared,
        None,
        "README.txt",
        "text/plain",
        Content::Bytes(readme.into_bytes()),
    )
    .await?;

    let documents = ensure_dir(api, shared, None, "Documents").await?;
    ensure_file(
        api,
        shared,
        Some(documents),
        "notes.txt",
        "text/plain",
        Content::Bytes(NOTES.as_bytes().to_vec()),
    )
    .await?;
    ensure_file(
        api,
        shared,
        Some(documents),
        "shopping-list.md",
        "text/markdown",
        Content::Bytes(SHOPPING.as_bytes().to_vec()),
    )
    .await?;
    let reports = ensure_dir(api, shared, Some(documents), "Reports").await?;
    ensure_file(
        api,
        shared,
        Some(reports),
        "2025-q4-summary.csv",
        "text/csv",
        Content::Bytes(CSV.as_bytes().to_vec()),
    )
    .await?;
    ensure_dir(api, shared, Some(documents), "Empty folder").await?;

    let pictures = ensure_dir(api, shared, None, "Pictures").await?;
    let png = demo_png().map_err(|err| ApiError::InvalidRequest(format!("demo image: {err}")))?;
    ensure_file(
        api,
        shared,
        Some(pictures),
        "gradient.png",
        "image/png",
        Content::Bytes(png),
    )
    .await?;

    let (media_dir, big_name) = BIG_FILE_PATH
        .split_once('/')
        .unwrap_or(("Media", BIG_FILE_PATH));
    let media = ensure_dir(api, shared, None, media_dir).await?;
    ensure_file(
        api,
        shared,
        Some(media),
        big_name,
        "application/octet-stream",
        Content::Pattern(BIG_FILE_SIZE),
    )
    .await?;

    // Strict paging (`api::paging`): seeding must not act on a partial listing.
    for machine in list_all_machines(api).await? {
        let space = Space::Machine(machine.id);
        let desktop = ensure_dir(api, space, None, "Desktop").await?;
        let welcome = format!(
            "This folder is the storage of the demo machine \"{}\" (id {}).\n\
                 With real credentials, each of your Vagon Teams machines shows up like this.\n",
            machine.name, machine.id
        );
        ensure_file(
            api,
            space,
            Some(desktop),
            "welcome.txt",
            "text/plain",
            Content::Bytes(welcome.into_bytes()),
        )
        .await?;
    }
    Ok(())
}

/// The id of folder `name` in `parent`, created if missing.
async fn ensure_dir(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    name: &str,
) -> ApiResult<u64> {
    let existing = list_all(api, space, parent, None).await?;
    if let Some(dir) = existing
        .iter()
        .find(|e| e.name == name && e.object_type == ObjectType::Directory)
    {
        return Ok(dir.id);
    }
    let created = api
        .create(&CreateRequest::directory(space, parent, name))
        .await?;
    Ok(created.id)
}

/// Upload file `name` into `parent` unless a file of that name and size is already there.
async fn ensure_file(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    name: &str,
    content_type: &str,
    content: Content,
) -> ApiResult<()> {
    let size = content.size();
    let existing = list_all(api, space, parent, None).await?;
    if existing
        .iter()
        .any(|e| e.name == name && e.object_type == ObjectType::File && e.size == size)
    {
        return Ok(());
    }
    let created = api
        .create(&CreateRequest {
            space,
            parent_id: parent,
            name: name.to_string(),
            object_type: ObjectType::File,
            content_type: Some(content_type.to_string()),
            size: Some(size),
            chunk_size_mb: Some(SEED_CHUNK_MIB),
            overwrite: true,
        })
        .await?;
    let chunk = created
        .chunk_size_mb
        .unwrap_or(SEED_CHUNK_MIB)
        .max(1)
        .saturating_mul(MIB);
    let parts_needed = size.div_ceil(chunk).max(1);
    if created.upload_urls.len() as u64 != parts_needed {
        return Err(ApiError::Malformed {
            endpoint: "POST /files".into(),
            detail: format!(
                "{} upload URLs for {size} bytes in parts of {chunk} (expected {parts_needed})",
                created.upload_urls.len()
            ),
        });
    }
    let mut parts = Vec::with_capacity(created.upload_urls.len());
    for (index, url) in created.upload_urls.iter().enumerate() {
        let start = index as u64 * chunk;
        let end = (start + chunk).min(size);
        let len = usize::try_from(end - start)
            .map_err(|_| ApiError::InvalidRequest(format!("part of {} bytes", end - start)))?;
        let mut buf = vec![0u8; len];
        content.fill(start, &mut buf);
        let etag = api.upload_part(url, Bytes::from(buf)).await?;
        parts.push(CompletedPart {
            part_number: index as u32 + 1,
            etag,
        });
    }
    api.complete(created.id, &parts).await?;
    Ok(())
}

/// SplitMix64: a tiny, well-known mixing function; one 64-bit word per 8 bytes of offset.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The big demo file's bytes at `offset..offset + buf.len()`: deterministic and random-access,
/// so anyone can check a read of any range without the whole file.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let word = splitmix64(PATTERN_SEED ^ (pos / 8)).to_le_bytes();
        let within = (pos % 8) as usize;
        let take = (8 - within).min(buf.len() - i);
        buf[i..i + take].copy_from_slice(&word[within..within + take]);
        i += take;
        pos += take as u64;
    }
}

/// PNG file signature.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
/// IHDR: 8 bits per sample, colour type 2 (RGB), deflate, no filter method, no interlace.
const PNG_BIT_DEPTH: u8 = 8;
const PNG_COLOR_RGB: u8 = 2;

/// A small valid PNG: a colour gradient with a light "V".
pub fn demo_png() -> std::io::Result<Vec<u8>> {
    let (w, h) = (PNG_WIDTH, PNG_HEIGHT);
    let mut raw = Vec::with_capacity((h * (1 + 3 * w)) as usize);
    for y in 0..h {
        raw.push(0); // filter type: none
        for x in 0..w {
            // The two strokes of a "V" meeting at the bottom centre.
            let cx = w as i64 / 2;
            let dx = (x as i64 - cx).abs();
            let on_v = (dx - (h as i64 - 1 - y as i64) * cx / h as i64).abs() < 4;
            let pixel = if on_v {
                [245, 245, 250]
            } else {
                [(x * 255 / w) as u8, (y * 255 / h) as u8, 160]
            };
            raw.extend_from_slice(&pixel);
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw)?;
    let idat = z.finish()?;

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[PNG_BIT_DEPTH, PNG_COLOR_RGB, 0, 0, 0]);

    let mut png = PNG_SIGNATURE.to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &idat);
    png_chunk(&mut png, b"IEND", &[]);
    Ok(png)
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

fn readme_text(data_dir: &std::path::Path) -> String {
    format!(
        "Welcome to vagonfs!\n\
         \n\
         This is a DEMO. No Vagon credentials were found, so vagonfs started a local emulator of\n\
         the Vagon Files API and mounted it. Nothing here is in the cloud: the files live in\n\
         {}\n\
         \n\
         Look around: Documents/ holds a few text files, Pictures/ an image, Media/ one 64 MiB\n\
         file to try large reads. Without --shared or --machine, the mount's root shows\n\
         machines/ (each machine's storage), shared/ (the organization's shared files) and\n\
         recordings/ (session recordings).\n\
         \n\
         To mount your real Vagon Teams storage, create an API key and secret in the Vagon\n\
         Teams dashboard, then either set VAGON_API_KEY and VAGON_API_SECRET, or pass\n\
         --credentials FILE. To start the demo over, unmount and delete the folder above.\n",
        data_dir.display()
    )
}

const NOTES: &str = "Notes\n\
=====\n\
\n\
- vagonfs shows Vagon Teams storage as an ordinary folder.\n\
- Reads are fetched in ranges and cached; listings are cached for --dir-cache-ttl seconds.\n\
- Session recordings are read-only.\n";

const SHOPPING: &str = "# Shopping list\n\
\n\
- [ ] coffee\n\
- [x] a faster internet connection\n\
- [ ] more cloud machines\n";

const CSV: &str = "month,sessions,hours,storage_gib\n\
2025-10,412,1288.5,310\n\
2025-11,455,1402.0,342\n\
2025-12,389,1197.25,351\n";

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn pattern_is_random_access() {
        let mut whole = vec![0u8; 1000];
        fill_pattern(12345, &mut whole);
        for (start, len) in [(0usize, 1usize), (3, 17), (8, 8), (999, 1), (500, 300)] {
            let mut part = vec![0u8; len];
            fill_pattern(12345 + start as u64, &mut part);
            assert_eq!(part, whole[start..start + len], "at {start}+{len}");
        }
        // Not a constant or short cycle.
        assert_ne!(whole[..8], whole[8..16]);
        assert!(whole.iter().any(|&b| b != whole[0]));
    }

    #[test]
    fn png_is_well_formed() {
        let png = demo_png().unwrap();
        assert_eq!(png[..8], PNG_SIGNATURE);
        let mut pos = 8;
        let mut kinds = Vec::new();
        let mut idat = Vec::new();
        while pos < png.len() {
            let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &png[pos + 4..pos + 8];
            let data = &png[pos + 8..pos + 8 + len];
            let crc = u32::from_be_bytes(png[pos + 8 + len..pos + 12 + len].try_into().unwrap());
            let mut h = crc32fast::Hasher::new();
            h.update(kind);
            h.update(data);
            assert_eq!(
                h.finalize(),
                crc,
                "CRC of {}",
                String::from_utf8_lossy(kind)
            );
            if kind == b"IDAT" {
                idat.extend_from_slice(data);
            }
            kinds.push(String::from_utf8_lossy(kind).into_owned());
            pos += 12 + len;
        }
        assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), (PNG_HEIGHT * (1 + 3 * PNG_WIDTH)) as usize);
    }

    #[test]
    fn data_dir_follows_xdg() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            data_dir_from(some("/x/data"), some("/home/u")).unwrap(),
            PathBuf::from("/x/data/vagonfs/demo")
        );
        assert_eq!(
            data_dir_from(None, some("/home/u")).unwrap(),
            PathBuf::from("/home/u/.local/share/vagonfs/demo")
        );
        assert_eq!(
            data_dir_from(some("relative"), some("/home/u")).unwrap(),
            PathBuf::from("/home/u/.local/share/vagonfs/demo")
        );
        assert!(data_dir_from(None, None).is_err());
    }
}
