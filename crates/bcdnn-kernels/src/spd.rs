//! Symmetric positive definite systems, factorised by Cholesky in `f64`.
//!
//! The BCD block solves are small (`d x d` with `d` a layer width) next to the `d x n`
//! products around them, so they run in `f64` at little cost. The Gram matrices of the weight
//! update have condition numbers up to `rho lambda_max(G) / alpha`, which can exceed `1e6` on
//! real data, where an `f32` factorisation would lose most of its digits.

use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::cholesky::llt;
use faer::{Mat, MatMut, MatRef, Par};

/// A Cholesky factorisation failed: the matrix is not numerically positive definite.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("matrix of dimension {dim} is not positive definite: pivot {pivot} is not positive")]
pub struct NotPositiveDefinite {
    pub dim: usize,
    pub pivot: usize,
}

/// Cholesky factor `L` (with `L L^T = A`) of a matrix of dimension up to a fixed maximum,
/// with every buffer allocated once at construction.
pub struct SpdFactor {
    l: Mat<f64>,
    dim: usize,
    mem: MemBuffer,
}

impl SpdFactor {
    /// Allocates room for matrices of dimension up to `max_dim`.
    pub fn new(max_dim: usize, par: Par) -> Self {
        let req = StackReq::any_of(&[llt::factor::cholesky_in_place_scratch::<f64>(max_dim, par, Default::default())]);
        Self { l: Mat::zeros(max_dim, max_dim), dim: 0, mem: MemBuffer::new(req) }
    }

    /// Current dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Returns the `dim x dim` matrix to factorise. Fill its lower triangle, then call
    /// [`Self::factor`].
    pub fn matrix_mut(&mut self, dim: usize) -> MatMut<'_, f64> {
        assert!(dim <= self.l.nrows(), "dimension {dim} exceeds the allocated {}", self.l.nrows());
        self.dim = dim;
        self.l.as_mut().submatrix_mut(0, 0, dim, dim)
    }

    /// Factorises in place the matrix whose lower triangle was written through
    /// [`Self::matrix_mut`].
    pub fn factor(&mut self, par: Par) -> Result<(), NotPositiveDefinite> {
        let dim = self.dim;
        let a = self.l.as_mut().submatrix_mut(0, 0, dim, dim);
        let stack = MemStack::new(&mut self.mem);
        llt::factor::cholesky_in_place(a, Default::default(), par, stack, Default::default()).map(|_| ()).map_err(|e| {
            match e {
                llt::factor::LltError::NonPositivePivot { index } => NotPositiveDefinite { dim, pivot: index },
            }
        })
    }

    /// Returns the factor `L`; only its lower triangle is meaningful.
    pub fn factor_ref(&self) -> MatRef<'_, f64> {
        self.l.as_ref().submatrix(0, 0, self.dim, self.dim)
    }

    /// Overwrites the column-major `dim x k` matrix in `rhs` with `A^{-1} rhs`, solving
    /// `threads` chunks of columns in parallel on the current rayon pool, each sequentially.
    /// Each column's result does not depend on the chunking.
    pub fn solve_columns(&self, rhs: &mut [f64], threads: usize) {
        use rayon::prelude::*;
        let dim = self.dim;
        if dim == 0 {
            return;
        }
        assert_eq!(
            rhs.len() % dim,
            0,
            "right-hand side of length {} is not a whole number of columns of {dim}",
            rhs.len()
        );
        let columns = rhs.len() / dim;
        let per_chunk = columns.div_ceil(threads.max(1)).max(1);
        let factor = self.factor_ref();
        rhs.par_chunks_mut(dim * per_chunk).for_each(|chunk| {
            let view = MatMut::from_column_major_slice_mut(chunk, dim, chunk.len() / dim);
            llt::solve::solve_in_place(factor, view, Par::Seq, MemStack::new(&mut []));
        });
    }

    /// Writes `A^{-1}` into the column-major `dim x dim` buffer `out` by solving against the
    /// identity, in parallel over column chunks.
    pub fn inverse_into(&self, out: &mut [f64], threads: usize) {
        let dim = self.dim;
        let out = &mut out[..dim * dim];
        out.fill(0.0);
        for j in 0..dim {
            out[j * dim + j] = 1.0;
        }
        self.solve_columns(out, threads);
    }
}
