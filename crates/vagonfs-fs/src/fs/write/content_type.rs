//! The MIME type sent with `POST /files`, guessed from the file name's extension.
//!
//! A small table of the common types (documents, images, audio/video, archives, code) keeps
//! this dependency-free; anything else is `application/octet-stream`, which the API accepts for
//! every file. Matching is case-insensitive and uses the last extension only (`a.tar.gz` is
//! gzip); a leading dot alone (`.bashrc`) is a hidden name, not an extension.

/// What unknown extensions are sent as.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// (extension, MIME type), lower-case extensions.
const TABLE: &[(&str, &str)] = &[
    // text and documents
    ("txt", "text/plain"),
    ("log", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("tsv", "text/tab-separated-values"),
    ("html", "text/html"),
    ("htm", "text/html"),
    ("css", "text/css"),
    ("xml", "application/xml"),
    ("json", "application/json"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("toml", "application/toml"),
    ("ini", "text/plain"),
    ("pdf", "application/pdf"),
    ("rtf", "application/rtf"),
    ("doc", "application/msword"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("xls", "application/vnd.ms-excel"),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("ppt", "application/vnd.ms-powerpoint"),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("odt", "application/vnd.oasis.opendocument.text"),
    ("ods", "application/vnd.oasis.opendocument.spreadsheet"),
    // code
    ("js", "text/javascript"),
    ("mjs", "text/javascript"),
    ("ts", "text/plain"),
    ("py", "text/x-python"),
    ("rs", "text/x-rust"),
    ("c", "text/x-c"),
    ("h", "text/x-c"),
    ("cpp", "text/x-c++"),
    ("sh", "application/x-sh"),
    ("ps1", "text/plain"),
    ("bat", "text/plain"),
    // images
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("bmp", "image/bmp"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("svg", "image/svg+xml"),
    ("ico", "image/vnd.microsoft.icon"),
    ("psd", "image/vnd.adobe.photoshop"),
    ("exr", "image/x-exr"),
    ("hdr", "image/vnd.radiance"),
    // audio and video
    ("mp3", "audio/mpeg"),
    ("wav", "audio/wav"),
    ("flac", "audio/flac"),
    ("ogg", "audio/ogg"),
    ("m4a", "audio/mp4"),
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("mov", "video/quicktime"),
    ("mkv", "video/x-matroska"),
    ("webm", "video/webm"),
    ("avi", "video/x-msvideo"),
    // archives and binaries
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tgz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("7z", "application/x-7z-compressed"),
    ("rar", "application/vnd.rar"),
    ("xz", "application/x-xz"),
    ("bz2", "application/x-bzip2"),
    ("zst", "application/zstd"),
    ("exe", "application/vnd.microsoft.portable-executable"),
    ("msi", "application/x-msi"),
    ("iso", "application/x-iso9660-image"),
    // 3D and game assets common on cloud workstations
    ("fbx", "application/octet-stream"),
    ("obj", "model/obj"),
    ("gltf", "model/gltf+json"),
    ("glb", "model/gltf-binary"),
    ("stl", "model/stl"),
    ("blend", "application/x-blender"),
];

/// The MIME type for `name`, from its last extension.
pub fn guess_content_type(name: &str) -> &'static str {
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return DEFAULT_CONTENT_TYPE;
    };
    if stem.is_empty() || ext.is_empty() {
        return DEFAULT_CONTENT_TYPE;
    }
    let ext = ext.to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, t)| *t)
        .unwrap_or(DEFAULT_CONTENT_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses() {
        assert_eq!(guess_content_type("report.PDF"), "application/pdf");
        assert_eq!(guess_content_type("a.tar.gz"), "application/gzip");
        assert_eq!(guess_content_type("photo.jpeg"), "image/jpeg");
        assert_eq!(guess_content_type(".bashrc"), DEFAULT_CONTENT_TYPE);
        assert_eq!(guess_content_type("Makefile"), DEFAULT_CONTENT_TYPE);
        assert_eq!(guess_content_type("trailing."), DEFAULT_CONTENT_TYPE);
        assert_eq!(guess_content_type("x.unknownext"), DEFAULT_CONTENT_TYPE);
    }

    #[test]
    fn table_is_lowercase_and_unique() {
        for (i, (e, _)) in TABLE.iter().enumerate() {
            assert_eq!(*e, e.to_ascii_lowercase());
            assert!(!TABLE[..i].iter().any(|(o, _)| o == e), "duplicate {e}");
        }
    }
}
