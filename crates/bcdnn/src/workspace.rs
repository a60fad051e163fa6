//! Buffers allocated once when training starts and reused by every iteration.

use crate::network::forward_scratch_len;
use bcdnn_kernels::products::column_chunks_scratch_len;
use bcdnn_kernels::spd::SpdFactor;
use bcdnn_kernels::tiling::{Partial, ThreadScratch, PARTIAL_LEN};
use bcdnn_kernels::{ColMatrix, Real};
use faer::Par;

/// Scratch of the block updates. Sizes are the maxima over layers, so one workspace serves
/// every layer and no iteration allocates.
pub(crate) struct Workspace<T> {
    /// Per-thread tile buffers: three `max_width x tile_width` blocks per thread.
    pub scratch: ThreadScratch<T>,
    /// One partial-sum slot per tile of the training set.
    pub partials: Vec<Partial>,
    /// The all-ones vector `1` of length `n`, for the row sums `V 1` and `U 1`.
    pub ones: Vec<T>,
    /// Augmented Gram matrix `G = Vt Vt^T` of the current layer's input.
    pub gram: ColMatrix<T>,
    /// Augmented cross product `C = U Vt^T` of the current layer.
    pub cross: ColMatrix<T>,
    /// `G` of the network input `X`, computed once per run.
    pub input_gram: ColMatrix<T>,
    /// Cholesky factorisations of the small systems.
    pub spd: SpdFactor,
    /// Per-chunk partial products of the Gram and cross products (one block per thread).
    pub chunk_scratch: Vec<T>,
    /// `f64` right-hand sides and solutions of the weight update, column-major `(m + 1) x d`.
    pub rhs: Vec<f64>,
    /// `f64` inverse of the activation-update system, column-major.
    pub inverse: Vec<f64>,
    /// Precomputed factor of the activation update: `A^{-1}` (direct form) or
    /// `rho (c I + rho W W^T)^{-1}` (Woodbury form).
    pub factor: ColMatrix<T>,
    /// Woodbury form only: `E = (rho / c) (c I + rho W W^T)^{-1} W`.
    pub woodbury_e: ColMatrix<T>,
    /// Constant column added in the activation update (`-rho W^T b` or `-rho M^{-1} b`).
    pub shift: Vec<T>,
}

impl<T: Real> Workspace<T> {
    pub fn new(widths: &[usize], samples: usize, tile_width: usize, threads: usize) -> Self {
        let max_input = widths[..widths.len() - 1].iter().copied().max().unwrap_or(0);
        let max_output = widths[1..].iter().copied().max().unwrap_or(0);
        let max_width = widths.iter().copied().max().unwrap_or(0);
        let tiles = samples.div_ceil(tile_width);
        let slot_len = (3 * max_width * tile_width).max(forward_scratch_len(widths, tile_width));
        let d0 = widths[0];
        Self {
            scratch: ThreadScratch::new(threads, slot_len),
            partials: vec![[0.0; PARTIAL_LEN]; tiles],
            ones: vec![T::one(); samples],
            gram: ColMatrix::zeros(max_input + 1, max_input + 1),
            cross: ColMatrix::zeros(max_output, max_input + 1),
            input_gram: ColMatrix::zeros(d0 + 1, d0 + 1),
            spd: SpdFactor::new((max_input + 1).max(max_width), Par::Seq),
            chunk_scratch: vec![
                T::zero();
                column_chunks_scratch_len(
                    max_input + 1,
                    (max_input + 1).max(max_output),
                    threads.max(1)
                )
            ],
            rhs: vec![0.0; (max_input + 1) * max_output],
            inverse: vec![0.0; max_width * max_width],
            factor: ColMatrix::zeros(max_width, max_width),
            woodbury_e: ColMatrix::zeros(max_width, max_width),
            shift: vec![T::zero(); max_width],
        }
    }

    /// Bytes held, for memory reports.
    pub fn size_bytes(&self) -> usize {
        let t = std::mem::size_of::<T>();
        self.scratch.size_bytes()
            + self.partials.len() * std::mem::size_of::<Partial>()
            + self.ones.len() * t
            + self.gram.size_bytes()
            + self.cross.size_bytes()
            + self.input_gram.size_bytes()
            + self.chunk_scratch.len() * t
            + (self.rhs.len() + self.inverse.len()) * 8
            + self.factor.size_bytes()
            + self.woodbury_e.size_bytes()
            + self.shift.len() * t
    }
}
