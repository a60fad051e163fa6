//! In-memory and memory-mapped datasets and borrowed views of them.

use std::fmt;
use std::ops::Range;

use memmap2::Mmap;

use crate::error::DataError;

/// A labelled dataset whose features form a column-major `n_features x n_samples` f32 matrix,
/// one sample per column.
///
/// The data is either owned (`Vec`s) or a read-only memory map of a store file (see
/// [`crate::store`]). A mapped dataset reads the file through the page cache, so if another
/// process truncates or rewrites that file in place while it is mapped, [`Dataset::features`]
/// can return changed values and the process can be killed by `SIGBUS`. This crate never
/// modifies a store in place: rebuilds write a new file and rename it over the old one, and
/// existing maps keep the old file's contents.
///
/// Invariants, checked by every constructor: `n_features >= 1`, `1 <= n_classes <= 256`,
/// `features().len() == n_features * n_samples`, and every label is below `n_classes`.
pub struct Dataset {
    storage: Storage,
    n_features: usize,
    n_samples: usize,
    n_classes: usize,
}

enum Storage {
    Owned {
        features: Vec<f32>,
        labels: Vec<u8>,
    },
    /// Byte ranges of a store file's map. `store::map_file` has checked that `features`
    /// starts at an address aligned for f32, which `features()` relies on.
    Mapped {
        map: Mmap,
        features: Range<usize>,
        labels: Range<usize>,
    },
}

impl Dataset {
    /// Builds a dataset that owns `features` (column-major, `n_features` values per sample) and
    /// `labels` (one per sample, each below `n_classes`).
    pub fn from_vecs(
        features: Vec<f32>,
        labels: Vec<u8>,
        n_features: usize,
        n_classes: usize,
    ) -> Result<Dataset, DataError> {
        validate_parts(&features, &labels, n_features, n_classes)?;
        Ok(Dataset { n_features, n_samples: labels.len(), n_classes, storage: Storage::Owned { features, labels } })
    }

    /// Wraps a store map whose checksum and layout the caller has checked. Shape, alignment
    /// and labels are checked again here because `features()` relies on them.
    pub(crate) fn from_mapped(
        map: Mmap,
        features: Range<usize>,
        labels: Range<usize>,
        n_features: usize,
        n_classes: usize,
    ) -> Result<Dataset, DataError> {
        let feature_values = bytemuck::try_cast_slice::<u8, f32>(&map[features.clone()])
            .expect("store::map_file checked that the features are aligned for f32");
        validate_parts(feature_values, &map[labels.clone()], n_features, n_classes)?;
        Ok(Dataset {
            n_features,
            n_samples: labels.len(),
            n_classes,
            storage: Storage::Mapped { map, features, labels },
        })
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_samples(&self) -> usize {
        self.n_samples
    }

    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Feature matrix in column-major order: sample `j` is `features()[j * n_features..][..n_features]`.
    pub fn features(&self) -> &[f32] {
        match &self.storage {
            Storage::Owned { features, .. } => features,
            Storage::Mapped { map, features, .. } => bytemuck::cast_slice(&map[features.clone()]),
        }
    }

    pub fn labels(&self) -> &[u8] {
        match &self.storage {
            Storage::Owned { labels, .. } => labels,
            Storage::Mapped { map, labels, .. } => &map[labels.clone()],
        }
    }

    /// Returns true if the data is a memory map of a store file, false if it is owned memory.
    pub fn is_memory_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    pub fn view(&self) -> DatasetView<'_> {
        DatasetView {
            features: self.features(),
            labels: self.labels(),
            n_features: self.n_features,
            n_classes: self.n_classes,
        }
    }
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("n_features", &self.n_features)
            .field("n_samples", &self.n_samples)
            .field("n_classes", &self.n_classes)
            .field("memory_mapped", &self.is_memory_mapped())
            .finish()
    }
}

/// Borrowed, validated view of a dataset or of a contiguous range of its samples. Copying a
/// view copies two slice references, never the data.
#[derive(Clone, Copy)]
pub struct DatasetView<'a> {
    features: &'a [f32],
    labels: &'a [u8],
    n_features: usize,
    n_classes: usize,
}

impl<'a> DatasetView<'a> {
    /// Creates a view over column-major `features` (`n_features` values per sample) and
    /// `labels` (one per sample). Rejects `n_features == 0`, `n_classes` outside 1..=256,
    /// a feature length other than `n_features * labels.len()`, and labels `>= n_classes`.
    pub fn new(features: &'a [f32], labels: &'a [u8], n_features: usize, n_classes: usize) -> Result<Self, DataError> {
        validate_parts(features, labels, n_features, n_classes)?;
        Ok(DatasetView { features, labels, n_features, n_classes })
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_samples(&self) -> usize {
        self.labels.len()
    }

    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Feature matrix in column-major order: sample `j` is `features()[j * n_features..][..n_features]`.
    pub fn features(&self) -> &'a [f32] {
        self.features
    }

    pub fn labels(&self) -> &'a [u8] {
        self.labels
    }

    /// Borrows the features as an `n_features x n_samples` faer matrix with column stride
    /// `n_features`.
    pub fn matrix(&self) -> faer::MatRef<'a, f32> {
        faer::MatRef::from_column_major_slice(self.features, self.n_features, self.n_samples())
    }

    /// Returns the samples `range` as a view of the same memory.
    pub fn columns(&self, range: Range<usize>) -> Result<DatasetView<'a>, DataError> {
        let n_samples = self.n_samples();
        if range.start > range.end || range.end > n_samples {
            return Err(DataError::InvalidSampleRange { start: range.start, end: range.end, n_samples });
        }
        Ok(self.sub_view(range))
    }

    /// Returns the first `min(n, n_samples)` samples as a view of the same memory.
    pub fn head(&self, n: usize) -> DatasetView<'a> {
        self.sub_view(0..n.min(self.n_samples()))
    }

    fn sub_view(&self, range: Range<usize>) -> DatasetView<'a> {
        let d = self.n_features;
        DatasetView {
            features: &self.features[range.start * d..range.end * d],
            labels: &self.labels[range],
            n_features: d,
            n_classes: self.n_classes,
        }
    }
}

/// Prints the dimensions only, because the feature slice can have tens of millions of values.
impl fmt::Debug for DatasetView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatasetView")
            .field("n_features", &self.n_features)
            .field("n_samples", &self.n_samples())
            .field("n_classes", &self.n_classes)
            .finish()
    }
}

pub(crate) fn validate_class_count(n_classes: usize) -> Result<(), DataError> {
    if (1..=256).contains(&n_classes) {
        Ok(())
    } else {
        Err(DataError::InvalidClassCount { n_classes })
    }
}

fn validate_parts(features: &[f32], labels: &[u8], n_features: usize, n_classes: usize) -> Result<(), DataError> {
    if n_features == 0 {
        return Err(DataError::ZeroFeatures);
    }
    validate_class_count(n_classes)?;

    let n_samples = labels.len();
    if n_features.checked_mul(n_samples) != Some(features.len()) {
        return Err(DataError::ShapeMismatch { n_features, n_samples, found: features.len() });
    }

    if let Some(index) = labels.iter().position(|&l| usize::from(l) >= n_classes) {
        return Err(DataError::LabelOutOfRange { index, label: labels[index], classes: n_classes });
    }
    Ok(())
}
