//! `load_mnist` cache behaviour on small synthetic files with the MNIST names.

mod common;

use std::fs;
use std::path::Path;

use bcdnn_data::{load_mnist, DataError, IdxError, MnistOptions};
use common::{write_file, SyntheticIdx};

fn options(source: &Path, cache: &Path, use_mmap: bool) -> MnistOptions {
    MnistOptions { source_dir: source.to_path_buf(), cache_dir: cache.join("nested").join("cache"), use_mmap }
}

#[cfg(unix)]
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

#[test]
fn load_builds_then_reuses_stores() {
    let source = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let train = SyntheticIdx::new(51, 30, 3, 3);
    let test = SyntheticIdx::new(53, 12, 3, 3);
    train.write_mnist_train(source.path());
    test.write_mnist_test(source.path());
    let opts = options(source.path(), cache.path(), true);

    let mnist = load_mnist(&opts).unwrap();
    assert_eq!(mnist.train.n_samples(), 30);
    assert_eq!(mnist.test.n_samples(), 12);
    assert_eq!(mnist.train.n_features(), 9);
    assert_eq!(mnist.train.labels(), &train.labels[..]);
    assert_eq!(mnist.test.labels(), &test.labels[..]);
    assert_eq!(mnist.train.features()[4], f32::from(train.pixels[4]) / 255.0);
    assert!(mnist.train.is_memory_mapped());

    let train_store = opts.cache_dir.join("mnist-train.bcdnn");
    assert!(train_store.is_file(), "{} missing", train_store.display());
    assert!(opts.cache_dir.join("mnist-test.bcdnn").is_file());

    // A second load with unchanged sources opens the same file instead of rebuilding it.
    #[cfg(unix)]
    let first_inode = inode(&train_store);
    let again = load_mnist(&opts).unwrap();
    assert_eq!(again.train.labels(), &train.labels[..]);
    #[cfg(unix)]
    assert_eq!(inode(&train_store), first_inode, "store was rebuilt with unchanged sources");
}

#[test]
fn load_rebuilds_when_source_changes() {
    let source = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let first = SyntheticIdx::new(61, 20, 2, 2);
    first.write_mnist_train(source.path());
    SyntheticIdx::new(62, 5, 2, 2).write_mnist_test(source.path());
    let opts = options(source.path(), cache.path(), true);

    let mnist = load_mnist(&opts).unwrap();
    assert_eq!(mnist.train.labels(), &first.labels[..]);

    // Same sizes, different contents: only a content fingerprint detects this.
    let mut second = SyntheticIdx::new(63, 20, 2, 2);
    second.labels = first.labels.iter().map(|&l| (l + 1) % 10).collect();
    second.write_mnist_train(source.path());

    let reloaded = load_mnist(&opts).unwrap();
    assert_eq!(reloaded.train.labels(), &second.labels[..]);
    assert_eq!(reloaded.train.features()[0], f32::from(second.pixels[0]) / 255.0);
    // The earlier mapping still shows the old store, which was replaced, not overwritten.
    assert_eq!(mnist.train.labels(), &first.labels[..]);
}

#[test]
fn load_repairs_corrupted_store() {
    let source = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let train = SyntheticIdx::new(71, 20, 2, 2);
    train.write_mnist_train(source.path());
    SyntheticIdx::new(72, 5, 2, 2).write_mnist_test(source.path());
    let opts = options(source.path(), cache.path(), false);
    drop(load_mnist(&opts).unwrap());

    let store_path = opts.cache_dir.join("mnist-train.bcdnn");
    let mut bytes = fs::read(&store_path).unwrap();
    // Byte 129 is the second byte of the first feature, so only the payload CRC detects it.
    bytes[129] ^= 0x01;
    fs::write(&store_path, &bytes).unwrap();

    let mnist = load_mnist(&opts).unwrap();
    let expected: Vec<f32> = train.pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    assert_eq!(mnist.train.features(), &expected[..]);
    assert_eq!(mnist.train.labels(), &train.labels[..]);
    assert!(!mnist.train.is_memory_mapped());
}

#[test]
fn load_reports_missing_source() {
    let source = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = load_mnist(&options(source.path(), cache.path(), true)).unwrap_err();
    assert!(matches!(err, DataError::SourceNotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("train-images-idx3-ubyte.gz"), "{message}");
    assert!(message.contains("BCDNN_DATA_DIR"), "{message}");
}

#[test]
fn load_reports_invalid_source() {
    let source = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let train = SyntheticIdx::new(81, 20, 2, 2);
    train.write_mnist_train(source.path());
    SyntheticIdx::new(82, 5, 2, 2).write_mnist_test(source.path());
    // 21 labels for 20 images.
    let labels = common::idx_bytes(common::LABELS_MAGIC, &[21], &[1; 21]);
    write_file(source.path(), "train-labels-idx1-ubyte.gz", &common::gzip(&labels));

    let err = load_mnist(&options(source.path(), cache.path(), true)).unwrap_err();
    assert!(matches!(err, DataError::Idx(IdxError::CountMismatch { images: 20, labels: 21, .. })), "{err:?}");
}
