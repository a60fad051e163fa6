//! The tile-level output kernels against the scalar per-column references.

use bcdnn_kernels::elementwise::{scalar, Elementwise, OutputVSums, USums};
use rand::{Rng, SeedableRng};

fn close(got: f32, want: f32) -> bool {
    (got - want).abs() <= 4.0 * f32::EPSILON * (1.0 + want.abs())
}

fn close_sum(got: f64, want: f64, terms: usize) -> bool {
    (got - want).abs() <= (terms as f64 + 4.0) * f32::EPSILON as f64 * want.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn output_v_step_tile_matches_scalar_columns() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(31);
    // Rows below, at and above one AVX-512 register; column counts around the group of 16.
    for rows in [1, 2, 3, 9, 10, 15, 16, 17, 33] {
        for cols in [0, 1, 5, 15, 16, 17, 31, 32, 33, 70] {
            let v_old: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let u: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let labels: Vec<u8> = (0..cols).map(|_| rng.random_range(0..rows) as u8).collect();
            let (weight, gamma, alpha) = (0.4f32, 0.7f32, 1.3f32);

            let mut tile = v_old.clone();
            let got = f32::output_v_step_tile(&mut tile, &u, &labels, rows, weight, gamma, alpha);
            let mut reference = v_old.clone();
            let mut want = OutputVSums::default();
            for ((v, u), &label) in reference.chunks_exact_mut(rows).zip(u.chunks_exact(rows)).zip(&labels) {
                want.add(scalar::output_v_step(v, u, label as usize, weight, gamma, alpha));
            }
            for (i, (&g, &w)) in tile.iter().zip(&reference).enumerate() {
                assert!(close(g, w), "rows {rows}, cols {cols}: entry {i} is {g}, scalar {w}");
            }
            let sums = [
                ("residual_old", got.residual_old, want.residual_old),
                ("residual_new", got.residual_new, want.residual_new),
                ("dist_old", got.dist_old, want.dist_old),
                ("dist_new", got.dist_new, want.dist_new),
                ("step", got.step, want.step),
            ];
            for (name, got, want) in sums {
                assert!(close_sum(got, want, rows * cols), "rows {rows}, cols {cols}: {name} {got} vs {want}");
            }
        }
    }
}

#[test]
fn output_u_step_tile_matches_scalar_columns() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(32);
    for rows in [1, 2, 3, 9, 10, 15, 16, 17, 33] {
        for cols in [0, 1, 5, 15, 16, 17, 31, 32, 33, 70] {
            let u_old: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let p: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let v: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let bias: Vec<f32> = (0..rows).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (gamma, rho) = (1.1f32, 0.6f32);

            let mut tile = u_old.clone();
            let got = f32::output_u_step_tile(&mut tile, &p, &bias, &v, gamma, rho);
            let mut reference = u_old.clone();
            let mut want = USums::default();
            for ((u, p), v) in reference.chunks_exact_mut(rows).zip(p.chunks_exact(rows)).zip(v.chunks_exact(rows)) {
                want.add(scalar::output_u_step(u, p, &bias, v, gamma, rho));
            }
            for (i, (&g, &w)) in tile.iter().zip(&reference).enumerate() {
                assert!(close(g, w), "rows {rows}, cols {cols}: entry {i} is {g}, scalar {w}");
            }
            let n = rows * cols;
            assert!(
                close_sum(got.coupling_old, want.coupling_old, n),
                "rows {rows}, cols {cols}: coupling {} vs {}",
                got.coupling_old,
                want.coupling_old
            );
            assert!(
                close_sum(got.link_new, want.link_new, n),
                "rows {rows}, cols {cols}: link {} vs {}",
                got.link_new,
                want.link_new
            );
            assert!(close_sum(got.step, want.step, n), "rows {rows}, cols {cols}: step {} vs {}", got.step, want.step);
        }
    }
}
