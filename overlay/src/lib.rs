//! kiln's filesystem formats: layer tars in and out, compression and digests, and the root a step runs
//! in over a stack of layer dirs, whatever the storage driver ([`Rootfs`]).

pub mod apply;
pub mod compress;
pub mod diff;
mod emit;
pub mod pgzip;
pub use emit::parse_override_stat;
pub mod digest;
pub mod layer;
mod lowers;
pub mod mount;
pub mod naive;
mod namespace;
pub mod reader;
pub mod rootfs;
pub mod tarfmt;
pub mod verify;
pub mod whiteout;
pub mod writeback;
// The one module that may use `unsafe`; each use has a SAFETY comment.
#[allow(unsafe_code)]
mod sys;

pub use apply::{apply_layer, apply_tar, ApplyError, ApplyOptions, ApplyReport};
pub use compress::{
    decompress, detect, encoder, encoder_with, is_archive, looks_like_tar, Compression, Encoder, Format, LevelError,
};
pub use diff::{write_diff, DiffError, DiffOptions, DiffReport};
pub use digest::{HashingReader, HashingWriter};
pub use emit::capability_v2;
pub use layer::{entry_from_path, LayerInfo, LayerWriter};
pub use mount::{detect_driver, detect_driver_in, mount, Driver, MountError, MountGuard};
pub use rootfs::{CommitError, Committed, Rootfs};
pub use tarfmt::{EntryKind, EntryMeta, TarWriter};
pub use verify::{verify_layer, LayerReader, VerifyError};
pub use whiteout::{WhiteoutFormat, XattrPrefix};
pub use writeback::WritebackFile;
