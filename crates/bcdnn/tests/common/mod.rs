//! Synthetic data shared by the trainer tests.
#![allow(dead_code)]

use bcdnn_data::Dataset;
use rand::{Rng, SeedableRng};

/// `n` samples of `features` uniform values in [0, 1) with labels in `0..classes`, from a
/// seeded generator.
pub fn random_dataset(n: usize, features: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n * features).map(|_| rng.random::<f32>()).collect();
    let y: Vec<u8> = (0..n).map(|_| rng.random_range(0..classes) as u8).collect();
    Dataset::from_vecs(x, y, features, classes).expect("synthetic dataset is valid")
}
