//! MNIST loading: locate the IDX files, build dataset stores in a cache directory when they
//! are missing or stale, and open them.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::idx::{self, IdxError};
use crate::store::{self, OpenOptions};

/// Number of MNIST classes (the digits 0 to 9).
pub const MNIST_CLASSES: usize = 10;

/// IDX file names of the MNIST distribution, without the `.gz` suffix.
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The MNIST training set (60000 samples) and test set (10000 samples), 784 features each.
#[derive(Debug)]
pub struct Mnist {
    pub train: Dataset,
    pub test: Dataset,
}

/// Options of [`load_mnist`].
#[derive(Debug, Clone)]
pub struct MnistOptions {
    /// Directory with the four MNIST IDX files, gzip-compressed (`*.gz`) or raw.
    pub source_dir: PathBuf,
    /// Directory for the dataset stores `mnist-train.bcdnn` and `mnist-test.bcdnn`, created if
    /// missing.
    pub cache_dir: PathBuf,
    /// Memory-map the stores (true) or read them into owned memory (false). If mapping fails,
    /// the store is read into memory and a warning is logged.
    pub use_mmap: bool,
}

impl Default for MnistOptions {
    /// Uses [`default_source_dir`], [`default_cache_dir`] and memory mapping.
    fn default() -> Self {
        MnistOptions { source_dir: default_source_dir(), cache_dir: default_cache_dir(), use_mmap: true }
    }
}

/// Loads MNIST with pixels scaled to [0, 1] as f32, one sample per column.
///
/// For each split this hashes the source files and opens the store in `cache_dir` if it was
/// built from those exact files. A missing, stale, truncated or corrupted store is rebuilt
/// from the IDX files (logged at info level, or warn level for a damaged store) and then
/// opened. Errors in the IDX files themselves are returned, never repaired.
pub fn load_mnist(opts: &MnistOptions) -> Result<Mnist, DataError> {
    let train = load_split(opts, "train", TRAIN_IMAGES, TRAIN_LABELS)?;
    let test = load_split(opts, "test", TEST_IMAGES, TEST_LABELS)?;
    Ok(Mnist { train, test })
}

fn load_split(opts: &MnistOptions, split: &str, images_name: &str, labels_name: &str) -> Result<Dataset, DataError> {
    let images_path = find_source(&opts.source_dir, images_name)?;
    let labels_path = find_source(&opts.source_dir, labels_name)?;
    let images_bytes = read_source(&images_path)?;
    let labels_bytes = read_source(&labels_path)?;
    let fingerprint = store::source_fingerprint(&[&images_bytes, &labels_bytes]);

    let store_path = opts.cache_dir.join(format!("mnist-{split}.bcdnn"));
    let open_options = OpenOptions { use_mmap: opts.use_mmap, expected_fingerprint: Some(fingerprint) };
    match store::open_store(&store_path, &open_options) {
        Ok(dataset) => return Ok(dataset),
        Err(DataError::Store(e)) if e.is_not_found() => {
            log::info!("building MNIST {split} store {}", store_path.display());
        }
        Err(DataError::Store(e @ store::StoreError::Stale { .. })) => {
            log::info!("rebuilding MNIST {split} store: {e}");
        }
        Err(e) => log::warn!("rebuilding MNIST {split} store: {e}"),
    }

    fs::create_dir_all(&opts.cache_dir)
        .map_err(|source| DataError::CacheDir { path: opts.cache_dir.clone(), source })?;
    let data = idx::decode_idx_dataset(&images_bytes, &images_path, &labels_bytes, &labels_path, MNIST_CLASSES)?;
    store::write_store_from_idx(&store_path, &data, fingerprint)?;
    store::open_store(&store_path, &open_options)
}

/// Returns `<dir>/<name>.gz` if it exists, else `<dir>/<name>`.
fn find_source(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let gz_path = dir.join(format!("{name}.gz"));
    if gz_path.is_file() {
        return Ok(gz_path);
    }
    let raw_path = dir.join(name);
    if raw_path.is_file() {
        return Ok(raw_path);
    }
    Err(DataError::SourceNotFound { gz_path, raw_path })
}

