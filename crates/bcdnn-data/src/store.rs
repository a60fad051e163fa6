//! Binary dataset store: a file that contains the features as f32 in the column-major layout
//! the trainer uses, so that opening it is a memory map instead of a parse.
//!
//! # Format, version 1
//!
//! All integers are little-endian. The header is 128 bytes:
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 8 | magic `b"BCDNNDS\0"` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 4 | dtype tag, `1` = f32 little-endian |
//! | 16 | 8 | `n_features` (u64) |
//! | 24 | 8 | `n_samples` (u64) |
//! | 32 | 8 | `n_classes` (u64) |
//! | 40 | 8 | features offset (u64), always 128 |
//! | 48 | 8 | labels offset (u64), features offset + 4 * `n_features` * `n_samples` |
//! | 56 | 8 | file length (u64), labels offset + `n_samples` |
//! | 64 | 32 | source fingerprint (see [`source_fingerprint`]) |
//! | 96 | 4 | CRC-32 of the payload, bytes `[128, file length)` |
//! | 100 | 24 | reserved, zero |
//! | 124 | 4 | CRC-32 of header bytes `[0, 124)` |
//!
//! The features follow at offset 128, a multiple of 64, as `n_samples` columns of `n_features`
//! f32 values (sample `j` at `features[j * n_features..(j + 1) * n_features]`). The labels follow
//! the features directly as one u8 per sample. Nothing follows the labels.
//!
//! # Integrity checks
//!
//! [`open_store`] checks the header (magic, version, header CRC, dtype, reserved bytes and an
//! exact layout) and the file length against the header before it maps or reads the payload.
//! It then computes the payload CRC-32 on every open and checks every label. CRC-32 detects
//! every error burst of at most 32 bits, so every single changed byte, but it is no defence
//! against deliberate tampering. The check reads the whole file once, at memory bandwidth when
//! the file is in the page cache (crc32fast uses PCLMULQDQ on x86-64).
//!
//! Stores are written to a temporary file in the destination directory, flushed to disk, and
//! renamed over the destination, so a reader sees either the old file or the complete new one.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};
use sha2::{Digest, Sha256};

use crate::dataset::{Dataset, DatasetView};
use crate::error::DataError;
use crate::idx::IdxDataset;

#[cfg(target_endian = "big")]
compile_error!("bcdnn-data supports little-endian targets only, because stores are f32 little-endian viewed in place");

pub const STORE_MAGIC: [u8; 8] = *b"BCDNNDS\0";
pub const STORE_VERSION: u32 = 1;
/// Dtype tag of f32 little-endian features, the only dtype of format version 1.
pub const DTYPE_F32_LE: u32 = 1;
pub const HEADER_LEN: usize = 128;
/// Alignment of the features offset in bytes. 64 bytes is one cache line and one AVX-512
/// vector.
pub const FEATURES_ALIGN: usize = 64;

const FEATURES_OFFSET: u64 = HEADER_LEN as u64;
const HEADER_CRC_OFFSET: usize = 124;
const RESERVED: std::ops::Range<usize> = 100..124;
/// Pixels converted per write when building a store from IDX bytes.
const CONVERT_CHUNK: usize = 1 << 16;

