//! Helpers shared by the integration tests: synthetic IDX files and seeded random data.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Encodes an IDX file: big-endian magic, big-endian u32 dimensions, then `payload`.
pub fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn random_pixels(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random()).collect()
}

pub fn random_labels(seed: u64, len: usize, classes: u8) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(0..classes)).collect()
}

pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A small synthetic image/label pair, `n` images of `rows` x `cols` pixels, 10 classes.
pub struct SyntheticIdx {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl SyntheticIdx {
    pub fn new(seed: u64, n: usize, rows: usize, cols: usize) -> Self {
        SyntheticIdx {
            n,
            rows,
            cols,
            pixels: random_pixels(seed, n * rows * cols),
            labels: random_labels(seed + 1, n, 10),
        }
    }

    pub fn images_idx(&self) -> Vec<u8> {
        let dims = [self.n as u32, self.rows as u32, self.cols as u32];
        idx_bytes(IMAGES_MAGIC, &dims, &self.pixels)
    }

    pub fn labels_idx(&self) -> Vec<u8> {
        idx_bytes(LABELS_MAGIC, &[self.n as u32], &self.labels)
    }

    /// Writes the pair under the MNIST training-set names, gzip-compressed.
    pub fn write_mnist_train(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let images = write_file(dir, "train-images-idx3-ubyte.gz", &gzip(&self.images_idx()));
        let labels = write_file(dir, "train-labels-idx1-ubyte.gz", &gzip(&self.labels_idx()));
        (images, labels)
    }

    /// Writes the pair under the MNIST test-set names, uncompressed.
    pub fn write_mnist_test(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let images = write_file(dir, "t10k-images-idx3-ubyte", &self.images_idx());
        let labels = write_file(dir, "t10k-labels-idx1-ubyte", &self.labels_idx());
        (images, labels)
    }
}