fn read_source(path: &Path) -> Result<Vec<u8>, DataError> {
    fs::read(path).map_err(|source| IdxError::Io { path: path.to_path_buf(), source }.into())
}

/// Returns the MNIST source directory: `$BCDNN_DATA_DIR` if set and non-empty, else
/// `./datasets/mnist` if that directory exists, else the `datasets/mnist` directory of the
/// workspace this crate was compiled in.
pub fn default_source_dir() -> PathBuf {
    resolve_source_dir(std::env::var_os("BCDNN_DATA_DIR"), Path::new("datasets/mnist").is_dir())
}

/// Returns the directory for dataset stores: `$BCDNN_CACHE_DIR` if set and non-empty, else
/// `$XDG_CACHE_HOME/bcdnn` if `XDG_CACHE_HOME` is an absolute path, else `$HOME/.cache/bcdnn`,
/// else `target/bcdnn-cache` in the workspace this crate was compiled in.
///
/// The stores live in the user cache by default because they are derived data that any
/// checkout can rebuild: they survive `cargo clean`, and checkouts with the same source files
/// share one copy (about 188 MB for the training set). Checkouts with different source files
/// that share a cache directory rebuild the stores whenever they alternate.
///
/// NOTE: `%LOCALAPPDATA%` is not consulted, so on Windows, where `HOME` is usually unset, this
/// falls back to the workspace target directory.
pub fn default_cache_dir() -> PathBuf {
    resolve_cache_dir(std::env::var_os("BCDNN_CACHE_DIR"), std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn resolve_source_dir(data_dir_var: Option<OsString>, cwd_has_datasets: bool) -> PathBuf {
    if let Some(dir) = data_dir_var.filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if cwd_has_datasets {
        return PathBuf::from("datasets/mnist");
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/mnist"))
}

fn resolve_cache_dir(
    cache_dir_var: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> PathBuf {
    if let Some(dir) = cache_dir_var.filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    // The XDG Base Directory specification requires a relative XDG_CACHE_HOME to be ignored.
    if let Some(dir) = xdg_cache_home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return dir.join("bcdnn");
    }
    if let Some(home) = home.filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".cache").join("bcdnn");
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bcdnn-cache"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_dir_env_wins() {
        let dir = resolve_source_dir(Some("/data/mnist".into()), true);
        assert_eq!(dir, PathBuf::from("/data/mnist"));
    }

    #[test]
    fn source_dir_empty_env_ignored() {
        let dir = resolve_source_dir(Some("".into()), true);
        assert_eq!(dir, PathBuf::from("datasets/mnist"));
    }

    #[test]
    fn source_dir_falls_back_to_workspace() {
        let dir = resolve_source_dir(None, false);
        assert!(
            dir.join("train-images-idx3-ubyte.gz").is_file(),
            "fallback source dir {} does not contain the vendored MNIST files",
            dir.display()
        );
    }

    #[test]
    fn cache_dir_precedence() {
        // (BCDNN_CACHE_DIR, XDG_CACHE_HOME, HOME, expected directory)
        type Case = (Option<&'static str>, Option<&'static str>, Option<&'static str>, PathBuf);
        let cases: [Case; 6] = [
            (Some("/c"), Some("/x"), Some("/h"), PathBuf::from("/c")),
            (Some(""), Some("/x"), Some("/h"), PathBuf::from("/x/bcdnn")),
            (None, Some("/x"), Some("/h"), PathBuf::from("/x/bcdnn")),
            (None, Some("relative"), Some("/h"), PathBuf::from("/h/.cache/bcdnn")),
            (None, None, Some("/h"), PathBuf::from("/h/.cache/bcdnn")),
            (None, None, None, PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bcdnn-cache"))),
        ];
        for (cache_var, xdg, home, expected) in cases {
            let dir =
                resolve_cache_dir(cache_var.map(OsString::from), xdg.map(OsString::from), home.map(OsString::from));
            assert_eq!(dir, expected, "BCDNN_CACHE_DIR={cache_var:?} XDG_CACHE_HOME={xdg:?} HOME={home:?}");
        }
    }
}