/// Error from building, validating or opening a store file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on dataset store {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "dataset store {} is {found_bytes} bytes, shorter than the {HEADER_LEN}-byte header",
        .path.display()
    )]
    TooShort { path: PathBuf, found_bytes: u64 },

    #[error(
        "{} is not a bcdnn dataset store: magic bytes {found:02x?}, expected {STORE_MAGIC:02x?}",
        .path.display()
    )]
    BadMagic { path: PathBuf, found: [u8; 8] },

    #[error(
        "dataset store {} has unsupported format version {found}, expected {expected} (delete the file to rebuild it)",
        .path.display()
    )]
    UnsupportedVersion { path: PathBuf, found: u32, expected: u32 },

    #[error(
        "dataset store {} is corrupted: header CRC-32 is {found:#010x}, the header records {expected:#010x} (delete the file to rebuild it)",
        .path.display()
    )]
    HeaderChecksumMismatch { path: PathBuf, expected: u32, found: u32 },

    #[error("dataset store {} has an invalid header: {reason}", .path.display())]
    InvalidHeader { path: PathBuf, reason: String },

    #[error(
        "dataset store {} is {found_bytes} bytes but its header records {expected_bytes}, so it is truncated or has trailing bytes (delete the file to rebuild it)",
        .path.display()
    )]
    LengthMismatch { path: PathBuf, expected_bytes: u64, found_bytes: u64 },

    #[error(
        "dataset store {} is corrupted: payload CRC-32 is {found:#010x}, the header records {expected:#010x} (delete the file to rebuild it)",
        .path.display()
    )]
    ChecksumMismatch { path: PathBuf, expected: u32, found: u32 },

    #[error(
        "dataset store {}: label {label} at sample {index} is out of range, expected a value below {classes}",
        .path.display()
    )]
    LabelOutOfRange { path: PathBuf, index: usize, label: u8, classes: usize },

    #[error(
        "dataset store {} was built from different source files (source fingerprint mismatch)",
        .path.display()
    )]
    Stale { path: PathBuf },
}

impl StoreError {
    /// Returns true if the store file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Decoded store header. [`StoreHeader::decode`] accepts only the format-1 layout, while
/// [`StoreHeader::encode`] writes the fields as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHeader {
    pub n_features: usize,
    pub n_samples: usize,
    pub n_classes: usize,
    pub features_offset: u64,
    pub labels_offset: u64,
    pub file_len: u64,
    pub source_fingerprint: [u8; 32],
    pub payload_crc32: u32,
}

impl StoreHeader {
    /// Computes the format-1 layout for the given shape, or `None` if it overflows u64.
    fn with_layout(
        n_features: usize,
        n_samples: usize,
        n_classes: usize,
        source_fingerprint: [u8; 32],
        payload_crc32: u32,
    ) -> Option<StoreHeader> {
        let features_len = (n_features as u64).checked_mul(n_samples as u64)?.checked_mul(4)?;
        let labels_offset = FEATURES_OFFSET.checked_add(features_len)?;
        let file_len = labels_offset.checked_add(n_samples as u64)?;
        Some(StoreHeader {
            n_features,
            n_samples,
            n_classes,
            features_offset: FEATURES_OFFSET,
            labels_offset,
            file_len,
            source_fingerprint,
            payload_crc32,
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..8].copy_from_slice(&STORE_MAGIC);
        bytes[8..12].copy_from_slice(&STORE_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&DTYPE_F32_LE.to_le_bytes());
        bytes[16..24].copy_from_slice(&(self.n_features as u64).to_le_bytes());
        bytes[24..32].copy_from_slice(&(self.n_samples as u64).to_le_bytes());
        bytes[32..40].copy_from_slice(&(self.n_classes as u64).to_le_bytes());
        bytes[40..48].copy_from_slice(&self.features_offset.to_le_bytes());
        bytes[48..56].copy_from_slice(&self.labels_offset.to_le_bytes());
        bytes[56..64].copy_from_slice(&self.file_len.to_le_bytes());
        bytes[64..96].copy_from_slice(&self.source_fingerprint);
        bytes[96..100].copy_from_slice(&self.payload_crc32.to_le_bytes());
        let header_crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        bytes[HEADER_CRC_OFFSET..].copy_from_slice(&header_crc.to_le_bytes());
        bytes
    }

    /// Decodes and validates a header. `path` is used only in error messages.
    pub fn decode(bytes: &[u8; HEADER_LEN], path: &Path) -> Result<StoreHeader, StoreError> {
        let u32_at = |offset: usize| u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
        let u64_at = |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
        let invalid = |reason: String| StoreError::InvalidHeader { path: path.to_path_buf(), reason };

        let magic: [u8; 8] = bytes[0..8].try_into().unwrap();
        if magic != STORE_MAGIC {
            return Err(StoreError::BadMagic { path: path.to_path_buf(), found: magic });
        }
        let version = u32_at(8);
        if version != STORE_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                expected: STORE_VERSION,
            });
        }
        let recorded_crc = u32_at(HEADER_CRC_OFFSET);
        let computed_crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        if recorded_crc != computed_crc {
            return Err(StoreError::HeaderChecksumMismatch {
                path: path.to_path_buf(),
                expected: recorded_crc,
                found: computed_crc,
            });
        }

        let dtype = u32_at(12);
        if dtype != DTYPE_F32_LE {
            return Err(invalid(format!("dtype tag {dtype}, expected {DTYPE_F32_LE} (f32 little-endian)")));
        }
        if bytes[RESERVED].iter().any(|&b| b != 0) {
            return Err(invalid("reserved bytes 100..124 are not zero".to_string()));
        }

        let to_usize = |name: &str, value: u64| {
            usize::try_from(value).map_err(|_| invalid(format!("{name} = {value} does not fit in usize")))
        };
        let n_features = to_usize("n_features", u64_at(16))?;
        let n_samples = to_usize("n_samples", u64_at(24))?;
        let n_classes = to_usize("n_classes", u64_at(32))?;
        if n_features == 0 {
            return Err(invalid("n_features is 0".to_string()));
        }
        if !(1..=256).contains(&n_classes) {
            return Err(invalid(format!("n_classes = {n_classes}, expected 1..=256")));
        }

        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(&bytes[64..96]);
        let expected =
            StoreHeader::with_layout(n_features, n_samples, n_classes, fingerprint, u32_at(96)).ok_or_else(|| {
                invalid(format!("n_features = {n_features} and n_samples = {n_samples} overflow the file size"))
            })?;
        let recorded = (u64_at(40), u64_at(48), u64_at(56));
        let layout = (expected.features_offset, expected.labels_offset, expected.file_len);
        if recorded != layout {
            return Err(invalid(format!(
                "offsets (features, labels, file length) = {recorded:?}, expected {layout:?} for \
                 {n_features} features x {n_samples} samples"
            )));
        }
        to_usize("file length", expected.file_len)?;
        Ok(expected)
    }
}

