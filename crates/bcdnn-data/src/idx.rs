//! Parser for IDX files, the format of the MNIST distribution, raw or gzip-compressed.
//!
//! An IDX file is a big-endian header followed by a dense array in row-major order. The header
//! is a 4-byte magic number (two zero bytes, a type code, the number of dimensions) and then one
//! u32 per dimension. MNIST uses type code 0x08 (unsigned byte). Images have magic 0x00000803
//! (2051) and the dimensions count, rows and columns. Labels have magic 0x00000801 (2049) and
//! the single dimension count.
//!
//! Every check runs before the data is returned: magic number, non-zero dimensions, the exact
//! payload length (truncated files and trailing bytes are both rejected), label range, and
//! image/label count agreement.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// Magic number of an IDX file with unsigned-byte values and 3 dimensions (MNIST images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file with unsigned-byte values and 1 dimension (MNIST labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// First two bytes of every gzip stream (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Maximum number of bytes reserved for a payload before it is read. A corrupt header can
/// declare any size, so larger payloads grow the buffer only as their bytes arrive.
const MAX_INITIAL_RESERVE: usize = 1 << 26;

const IMAGE_AXES: [&str; 3] = ["image count", "rows", "columns"];
const LABEL_AXES: [&str; 1] = ["label count"];

/// Error from reading or validating an IDX file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("failed to read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to decompress gzip file {}: {source}", .path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{} is empty (0 bytes after decompression), expected an IDX file", .path.display())]
    Empty { path: PathBuf },

    #[error(
        "{}: invalid IDX magic number {found:#010x}, expected {expected:#010x}{hint}",
        .path.display(),
        hint = magic_hint(*.found, *.expected)
    )]
    BadMagic { path: PathBuf, found: u32, expected: u32 },

    #[error(
        "{}: IDX dimension {axis} ({axis_name}) is 0, expected at least 1",
        .path.display()
    )]
    ZeroDimension { path: PathBuf, axis: usize, axis_name: &'static str },

    #[error(
        "{}: IDX dimensions {dims:?} describe an array too large to address",
        .path.display()
    )]
    TooLarge { path: PathBuf, dims: Vec<u32> },

    #[error(
        "{}: file is truncated: expected {expected_bytes} bytes (decompressed), found {found_bytes}",
        .path.display()
    )]
    Truncated { path: PathBuf, expected_bytes: u64, found_bytes: u64 },

    #[error(
        "{}: file has trailing bytes: expected {expected_bytes} bytes (decompressed), found {found_bytes}",
        .path.display()
    )]
    TrailingBytes { path: PathBuf, expected_bytes: u64, found_bytes: u64 },

    #[error(
        "{} contains {images} images but {} contains {labels} labels, expected equal counts",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch { images_path: PathBuf, images: usize, labels_path: PathBuf, labels: usize },

    #[error(
        "{}: label {label} at index {index} is out of range, expected a value below {classes}",
        .path.display()
    )]
    LabelOutOfRange { path: PathBuf, index: usize, label: u8, classes: usize },
}

/// Explains the two common causes of a wrong magic number: a gzip file passed to the raw
/// parser, and the images and labels paths swapped.
fn magic_hint(found: u32, expected: u32) -> &'static str {
    if found >> 16 == u32::from(u16::from_be_bytes(GZIP_MAGIC)) {
        return " (the data starts with the gzip magic bytes 1f 8b: decompress it first, \
                or use read_images/read_labels, which detect gzip)";
    }
    match (found, expected) {
        (LABELS_MAGIC, IMAGES_MAGIC) => " (this is an IDX labels file, expected an images file)",
        (IMAGES_MAGIC, LABELS_MAGIC) => " (this is an IDX images file, expected a labels file)",
        _ => "",
    }
}

/// Images of one IDX file: `n_images` images of `n_rows` x `n_cols` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub n_images: usize,
    pub n_rows: usize,
    pub n_cols: usize,
    /// Pixel values in file order: image `i` is `pixels[i * n_rows * n_cols..][..n_rows * n_cols]`,
    /// row-major within the image.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Number of pixels per image (`n_rows * n_cols`).
    pub fn n_features(&self) -> usize {
        self.n_rows * self.n_cols
    }
}

