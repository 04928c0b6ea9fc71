//! The one map from errors to errno.
//!
//! Exhaustive matches on purpose: a new [`FsError`] variant or [`ApiErrorKind`] does not compile
//! until it is given an errno here.

use crate::api::ApiErrorKind;

use super::FsError;

/// errno for an API error kind.
pub fn api_errno(kind: ApiErrorKind) -> i32 {
    use ApiErrorKind as K;
    match kind {
        K::NotFound => libc::ENOENT,
        K::AlreadyExists => libc::EEXIST,
        K::NoSpace => libc::ENOSPC,
        K::PermissionDenied | K::Unauthorized => libc::EACCES,
        K::RootFolder => libc::EPERM,
        K::BadRequest | K::InvalidRequest => libc::EINVAL,
        // The data the server holds or served does not add up: an I/O error for the caller.
        K::SizeMismatch | K::Malformed | K::DownloadFailed => libc::EIO,
        // A presigned link that is still refused after a refresh.
        K::LinkRefused => libc::EIO,
        K::Throttled | K::Unavailable | K::Transport => libc::EIO,
        K::Timeout => libc::ETIMEDOUT,
    }
}

/// errno for a core error.
pub fn to_errno(err: &FsError) -> i32 {
    match err {
        FsError::Api(e) => api_errno(e.kind()),
        FsError::NotFound => libc::ENOENT,
        FsError::StaleInode(_) => libc::ESTALE,
        FsError::BadHandle(_) => libc::EBADF,
        FsError::NotADirectory => libc::ENOTDIR,
        FsError::IsADirectory => libc::EISDIR,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::Exists => libc::EEXIST,
        FsError::NoSpace(_) => libc::ENOSPC,
        FsError::ReadOnly => libc::EROFS,
        FsError::InvalidName(_) => libc::EINVAL,
        FsError::NameTooLong => libc::ENAMETOOLONG,
        FsError::Unsupported(_) => libc::ENOTSUP,
        FsError::NotPermitted(_) => libc::EPERM,
        FsError::CrossDevice(_) => libc::EXDEV,
        FsError::Inconsistent(_) => libc::EIO,
        // The open file's object is gone: never ENOENT for a file that is open.
        FsError::Gone(_) => libc::ESTALE,
        FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        FsError::TooLarge => libc::EFBIG,
        FsError::InvalidArgument(_) => libc::EINVAL,
    }
}
