//! The FUSE operations as one typed enum, named for logs, spans and metric labels, and the
//! observer through which the adapter reports each one.
//!
//! Subtle cases owned here:
//! - the names (`lookup`, `copy_file_range`, ...) are derived from the variants (strum), so a
//!   new operation gets its name, its place in [`FuseOp::ALL`] and its counter slot
//!   ([`FuseOp::index`]) by construction; they are metric label values, so renaming a variant
//!   breaks dashboards;
//! - the adapter depends on [`OpObserver`], not on the daemon's metrics, so the folders stay
//!   free of circles (the daemon implements the trait, as it does `api::metered::ApiObserver`).

/// FUSE operations: the per-op counters, and the op named in logs and spans. The names
/// (`lookup`, `copy_file_range`, ...) are the metric label values, derived from the variants.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::VariantArray,
    strum::EnumCount,
    strum::IntoStaticStr,
    strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum FuseOp {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Fallocate,
    Lseek,
    CopyFileRange,
    /// Anything else the kernel sends.
    Other,
}

impl FuseOp {
    /// Every op, in declaration (= counter index) order.
    pub const ALL: &'static [FuseOp] = <FuseOp as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Position in [`FuseOp::ALL`] (slots of per-op counter arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Told about every FUSE operation the adapter answers (the mount's metrics implement it).
pub trait OpObserver: Send + Sync {
    /// `op` was answered (successfully or not).
    fn op(&self, op: FuseOp);
    /// `op` was answered with an error (reported in addition to [`OpObserver::op`]).
    fn failed(&self, op: FuseOp);
}
