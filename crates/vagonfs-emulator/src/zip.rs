//! Building download archives (`POST /files/download` for several files or a folder).
//!
//! The archive is written to a file (never held in memory), file members deflated and copied
//! from their blobs in a streaming way, folders as explicit directory members so that empty
//! folders survive. Members of 4 GiB or more are written with ZIP64 headers. Member paths arrive
//! already made safe by the store.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

use super::store::ZipItem;

/// Members at least this large need ZIP64 headers.
const ZIP64_THRESHOLD: u64 = u32::MAX as u64;

/// Why an archive could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ZipBuildError {
    #[error("reading {member}: {source}")]
    Member {
        member: String,
        source: std::io::Error,
    },
    #[error("writing the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
}

/// Write `items` as a zip archive to `out`; returns its size in bytes.
pub fn build(items: &[ZipItem], out: &Path) -> Result<u64, ZipBuildError> {
    let mut writer = ZipWriter::new(BufWriter::new(File::create(out)?));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for item in items {
        match &item.blob {
            None => writer.add_directory(item.path.trim_end_matches('/'), options)?,
            Some(blob) => {
                let member = |source| ZipBuildError::Member {
                    member: item.path.clone(),
                    source,
                };
                let mut src = File::open(blob).map_err(member)?;
                let len = src.metadata().map_err(member)?.len();
                writer.start_file(
                    item.path.as_str(),
                    options.large_file(len >= ZIP64_THRESHOLD),
                )?;
                std::io::copy(&mut src, &mut writer).map_err(member)?;
            }
        }
    }
    let mut file = writer.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.flush()?;
    Ok(file.metadata()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_readable_archive() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("b");
        std::fs::write(&blob, b"hello zip").unwrap();
        let items = vec![
            ZipItem {
                path: "d/".into(),
                blob: None,
            },
            ZipItem {
                path: "d/f.txt".into(),
                blob: Some(blob.clone()),
            },
            ZipItem {
                path: "empty/".into(),
                blob: None,
            },
        ];
        let out = dir.path().join("a.zip");
        let size = build(&items, &out).unwrap();
        assert_eq!(size, std::fs::metadata(&out).unwrap().len());
        let mut archive = zip::ZipArchive::new(File::open(&out).unwrap()).unwrap();
        let mut names: Vec<_> = archive.file_names().map(str::to_string).collect();
        names.sort();
        assert_eq!(names, ["d/", "d/f.txt", "empty/"]);
        let mut content = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("d/f.txt").unwrap(), &mut content)
            .unwrap();
        assert_eq!(content, "hello zip");

        let missing = vec![ZipItem {
            path: "x".into(),
            blob: Some(dir.path().join("nope")),
        }];
        assert!(matches!(
            build(&missing, &dir.path().join("m.zip")),
            Err(ZipBuildError::Member { .. })
        ));
    }
}
