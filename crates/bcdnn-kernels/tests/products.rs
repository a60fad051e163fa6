//! Products and solves against naive oracles.

use bcdnn_kernels::products::{column_chunks_scratch_len, gram_lower, matmul, reduce_column_chunks};
use bcdnn_kernels::spd::SpdFactor;
use faer::{Mat, MatMut, MatRef, Par};
use rand::{Rng, SeedableRng};

fn random_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Naive `A B^T` for column-major `A` (`m x k`) and `B` (`n x k`).
fn naive_abt(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for j in 0..n {
        for i in 0..m {
            let mut acc = 0.0;
            for p in 0..k {
                acc += a[p * m + i] * b[p * n + j];
            }
            out[j * m + i] = acc;
        }
    }
    out
}

#[test]
fn chunked_reduction_matches_naive_product() {
    // Sizes around chunk boundaries, more chunks than columns included.
    for (m, d, n, chunks) in [(5, 3, 17, 1), (5, 3, 17, 2), (8, 6, 33, 3), (4, 4, 3, 8), (16, 2, 100, 5)] {
        let u = random_matrix(d, n, 1);
        let v = random_matrix(m, n, 2);
        let mut out = Mat::<f64>::zeros(d, m);
        let mut scratch = vec![0.0; column_chunks_scratch_len(d, m, chunks)];
        let u_ref = MatRef::from_column_major_slice(&u, d, n);
        let v_ref = MatRef::from_column_major_slice(&v, m, n);
        reduce_column_chunks(out.as_mut(), n, chunks, &mut scratch, |columns, partial: MatMut<'_, f64>| {
            let width = columns.len();
            matmul(
                partial,
                false,
                u_ref.subcols(columns.start, width),
                v_ref.subcols(columns.start, width).transpose(),
                1.0,
                Par::Seq,
            );
        });
        let expected = naive_abt(&u, &v, d, m, n);
        for j in 0..m {
            for i in 0..d {
                let (got, want) = (out[(i, j)], expected[j * d + i]);
                assert!(
                    (got - want).abs() <= 1e-12 * n as f64,
                    "m={m} d={d} n={n} chunks={chunks}: C[{i},{j}] = {got}, naive {want}"
                );
            }
        }
    }
}

#[test]
fn gram_lower_matches_naive_lower_triangle() {
    for (m, n) in [(1, 1), (7, 13), (17, 16), (33, 5)] {
        let v = random_matrix(m, n, 3);
        let mut gram = Mat::<f64>::from_fn(m, m, |_, _| f64::NAN);
        gram_lower(gram.as_mut(), MatRef::from_column_major_slice(&v, m, n), Par::Seq);
        let expected = naive_abt(&v, &v, m, m, n);
        for j in 0..m {
            for i in j..m {
                let (got, want) = (gram[(i, j)], expected[j * m + i]);
                assert!((got - want).abs() <= 1e-12 * n as f64, "m={m} n={n}: G[{i},{j}] = {got}, naive {want}");
            }
            for i in 0..j {
                assert!(gram[(i, j)].is_nan(), "m={m} n={n}: upper entry ({i},{j}) was written");
            }
        }
    }
}

#[test]
fn cholesky_reconstructs_and_solves() {
    for (dim, k, threads) in [(1, 1, 1), (5, 3, 2), (40, 17, 2), (129, 64, 3)] {
        // A = B B^T + I is symmetric positive definite.
        let b = random_matrix(dim, dim, 4);
        let a = naive_abt(&b, &b, dim, dim, dim);
        let a = |i: usize, j: usize| a[j * dim + i] + if i == j { 1.0 } else { 0.0 };
        let mut spd = SpdFactor::new(dim + 3, Par::Seq);
        {
            let mut m = spd.matrix_mut(dim);
            for j in 0..dim {
                for i in j..dim {
                    m[(i, j)] = a(i, j);
                }
            }
        }
        spd.factor(Par::Seq).unwrap();

        // L L^T = A
        let l = spd.factor_ref();
        for j in 0..dim {
            for i in j..dim {
                let mut acc = 0.0;
                for p in 0..=j {
                    acc += l[(i, p)] * l[(j, p)];
                }
                assert!(
                    (acc - a(i, j)).abs() <= 1e-10 * dim as f64,
                    "dim {dim}: (L L^T)[{i},{j}] = {acc}, A = {}",
                    a(i, j)
                );
            }
        }

        // A X = R, solved in parallel column chunks
        let r = random_matrix(dim, k, 5);
        let mut x = r.clone();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| spd.solve_columns(&mut x, threads));
        for c in 0..k {
            for i in 0..dim {
                let ax: f64 = (0..dim).map(|p| a(i, p) * x[c * dim + p]).sum();
                assert!(
                    (ax - r[c * dim + i]).abs() <= 1e-9 * dim as f64,
                    "dim {dim}: (A X - R)[{i},{c}] = {}",
                    ax - r[c * dim + i]
                );
            }
        }

        // A A^{-1} = I
        let mut inverse = vec![0.0; dim * dim];
        pool.install(|| spd.inverse_into(&mut inverse, threads));
        for j in 0..dim {
            for i in 0..dim {
                let value: f64 = (0..dim).map(|p| a(i, p) * inverse[j * dim + p]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((value - want).abs() <= 1e-9 * dim as f64, "dim {dim}: (A A^-1)[{i},{j}] = {value}");
            }
        }
    }
}

#[test]
fn indefinite_matrix_is_rejected_with_pivot() {
    let mut spd = SpdFactor::new(3, Par::Seq);
    {
        let mut m = spd.matrix_mut(3);
        m[(0, 0)] = 1.0;
        m[(1, 0)] = 2.0;
        m[(1, 1)] = 1.0;
        m[(2, 0)] = 0.0;
        m[(2, 1)] = 0.0;
        m[(2, 2)] = 1.0;
    }
    let error = spd.factor(Par::Seq).unwrap_err();
    assert_eq!(error.pivot, 1, "the second pivot 1 - 2^2 is negative: {error}");
}