/// An images file and a labels file that passed every check, including count agreement and
/// label range. Only [`read_idx_dataset`] and [`decode_idx_dataset`] construct it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxDataset {
    images: IdxImages,
    labels: Vec<u8>,
    n_classes: usize,
}

impl IdxDataset {
    pub fn images(&self) -> &IdxImages {
        &self.images
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    pub fn n_classes(&self) -> usize {
        self.n_classes
    }
}

/// Encoding of the bytes being parsed, which selects the error variant for read errors:
/// `Gzip` for decoder errors, `Io` otherwise.
#[derive(Clone, Copy)]
enum Encoding {
    Raw,
    Gzip,
}

impl Encoding {
    fn detect(bytes: &[u8]) -> Self {
        if bytes.starts_with(&GZIP_MAGIC) {
            Encoding::Gzip
        } else {
            Encoding::Raw
        }
    }

    fn read_error(self, path: &Path, source: io::Error) -> IdxError {
        let path = path.to_path_buf();
        match self {
            Encoding::Raw => IdxError::Io { path, source },
            Encoding::Gzip => IdxError::Gzip { path, source },
        }
    }
}

/// Reads an IDX images file (magic 2051), raw or gzip-compressed.
pub fn read_images(path: &Path) -> Result<IdxImages, IdxError> {
    let bytes = read_file(path)?;
    decode_images(&bytes, path)
}

/// Reads an IDX labels file (magic 2049), raw or gzip-compressed, and checks that every label
/// is below `n_classes`.
pub fn read_labels(path: &Path, n_classes: usize) -> Result<Vec<u8>, IdxError> {
    let bytes = read_file(path)?;
    decode_labels(&bytes, path, n_classes)
}

/// Reads an images file and a labels file and checks that they describe the same number of
/// samples.
pub fn read_idx_dataset(images_path: &Path, labels_path: &Path, n_classes: usize) -> Result<IdxDataset, IdxError> {
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path, n_classes)?;
    pair_images_labels(images, images_path, labels, labels_path, n_classes)
}

/// Decodes IDX images from the bytes of a file, decompressing them first if they start with
/// the gzip magic bytes. `path` is used only in error messages.
pub fn decode_images(bytes: &[u8], path: &Path) -> Result<IdxImages, IdxError> {
    let encoding = Encoding::detect(bytes);
    let (dims, pixels) = match encoding {
        Encoding::Raw => read_array(bytes, path, IMAGES_MAGIC, &IMAGE_AXES, encoding)?,
        Encoding::Gzip => {
            let decoder = MultiGzDecoder::new(bytes);
            read_array(decoder, path, IMAGES_MAGIC, &IMAGE_AXES, encoding)?
        }
    };
    Ok(images_from_parts(&dims, pixels))
}

/// Decodes IDX labels from the bytes of a file, decompressing them first if they start with
/// the gzip magic bytes, and checks that every label is below `n_classes`.
pub fn decode_labels(bytes: &[u8], path: &Path, n_classes: usize) -> Result<Vec<u8>, IdxError> {
    let encoding = Encoding::detect(bytes);
    let labels = match encoding {
        Encoding::Raw => read_array(bytes, path, LABELS_MAGIC, &LABEL_AXES, encoding)?.1,
        Encoding::Gzip => {
            let decoder = MultiGzDecoder::new(bytes);
            read_array(decoder, path, LABELS_MAGIC, &LABEL_AXES, encoding)?.1
        }
    };
    check_label_range(&labels, path, n_classes)?;
    Ok(labels)
}

/// Decodes an images file and a labels file from their bytes (raw or gzip) and checks that
/// they describe the same number of samples.
pub fn decode_idx_dataset(
    images_bytes: &[u8],
    images_path: &Path,
    labels_bytes: &[u8],
    labels_path: &Path,
    n_classes: usize,
) -> Result<IdxDataset, IdxError> {
    let images = decode_images(images_bytes, images_path)?;
    let labels = decode_labels(labels_bytes, labels_path, n_classes)?;
    pair_images_labels(images, images_path, labels, labels_path, n_classes)
}

/// Parses an uncompressed IDX images stream. Gzip data is rejected with
/// [`IdxError::BadMagic`], whereas [`decode_images`] and [`read_images`] accept both.
pub fn parse_images<R: Read>(reader: R, path: &Path) -> Result<IdxImages, IdxError> {
    let (dims, pixels) = read_array(reader, path, IMAGES_MAGIC, &IMAGE_AXES, Encoding::Raw)?;
    Ok(images_from_parts(&dims, pixels))
}