/// Computes the source fingerprint of a store: SHA-256 over a format tag and, for each source
/// file in order, its length (u64 little-endian) and the SHA-256 of its bytes as stored on disk
/// (compressed, for gzip files). Any change to the content of a source file changes the
/// fingerprint, but a change of timestamps alone does not.
pub fn source_fingerprint(sources: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"bcdnn-data source fingerprint v1\0");
    for source in sources {
        hasher.update((source.len() as u64).to_le_bytes());
        hasher.update(Sha256::digest(source));
    }
    hasher.finalize().into()
}

/// Writes a store from parsed IDX images and labels, scaling each pixel byte `p` to `p / 255.0`.
pub fn write_store_from_idx(
    path: &Path,
    data: &IdxDataset,
    source_fingerprint: [u8; 32],
) -> Result<StoreHeader, DataError> {
    let images = data.images();
    write_store_with(path, images.n_features(), data.labels(), data.n_classes(), source_fingerprint, |out, crc| {
        let mut converted = vec![0f32; CONVERT_CHUNK];
        for chunk in images.pixels.chunks(CONVERT_CHUNK) {
            let converted = &mut converted[..chunk.len()];
            for (value, &pixel) in converted.iter_mut().zip(chunk) {
                *value = f32::from(pixel) / 255.0;
            }
            let bytes: &[u8] = bytemuck::cast_slice(converted);
            crc.update(bytes);
            out.write_all(bytes)?;
        }
        Ok(())
    })
}

/// Writes a store holding the features and labels of `view` unchanged.
pub fn write_store(path: &Path, view: DatasetView<'_>, source_fingerprint: [u8; 32]) -> Result<StoreHeader, DataError> {
    write_store_with(path, view.n_features(), view.labels(), view.n_classes(), source_fingerprint, |out, crc| {
        let bytes: &[u8] = bytemuck::cast_slice(view.features());
        crc.update(bytes);
        out.write_all(bytes)
    })
}

