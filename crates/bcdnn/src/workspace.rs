//! Buffers allocated once when training starts and reused by every iteration.

use crate::config::{Algorithm, Config, InnerSolve};
use crate::network::forward_scratch_len;
use crate::two_splitting::{self, WeightBuffers};
use bcdnn_kernels::fista::{fista_weights, FistaScratch, InnerReport, WeightProblem};
use bcdnn_kernels::model::{ActivationRegulariser, WeightRegulariser};
use bcdnn_kernels::products::column_chunks_scratch_len;
use bcdnn_kernels::spd::SpdFactor;
use bcdnn_kernels::tiling::{Partial, ThreadScratch, PARTIAL_LEN};
use bcdnn_kernels::{ColMatrix, Real};
use faer::{MatMut, MatRef, Par};
use std::sync::Mutex;

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
    /// Lipschitz bound of the current regularised activation update.
    pub lipschitz: f64,
    /// Buffers of the weight updates without a closed form; `None` when no layer needs them.
    pub fista: Option<WeightFista>,
    /// Per-thread buffers of the regularised activation updates (one per worker thread;
    /// empty when no layer needs them).
    pub column_fista: Vec<Mutex<FistaScratch<T>>>,
    /// Buffers of the two-splitting weight updates; `None` for three-splitting.
    pub two_splitting: Option<WeightBuffers<T>>,
}

/// `f64` copies of `G`, `C` and `Wt^old`, the solution, and the FISTA scratch of a weight
/// update without a closed form.
pub struct WeightFista {
    gram: Vec<f64>,
    cross: Vec<f64>,
    previous: Vec<f64>,
    solution: Vec<f64>,
    scratch: FistaScratch<f64>,
    rows: usize,
    cols: usize,
}

impl WeightFista {
    fn new(max_rows: usize, max_cols: usize) -> Self {
        Self {
            gram: vec![0.0; max_cols * max_cols],
            cross: vec![0.0; max_rows * max_cols],
            previous: vec![0.0; max_rows * max_cols],
            solution: vec![0.0; max_rows * max_cols],
            scratch: FistaScratch::new(max_rows, max_cols),
            rows: 0,
            cols: 0,
        }
    }

    /// Returns the `dim x dim` Gram matrix to fill (both triangles).
    pub fn gram_mut(&mut self, dim: usize) -> MatMut<'_, f64> {
        self.cols = dim;
        MatMut::from_column_major_slice_mut(&mut self.gram[..dim * dim], dim, dim)
    }

    /// Returns the `d x dim` cross product to fill.
    pub fn cross_mut(&mut self, d: usize, dim: usize) -> MatMut<'_, f64> {
        self.rows = d;
        MatMut::from_column_major_slice_mut(&mut self.cross[..d * dim], d, dim)
    }

    /// Returns the current `Wt = [W b]` to fill, `d x dim`.
    pub fn old_mut(&mut self, d: usize, dim: usize) -> MatMut<'_, f64> {
        MatMut::from_column_major_slice_mut(&mut self.previous[..d * dim], d, dim)
    }

    /// Runs FISTA on the filled problem.
    pub fn solve(&mut self, reg: WeightRegulariser, rho: f64, alpha: f64, inner: InnerSolve) -> InnerReport {
        let (d, dim) = (self.rows, self.cols);
        let problem = WeightProblem {
            gram: MatRef::from_column_major_slice(&self.gram[..dim * dim], dim, dim),
            cross: MatRef::from_column_major_slice(&self.cross[..d * dim], d, dim),
            previous: &self.previous[..d * dim],
            rho,
            alpha,
            reg,
        };
        fista_weights(&mut self.solution[..d * dim], &problem, &inner.kernels(), &mut self.scratch)
    }

    /// Returns the solution of the last [`WeightFista::solve`], `d x dim`.
    pub fn solution(&self, d: usize, dim: usize) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.solution[..d * dim], d, dim)
    }

    fn size_bytes(&self) -> usize {
        (self.gram.len() + self.cross.len() + self.previous.len() + self.solution.len()) * 8 + self.scratch.size_bytes()
    }
}

impl<T: Real> Workspace<T> {
    /// Allocates the scratch of every block update of `config` on `samples` samples. The
    /// tile width must already be clamped to `samples`.
    pub fn new(config: &Config, samples: usize, threads: usize) -> Self {
        let widths = &config.widths[..];
        let tile_width = config.tile_width;
        let max_input = widths[..widths.len() - 1].iter().copied().max().unwrap_or(0);
        let max_output = widths[1..].iter().copied().max().unwrap_or(0);
        let max_width = widths.iter().copied().max().unwrap_or(0);
        let tiles = samples.div_ceil(tile_width);
        // Six `max_width x tile_width` blocks: the activation update's q1, q2, Q, R, result and
        // the product of a regularised update's operator.
        let two_split = config.algorithm == Algorithm::TwoSplitting;
        let slot_len = (6 * max_width * tile_width).max(forward_scratch_len(widths, tile_width)).max(if two_split {
            two_splitting::tile_scratch_len(max_width, tile_width)
        } else {
            0
        });
        let needs_weight_fista = config.weight_regularisers.iter().any(|r| r.closed_form_l2().is_none());
        let needs_column_fista =
            config.activation_regularisers[..config.depth() - 1].iter().any(|r| *r != ActivationRegulariser::None);
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
            lipschitz: 0.0,
            fista: needs_weight_fista.then(|| WeightFista::new(max_output, max_input + 1)),
            column_fista: if needs_column_fista {
                (0..threads.max(1)).map(|_| Mutex::new(FistaScratch::new(max_width, tile_width))).collect()
            } else {
                Vec::new()
            },
            two_splitting: two_split.then(|| WeightBuffers::new(widths, samples)),
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
            + self.fista.as_ref().map_or(0, |f| f.size_bytes())
            + self.two_splitting.as_ref().map_or(0, |b| b.size_bytes())
            + self.column_fista.iter().map(|f| f.lock().map_or(0, |f| f.size_bytes())).sum::<usize>()
    }
}