/// Parses an uncompressed IDX labels stream and checks that every label is below `n_classes`.
/// Gzip data is rejected with [`IdxError::BadMagic`].
pub fn parse_labels<R: Read>(reader: R, path: &Path, n_classes: usize) -> Result<Vec<u8>, IdxError> {
    let (_, labels) = read_array(reader, path, LABELS_MAGIC, &LABEL_AXES, Encoding::Raw)?;
    check_label_range(&labels, path, n_classes)?;
    Ok(labels)
}

fn read_file(path: &Path) -> Result<Vec<u8>, IdxError> {
    fs::read(path).map_err(|source| IdxError::Io { path: path.to_path_buf(), source })
}

fn images_from_parts(dims: &[u32], pixels: Vec<u8>) -> IdxImages {
    IdxImages { n_images: dims[0] as usize, n_rows: dims[1] as usize, n_cols: dims[2] as usize, pixels }
}

fn pair_images_labels(
    images: IdxImages,
    images_path: &Path,
    labels: Vec<u8>,
    labels_path: &Path,
    n_classes: usize,
) -> Result<IdxDataset, IdxError> {
    if images.n_images != labels.len() {
        return Err(IdxError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: images.n_images,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    Ok(IdxDataset { images, labels, n_classes })
}

fn check_label_range(labels: &[u8], path: &Path, n_classes: usize) -> Result<(), IdxError> {
    match labels.iter().position(|&label| usize::from(label) >= n_classes) {
        Some(index) => {
            Err(IdxError::LabelOutOfRange { path: path.to_path_buf(), index, label: labels[index], classes: n_classes })
        }
        None => Ok(()),
    }
}

/// Reads one IDX array with the given magic number and returns its dimensions and payload.
/// `axis_names` has one entry per dimension the magic number declares.
fn read_array<R: Read>(
    mut reader: R,
    path: &Path,
    expected_magic: u32,
    axis_names: &'static [&'static str],
    encoding: Encoding,
) -> Result<(Vec<u32>, Vec<u8>), IdxError> {
    let header_len = 4 + 4 * axis_names.len();
    let mut header = vec![0u8; header_len];
    let header_read = read_up_to(&mut reader, &mut header).map_err(|e| encoding.read_error(path, e))?;

    if header_read == 0 {
        return Err(IdxError::Empty { path: path.to_path_buf() });
    }
    // The magic number is checked before the header length so that a short file of the wrong
    // kind reports its magic number.
    if header_read >= 4 {
        let found = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if found != expected_magic {
            return Err(IdxError::BadMagic { path: path.to_path_buf(), found, expected: expected_magic });
        }
    }
    if header_read < header_len {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: header_len as u64,
            found_bytes: header_read as u64,
        });
    }

    let dims: Vec<u32> = header[4..].chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect();
    if let Some(axis) = dims.iter().position(|&d| d == 0) {
        return Err(IdxError::ZeroDimension { path: path.to_path_buf(), axis, axis_name: axis_names[axis] });
    }
    let payload_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .filter(|&n| n.checked_add(header_len).is_some())
        .ok_or_else(|| IdxError::TooLarge { path: path.to_path_buf(), dims: dims.clone() })?;
    let expected_bytes = (header_len + payload_len) as u64;

    let mut payload = Vec::with_capacity(payload_len.min(MAX_INITIAL_RESERVE));
    (&mut reader).take(payload_len as u64).read_to_end(&mut payload).map_err(|e| encoding.read_error(path, e))?;
    if payload.len() < payload_len {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected_bytes,
            found_bytes: (header_len + payload.len()) as u64,
        });
    }

    let trailing = io::copy(&mut reader, &mut io::sink()).map_err(|e| encoding.read_error(path, e))?;
    if trailing > 0 {
        return Err(IdxError::TrailingBytes {
            path: path.to_path_buf(),
            expected_bytes,
            found_bytes: expected_bytes + trailing,
        });
    }

    Ok((dims, payload))
}

/// Fills `buf` from `reader` until it is full or the stream ends, and returns the byte count.
fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