/// Writes header, features (produced by `write_features`) and labels to a temporary file next
/// to `path`, then renames it over `path`. The temporary file is removed on failure.
fn write_store_with<F>(
    path: &Path,
    n_features: usize,
    labels: &[u8],
    n_classes: usize,
    source_fingerprint: [u8; 32],
    write_features: F,
) -> Result<StoreHeader, DataError>
where
    F: FnOnce(&mut BufWriter<File>, &mut crc32fast::Hasher) -> io::Result<()>,
{
    crate::dataset::validate_class_count(n_classes)?;
    let io_error = |source: io::Error| StoreError::Io { path: path.to_path_buf(), source };
    let mut header =
        StoreHeader::with_layout(n_features, labels.len(), n_classes, source_fingerprint, 0).ok_or_else(|| {
            StoreError::InvalidHeader {
                path: path.to_path_buf(),
                reason: format!("{n_features} features x {} samples overflow the file size", labels.len()),
            }
        })?;

    let (temp_path, file) = create_temp_file(path).map_err(io_error)?;
    let result = (|| -> io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_LEN])?;
        let mut crc = crc32fast::Hasher::new();
        write_features(&mut out, &mut crc)?;
        crc.update(labels);
        out.write_all(labels)?;
        let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;

        header.payload_crc32 = crc.finalize();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header.encode())?;
        let written = file.seek(SeekFrom::End(0))?;
        if written != header.file_len {
            return Err(io::Error::other(format!(
                "wrote {written} bytes, expected {} from the header layout",
                header.file_len
            )));
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&temp_path, path)
    })();

    if let Err(source) = result {
        // The write error is what the caller needs, and a leftover temporary file is only clutter.
        let _ = fs::remove_file(&temp_path);
        return Err(io_error(source).into());
    }
    sync_parent_dir(path);
    Ok(header)
}

