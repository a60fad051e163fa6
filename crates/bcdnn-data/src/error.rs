use std::io;
use std::path::PathBuf;

use crate::idx::IdxError;
use crate::store::StoreError;

/// Error type of every public function in this crate.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An IDX source file is missing, unreadable or invalid.
    #[error(transparent)]
    Idx(#[from] IdxError),

    /// A dataset store is unreadable, invalid, corrupted or stale.
    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("n_features is 0, expected at least one feature per sample")]
    ZeroFeatures,

    #[error("n_classes is {n_classes}, expected a value in 1..=256 because labels are u8")]
    InvalidClassCount { n_classes: usize },

    #[error(
        "feature buffer has {found} values, expected n_features * n_samples = \
         {n_features} * {n_samples} (one column of n_features values per label)"
    )]
    ShapeMismatch { n_features: usize, n_samples: usize, found: usize },

    #[error("label {label} at sample {index} is out of range, expected a value below {classes}")]
    LabelOutOfRange { index: usize, label: u8, classes: usize },

    #[error("sample range {start}..{end} is invalid for a dataset of {n_samples} samples")]
    InvalidSampleRange { start: usize, end: usize, n_samples: usize },

    #[error(
        "MNIST file not found: neither {} nor {} exists; set BCDNN_DATA_DIR or \
         MnistOptions::source_dir to the directory with the MNIST IDX files",
        .gz_path.display(),
        .raw_path.display()
    )]
    SourceNotFound { gz_path: PathBuf, raw_path: PathBuf },

    #[error("failed to create cache directory {}: {source}", .path.display())]
    CacheDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
