//! Tests on the vendored MNIST files in `datasets/mnist`.
//!
//! The expected values are published properties of the original MNIST files (the MNIST
//! database of handwritten digits, Y. LeCun, C. Cortes, C. J. C. Burges): 60000 training and
//! 10000 test images of 28x28 pixels, the per-digit label counts, the first ten labels of each
//! split, and the mean training pixel of 33.3184 on the 0..255 scale. None of them is derived
//! from this crate's output. The SHA-256 sums come from `datasets/mnist/README.md`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bcdnn_data::{default_source_dir, load_mnist, Dataset, Mnist, MnistOptions};
use sha2::{Digest, Sha256};

const FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

fn source_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/mnist"))
}

/// Loads MNIST once per test binary through `load_mnist`, building memory-mapped stores in a
/// temporary cache directory. The directory is deleted right after loading, and on Unix the
/// mappings keep the unlinked files readable until the process exits.
fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(|| {
        let cache = tempfile::tempdir().unwrap();
        let opts = MnistOptions { source_dir: source_dir(), cache_dir: cache.path().to_path_buf(), use_mmap: true };
        load_mnist(&opts).expect("loading the vendored MNIST files")
    })
}

fn label_counts(dataset: &Dataset) -> [usize; 10] {
    let mut counts = [0usize; 10];
    for &label in dataset.labels() {
        counts[usize::from(label)] += 1;
    }
    counts
}

#[test]
fn mnist_shapes() {
    let mnist = mnist();
    assert_eq!(mnist.train.n_samples(), 60000);
    assert_eq!(mnist.test.n_samples(), 10000);
    assert_eq!(mnist.train.n_features(), 784);
    assert_eq!(mnist.test.n_features(), 784);
    assert_eq!(mnist.train.n_classes(), 10);
    assert_eq!(mnist.train.features().len(), 784 * 60000);
    assert_eq!(mnist.train.view().matrix().ncols(), 60000);
    assert!(mnist.train.is_memory_mapped());
}

#[test]
fn mnist_train_label_counts() {
    let counts = label_counts(&mnist().train);
    assert_eq!(counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
}

#[test]
fn mnist_test_label_counts() {
    let counts = label_counts(&mnist().test);
    assert_eq!(counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
}

#[test]
fn mnist_first_labels() {
    let mnist = mnist();
    assert_eq!(mnist.train.labels()[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(mnist.test.labels()[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
}

#[test]
fn mnist_mean_training_pixel() {
    let features = mnist().train.features();
    let sum: f64 = features.iter().map(|&v| f64::from(v)).sum();
    let mean = sum / features.len() as f64;

    // 33.3184 is published to 4 decimals, so the true mean is within 5e-5 of it.
    let mean_0_255 = mean * 255.0;
    assert!((mean_0_255 - 33.3184).abs() < 5e-5, "mean pixel on 0..255 scale = {mean_0_255}");
    assert!((mean - 0.13066).abs() < 5e-6, "mean pixel after /255 = {mean}");
}

#[test]
fn mnist_pixels_in_unit_interval() {
    let features = mnist().train.features();
    let min = features.iter().copied().fold(f32::INFINITY, f32::min);
    let max = features.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(min, 0.0);
    assert_eq!(max, 1.0);
}

#[test]
fn mnist_default_source_dir_has_files() {
    let dir = default_source_dir();
    for name in FILES {
        assert!(dir.join(name).is_file(), "{} missing in {}", name, dir.display());
    }
}

/// Returns the first 64-character lowercase hex token on the README line that mentions
/// `name` and matches `line_filter`.
fn readme_sum(readme: &str, name: &str, line_filter: impl Fn(&str) -> bool) -> String {
    let line = readme
        .lines()
        .find(|line| line.contains(name) && line_filter(line))
        .unwrap_or_else(|| panic!("no README line for {name}"));
    line.split(|c: char| !c.is_ascii_hexdigit())
        .find(|token| token.len() == 64)
        .unwrap_or_else(|| panic!("no SHA-256 on README line: {line}"))
        .to_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn mnist_sha256_matches_readme() {
    let dir = source_dir();
    let readme = fs::read_to_string(dir.join("README.md")).unwrap();

    for name in FILES {
        let path: &Path = &dir.join(name);
        let compressed = fs::read(path).unwrap();
        let mut decompressed = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut decompressed).unwrap();

        // Table rows start with "| <file>" and give the sum of the decompressed file. The
        // sha256sum block lists the sums of the .gz files.
        let idx_sum = readme_sum(&readme, name, |line| line.starts_with('|'));
        let gz_sum = readme_sum(&readme, name, |line| !line.starts_with('|'));
        assert_eq!(sha256_hex(&decompressed), idx_sum, "decompressed {name}");
        assert_eq!(sha256_hex(&compressed), gz_sum, "{name}");
    }
}