/// Creates a new, uniquely named file in the directory of `path`, so that the final rename
/// stays within one file system.
fn create_temp_file(path: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name =
        path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "store path has no file name"))?;
    loop {
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".tmp.{}.{count}", std::process::id()));
        let temp_path = path.with_file_name(temp_name);
        match File::options().write(true).create_new(true).open(&temp_path) {
            Ok(file) => return Ok((temp_path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Flushes the directory entry of a renamed store on Unix. Failure is logged and ignored:
/// the store is complete either way, and at worst a crash loses the rename.
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            log::warn!("failed to sync directory {}: {e}", dir.display());
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Options of [`open_store`].
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Memory-map the file (true) or read it into owned, aligned memory (false). If mapping
    /// fails, [`open_store`] logs a warning and reads the file instead.
    pub use_mmap: bool,
    /// Reject the store with [`StoreError::Stale`] unless its source fingerprint equals this.
    pub expected_fingerprint: Option<[u8; 32]>,
}

/// Reads and validates the header of a store, and checks the file length against it.
pub fn read_header(path: &Path) -> Result<StoreHeader, StoreError> {
    let file = File::open(path).map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
    read_header_from(&file, path)
}

/// Opens a store: validates the header, file length and source fingerprint, then maps or
/// reads the payload, verifies its CRC-32 and checks that every label is below `n_classes`.
pub fn open_store(path: &Path, options: &OpenOptions) -> Result<Dataset, DataError> {
    let io_error = |source: io::Error| StoreError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_error)?;
    let header = read_header_from(&file, path)?;
    if let Some(expected) = options.expected_fingerprint {
        if header.source_fingerprint != expected {
            return Err(StoreError::Stale { path: path.to_path_buf() }.into());
        }
    }

    if options.use_mmap {
        match map_file(&file, &header) {
            Ok(map) => return open_mapped(map, &header, path),
            Err(e) => {
                log::warn!(
                    "failed to memory-map dataset store {} ({e}), reading it into memory instead",
                    path.display()
                )
            }
        }
    }
    open_read(file, &header, path)
}

fn read_header_from(mut file: &File, path: &Path) -> Result<StoreHeader, StoreError> {
    let io_error = |source: io::Error| StoreError::Io { path: path.to_path_buf(), source };
    let found_bytes = file.metadata().map_err(io_error)?.len();
    if found_bytes < HEADER_LEN as u64 {
        return Err(StoreError::TooShort { path: path.to_path_buf(), found_bytes });
    }
    let mut bytes = [0u8; HEADER_LEN];
    file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    file.read_exact(&mut bytes).map_err(io_error)?;
    let header = StoreHeader::decode(&bytes, path)?;
    if found_bytes != header.file_len {
        return Err(StoreError::LengthMismatch {
            path: path.to_path_buf(),
            expected_bytes: header.file_len,
            found_bytes,
        });
    }
    Ok(header)
}

/// Maps `file` read-only and checks that the map has the header's length and that the
/// features are 4-byte aligned in memory.
fn map_file(file: &File, header: &StoreHeader) -> io::Result<Mmap> {
    // SAFETY: the map is read-only, and this crate never writes to a store in place. Another
    // process that truncates or rewrites the file breaks this (see the `Dataset` docs), which
    // memmap2 cannot prevent.
    let map = unsafe { MmapOptions::new().map(file)? };
    if map.len() as u64 != header.file_len {
        return Err(io::Error::other(format!(
            "map is {} bytes, expected {} because the file changed while it was opened",
            map.len(),
            header.file_len
        )));
    }
    let features_address = map.as_ptr() as usize + header.features_offset as usize;
    if features_address % std::mem::align_of::<f32>() != 0 {
        return Err(io::Error::other("map address is not aligned for f32"));
    }
    Ok(map)
}

fn open_mapped(map: Mmap, header: &StoreHeader, path: &Path) -> Result<Dataset, DataError> {
    let features = header.features_offset as usize..header.labels_offset as usize;
    let labels = header.labels_offset as usize..header.file_len as usize;
    check_payload_crc(header, &[&map[features.start..]], path)?;
    Dataset::from_mapped(map, features, labels, header.n_features, header.n_classes)
        .map_err(|e| label_error_in_store(e, path))
}

/// Reads the payload into a `Vec<f32>` (aligned for f32 by construction) and a `Vec<u8>`.
fn open_read(mut file: File, header: &StoreHeader, path: &Path) -> Result<Dataset, DataError> {
    let io_error = |source: io::Error| StoreError::Io { path: path.to_path_buf(), source };
    let mut features = vec![0f32; header.n_features * header.n_samples];
    let mut labels = vec![0u8; header.n_samples];
    file.seek(SeekFrom::Start(header.features_offset)).map_err(io_error)?;
    file.read_exact(bytemuck::cast_slice_mut(&mut features)).map_err(io_error)?;
    file.read_exact(&mut labels).map_err(io_error)?;

    // The length was checked before reading, but the file can grow in the meantime.
    let mut extra = [0u8; 1];
    if file.read(&mut extra).map_err(io_error)? != 0 {
        let found_bytes = file.metadata().map_err(io_error)?.len();
        return Err(StoreError::LengthMismatch {
            path: path.to_path_buf(),
            expected_bytes: header.file_len,
            found_bytes,
        }
        .into());
    }

    check_payload_crc(header, &[bytemuck::cast_slice(&features), &labels], path)?;
    Dataset::from_vecs(features, labels, header.n_features, header.n_classes).map_err(|e| label_error_in_store(e, path))
}

fn check_payload_crc(header: &StoreHeader, parts: &[&[u8]], path: &Path) -> Result<(), StoreError> {
    let mut crc = crc32fast::Hasher::new();
    for part in parts {
        crc.update(part);
    }
    let found = crc.finalize();
    if found != header.payload_crc32 {
        return Err(StoreError::ChecksumMismatch { path: path.to_path_buf(), expected: header.payload_crc32, found });
    }
    Ok(())
}

/// Names the store file in a label error. Shape errors cannot occur here because the header
/// layout was validated.
fn label_error_in_store(error: DataError, path: &Path) -> DataError {
    match error {
        DataError::LabelOutOfRange { index, label, classes } => {
            StoreError::LabelOutOfRange { path: path.to_path_buf(), index, label, classes }.into()
        }
        other => other,
    }
}
