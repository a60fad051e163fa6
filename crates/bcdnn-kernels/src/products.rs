//! Matrix products through faer, with the parallelism chosen by problem size.

use crate::Real;
use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, MatMut, MatRef, Par};

/// Products below this many flops run sequentially: at that size the synchronisation of a
/// parallel product costs more than it saves.
pub const PARALLEL_FLOP_THRESHOLD: f64 = 4.0e7;

/// Picks `Par::Seq` for a small product and `Par::rayon(threads)` for a large one.
pub fn par_for_flops(flops: f64, threads: usize) -> Par {
    if threads <= 1 || flops < PARALLEL_FLOP_THRESHOLD {
        Par::Seq
    } else {
        Par::rayon(threads)
    }
}

/// `dst = alpha lhs rhs` (with `accumulate`, `dst += alpha lhs rhs`).
#[inline]
pub fn matmul<T: Real>(dst: MatMut<'_, T>, accumulate: bool, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>, alpha: T, par: Par) {
    let beta = if accumulate { Accum::Add } else { Accum::Replace };
    faer::linalg::matmul::matmul(dst, beta, lhs, rhs, alpha, par);
}

/// Writes the lower triangle (diagonal included) of `V V^T` into `dst`; the strict upper
/// triangle of `dst` is left untouched. Half the flops of a full product.
pub fn gram_lower<T: Real>(dst: MatMut<'_, T>, v: MatRef<'_, T>, par: Par) {
    faer::linalg::matmul::triangular::matmul(
        dst,
        BlockStructure::TriangularLower,
        Accum::Replace,
        v,
        BlockStructure::Rectangular,
        v.transpose(),
        BlockStructure::Rectangular,
        T::one(),
        par,
    );
}

/// Flops of a `m x k` by `k x n` product.
pub fn matmul_flops(m: usize, k: usize, n: usize) -> f64 {
    2.0 * m as f64 * k as f64 * n as f64
}
