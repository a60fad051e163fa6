//! The f32 trainer (SIMD kernels, f32 products) follows the f64 trainer (scalar kernels, f64
//! products) within a tolerance set by f32 rounding.

mod common;

use bcdnn::{Config, Trainer};

fn relative_difference(a: &[f32], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

#[test]
fn f32_iterates_follow_f64_iterates() {
    let data = common::random_dataset(400, 64, 10, 3);
    // Widths past one AVX-512 register (16 lanes) with tails, and a 10-wide output layer.
    let config = Config::builder(64, &[100, 37], 10).alpha(2.0).seed(8).threads(2).tile_width(96).build().unwrap();
    let mut single: Trainer<f32> = Trainer::new(config.clone(), data.view()).unwrap();
    let mut double: Trainer<f64> = Trainer::new(config, data.view()).unwrap();

    // One f32 product of length k has a relative error near sqrt(k) * 2^-24 for random
    // signs; with k = 400 that is about 1.2e-6. The Cholesky solves run in f64 for both, and
    // the block updates are contractions, so the difference grows roughly linearly over a
    // few iterations: 3 iterations of about 10 blocks stay below 1e-4 with a wide margin.
    const TOLERANCE: f64 = 1e-4;
    for iteration in 1..=3 {
        let a = single.step().unwrap();
        let b = double.step().unwrap();
        let (a_obj, b_obj) = (a.previous_objective.unwrap().total(), b.previous_objective.unwrap().total());
        assert!(
            (a_obj - b_obj).abs() <= TOLERANCE * b_obj,
            "iteration {iteration}: objective f32 {a_obj} vs f64 {b_obj}"
        );
        for layer in 0..3 {
            let w = relative_difference(
                single.network().weights(layer).as_slice(),
                double.network().weights(layer).as_slice(),
            );
            assert!(w <= TOLERANCE, "iteration {iteration}, layer {layer}: weights differ by {w:e} (relative)");
            let u =
                relative_difference(single.preactivations(layer).as_slice(), double.preactivations(layer).as_slice());
            assert!(u <= TOLERANCE, "iteration {iteration}, layer {layer}: U differs by {u:e} (relative)");
            let v = relative_difference(single.activations(layer).as_slice(), double.activations(layer).as_slice());
            assert!(v <= TOLERANCE, "iteration {iteration}, layer {layer}: V differs by {v:e} (relative)");
        }
    }
}
