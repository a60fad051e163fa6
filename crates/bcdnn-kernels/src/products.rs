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
pub fn matmul<T: Real>(
    dst: MatMut<'_, T>,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
    par: Par,
) {
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

/// Elements of scratch that [`reduce_column_chunks`] needs for a `rows x cols` result split
/// into `chunks` column chunks.
pub fn column_chunks_scratch_len(rows: usize, cols: usize, chunks: usize) -> usize {
    rows * cols * chunks
}

/// Computes `out = sum_c f(c)` where `f` writes the contribution of sample columns
/// `chunk_range(c)` (a `rows x cols` product over that chunk) into its own buffer.
///
/// The `n` sample columns are split into `chunks` contiguous chunks, one per thread. Each
/// chunk's product runs sequentially on its own thread, and the partial results are added in
/// chunk order, so the result is bitwise reproducible for a fixed chunk count. This keeps
/// faer's own threading (which allocates per call) out of the iteration.
///
/// `scratch` must hold at least [`column_chunks_scratch_len`] elements.
pub fn reduce_column_chunks<T, F>(mut out: MatMut<'_, T>, n: usize, chunks: usize, scratch: &mut [T], f: F)
where
    T: Real,
    F: Fn(std::ops::Range<usize>, MatMut<'_, T>) + Sync,
{
    use rayon::prelude::*;
    let (rows, cols) = (out.nrows(), out.ncols());
    let chunks = chunks.clamp(1, n.max(1));
    let block = rows * cols;
    let scratch = &mut scratch[..block * chunks];
    let chunk_width = n.div_ceil(chunks);

    scratch.par_chunks_mut(block).enumerate().for_each(|(c, buffer)| {
        let start = (c * chunk_width).min(n);
        let end = ((c + 1) * chunk_width).min(n);
        f(start..end, MatMut::from_column_major_slice_mut(buffer, rows, cols));
    });

    for j in 0..cols {
        for i in 0..rows {
            let mut total = scratch[j * rows + i];
            for c in 1..chunks {
                total += scratch[c * block + j * rows + i];
            }
            out[(i, j)] = total;
        }
    }
}
