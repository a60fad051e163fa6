//! The list of matrix products one BCD iteration performs, and the time faer alone needs for
//! them (the "GEMM floor" an iteration cannot beat on a given machine and thread count).

use crate::blocks::activation_costs;
use bcdnn_kernels::products::{gram_lower, matmul};
use faer::{MatMut, MatRef, Par};
use serde::Serialize;
use std::time::Instant;

/// Operand layout of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ProductKind {
    /// `C (m x n) = A (m x k) B (k x n)`.
    Plain,
    /// `C (m x n) = A (m x k) B^T`, with `B` stored `n x k` (a sample-dimension reduction).
    TransposedRhs,
    /// Lower triangle of `C (m x m) = A A^T`, `A` stored `m x k`: half the flops of a product.
    GramLower,
}

/// One product of an iteration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProductShape {
    /// The product in the notation of the formulas (`W_2 V_1`, `U_3 V_2^T`).
    pub name: String,
    pub kind: ProductKind,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub flops: f64,
}

impl ProductShape {
    fn new(name: String, kind: ProductKind, m: usize, k: usize, n: usize) -> Self {
        let full = 2.0 * m as f64 * k as f64 * n as f64;
        let flops = if kind == ProductKind::GramLower { full / 2.0 } else { full };
        Self { name, kind, m, k, n, flops }
    }
}

/// Lists the products over the `n` sample columns of one backward-order iteration, as the trainer
/// performs them (products of `d x d` matrices, factorisations and solves excluded). Layers
/// are numbered from 1 as in the formulas.
pub fn iteration_products(widths: &[usize], n: usize) -> Vec<ProductShape> {
    use ProductKind::*;
    let depth = widths.len() - 1;
    let mut products = Vec::new();
    for i in (1..=depth).rev() {
        let (d, m) = (widths[i], widths[i - 1]);
        if i < depth {
            // V_i update, with W = W_{i+1}: d_next x d.
            let dn = widths[i + 1];
            let (direct, woodbury) = activation_costs(d, dn);
            if direct <= woodbury {
                products.push(ProductShape::new(format!("W_{}^T U_{}", i + 1, i + 1), Plain, d, dn, n));
                products.push(ProductShape::new(format!("A_{i}^-1 S"), Plain, d, d, n));
            } else {
                products.push(ProductShape::new(format!("F_{i} U_{}", i + 1), Plain, dn, dn, n));
                products.push(ProductShape::new(format!("E_{i} Q"), Plain, dn, d, n));
                products.push(ProductShape::new(format!("W_{}^T K", i + 1), Plain, d, dn, n));
            }
        }
        products.push(ProductShape::new(format!("W_{i} V_{}", i - 1), Plain, d, m, n));
        if i > 1 {
            products.push(ProductShape::new(format!("V_{} V_{}^T", i - 1, i - 1), GramLower, m, n, m));
        }
        products.push(ProductShape::new(format!("U_{i} V_{}^T", i - 1), TransposedRhs, d, n, m));
    }
    products
}

/// Total flops of [`iteration_products`].
pub fn iteration_flops(widths: &[usize], n: usize) -> f64 {
    iteration_products(widths, n).iter().map(|p| p.flops).sum()
}

/// A product and the best time faer took for it.
#[derive(Clone, Debug, Serialize)]
pub struct TimedProduct {
    pub product: ProductShape,
    pub seconds: f64,
}

/// Times each product with faer on whole matrices (`Par::rayon(threads)`, or sequential for
/// one thread) on the current rayon pool, taking the best of `repeats` runs after one warm-up
/// run. Allocates the operands (about two `max_width x n` matrices) for the duration of the
/// call; operand values do not affect the time.
pub fn measure_gemm_floor(products: &[ProductShape], threads: usize, repeats: usize) -> Vec<TimedProduct> {
    let max_rows = products.iter().map(|p| p.m.max(p.k.min(p.n))).max().unwrap_or(0);
    let max_len = products.iter().map(|p| (p.m * p.k).max(p.k * p.n).max(p.m * p.n)).max().unwrap_or(0);
    let lhs: Vec<f32> = (0..max_len).map(|i| ((i % 97) as f32) * 1e-2).collect();
    let rhs: Vec<f32> = (0..max_len).map(|i| ((i % 89) as f32) * 1e-2).collect();
    let mut out = vec![0f32; max_len.max(max_rows * max_rows)];
    let par = if threads > 1 { Par::rayon(threads) } else { Par::Seq };

    let run = |p: &ProductShape, out: &mut [f32]| -> f64 {
        let start = Instant::now();
        match p.kind {
            ProductKind::Plain => {
                let a = MatRef::from_column_major_slice(&lhs[..p.m * p.k], p.m, p.k);
                let b = MatRef::from_column_major_slice(&rhs[..p.k * p.n], p.k, p.n);
                matmul(MatMut::from_column_major_slice_mut(&mut out[..p.m * p.n], p.m, p.n), false, a, b, 1.0, par);
            }
            ProductKind::TransposedRhs => {
                let a = MatRef::from_column_major_slice(&lhs[..p.m * p.k], p.m, p.k);
                let b = MatRef::from_column_major_slice(&rhs[..p.n * p.k], p.n, p.k);
                matmul(
                    MatMut::from_column_major_slice_mut(&mut out[..p.m * p.n], p.m, p.n),
                    false,
                    a,
                    b.transpose(),
                    1.0,
                    par,
                );
            }
            ProductKind::GramLower => {
                let a = MatRef::from_column_major_slice(&lhs[..p.m * p.k], p.m, p.k);
                gram_lower(MatMut::from_column_major_slice_mut(&mut out[..p.m * p.m], p.m, p.m), a, par);
            }
        }
        start.elapsed().as_secs_f64()
    };

    products
        .iter()
        .map(|p| {
            run(p, &mut out);
            let seconds = (0..repeats.max(1)).map(|_| run(p, &mut out)).fold(f64::INFINITY, f64::min);
            TimedProduct { product: p.clone(), seconds }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_model_of_paper_network() {
        // The three-hidden-layer MNIST network: about 2.85e12 flops per iteration, counting
        // one triangle of each Gram matrix and the Woodbury form for the last hidden layer.
        let flops = iteration_flops(&[784, 1500, 1500, 1500, 10], 60_000);
        assert!((flops - 2.854e12).abs() < 0.005e12, "flops per iteration {flops:e}");
    }

    #[test]
    fn layer_one_has_no_activation_update_or_gram() {
        let products = iteration_products(&[4, 6, 8], 10);
        let names: Vec<&str> = products.iter().map(|p| p.name.as_str()).collect();
        assert!(!names.iter().any(|n| n.contains("V_0 V_0")), "the input Gram is cached, not per iteration: {names:?}");
        assert!(!names.iter().any(|n| n.contains("A_0")), "there is no V_0 update: {names:?}");
        // Output layer: W_2 V_1, V_1 V_1^T, U_2 V_1^T. Layer 1: the direct V_1 update (two
        // products), W_1 V_0, U_1 V_0^T.
        assert_eq!(names.len(), 3 + 2 + 2, "{names:?}");
    }
}
