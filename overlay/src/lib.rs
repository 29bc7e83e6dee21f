//! kiln's filesystem formats: layer tars in and out, compression and digests.

pub mod apply;
pub mod compress;
pub mod pgzip;
pub mod diff;
mod emit;
pub use emit::parse_override_stat;
pub mod naive;
pub mod reader;
pub mod digest;
pub mod verify;
pub mod layer;
mod lowers;
mod namespace;
pub mod tarfmt;
pub mod whiteout;
pub mod mount;
// The one module that may use `unsafe`; each use has a SAFETY comment.
#[allow(unsafe_code)]
mod sys;

pub use compress::{
    decompress, detect, encoder, encoder_with, is_archive, LevelError, looks_like_tar, Compression, Encoder, Format,
};
pub use digest::{HashingReader, HashingWriter};
pub use verify::{verify_layer, LayerReader, VerifyError};
pub use layer::{entry_from_path, LayerInfo, LayerWriter};
pub use tarfmt::{EntryKind, EntryMeta, TarWriter};
pub use apply::{apply_layer, apply_tar, ApplyError, ApplyOptions, ApplyReport};
pub use diff::{write_diff, DiffError, DiffOptions, DiffReport};
pub use emit::capability_v2;
pub use mount::{detect_driver, detect_driver_in, mount, Driver, MountError, MountGuard};
pub use whiteout::{WhiteoutFormat, XattrPrefix};
