//! The dense solves of the weight and activation updates.
//!
//! `weights_solve` times the solve of the weight update of a layer with `m` inputs and `d`
//! outputs, `(alpha I + rho G) Wt^T = (alpha Wt^old + rho C)^T` with `H = alpha I + rho G` of
//! dimension `m + 1` (the weights and the bias), in `f64`. The `inverse` variant forms `H^{-1}`
//! explicitly and multiplies, `Wt = (alpha Wt^old + rho C) H^{-1}`. The `cholesky` variant is
//! the trainer's: it factorises `H = L L^T` and solves for the `d` columns of `Wt^T`. Both start
//! from the same Gram matrix `G` and include forming `H` and the right-hand side. The data is
//! random, with `G = V V^T / n` for a random `V`, because the operation count does not depend
//! on the values.
//!
//! `activation` times the products of the hidden activation update of a layer of width `d`
//! followed by one of width `d_next`, in `f32`, over `n` sample columns in the trainer's tiles.
//! The `direct` form applies `A^{-1} = (gamma I + rho W^T W)^{-1}` (`d x d`) and the `woodbury`
//! form applies `(gamma I + rho W W^T)^{-1}` (`d_next x d_next`). The factors are random
//! matrices of the right shapes, built before timing, and the elementwise steps between the
//! products are left out.
//!
//! Ids read `group/variant/shape/threads`. Throughput is in flop: criterion prints elements/s,
//! and one element is one flop. Each variant counts the flops it performs, to leading order, so
//! for one shape a higher rate does not always mean a shorter time.
//!
//! Run with `cargo bench -p bcdnn-benches --bench solves`.

use std::hint::black_box;
use std::time::Duration;

use bcdnn_kernels::matrix::{columns_view, slice_view, slice_view_mut};
use bcdnn_kernels::products::{gram_lower, matmul};
use bcdnn_kernels::spd::SpdFactor;
use bcdnn_kernels::tiling::{for_each_tile_mut, Partial, ThreadScratch, TileGrid, DEFAULT_TILE_WIDTH, PARTIAL_LEN};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::cholesky::llt;
use faer::{Mat, MatMut, Par};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Proximal and penalty weights of the weight update. Any positive values cost the same.
const ALPHA: f64 = 1.0;
const RHO: f64 = 1.0;

/// Sample columns of the activation update.
const SAMPLES: usize = 8192;

/// Thread counts of every benchmark.
const THREADS: [usize; 2] = [1, 2];

/// `(m, d)`: inputs and outputs of the layers whose weight update is timed.
const WEIGHT_LAYERS: [(usize, usize); 3] = [(512, 512), (784, 1500), (1500, 1500)];

/// Returns a `rows x cols` column-major matrix with entries uniform in `[-1, 1)`.
fn random_matrix<T: From<f32>>(rows: usize, cols: usize, seed: u64) -> Vec<T> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols).map(|_| T::from(rng.random_range(-1.0f32..1.0))).collect()
}

fn thread_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("failed to start the benchmark thread pool")
}

fn par_for_threads(threads: usize) -> Par {
    if threads == 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    }
}

/// The inputs of one weight update: the Gram matrix `G` (`dim x dim`, lower triangle), the old
/// augmented weights `Wt^old` and the cross product `C = U Vt^T` (both `d x dim`).
struct WeightProblem {
    dim: usize,
    d: usize,
    gram: Vec<f64>,
    weights_old: Vec<f64>,
    cross: Vec<f64>,
}

impl WeightProblem {
    fn new(m: usize, d: usize) -> Self {
        let dim = m + 1;

        // G = V V^T / n with n = 2 dim is positive semidefinite, so H = alpha I + rho G is positive definite
        let n = 2 * dim;
        let v = random_matrix::<f64>(dim, n, 1);
        let mut gram = vec![0.0; dim * dim];
        gram_lower(slice_view_mut(&mut gram, dim), slice_view(&v, dim), Par::Seq);
        gram.iter_mut().for_each(|g| *g /= n as f64);

        Self { dim, d, gram, weights_old: random_matrix(d, dim, 2), cross: random_matrix(d, dim, 3) }
    }

    fn shape(&self) -> String {
        format!("m{}-d{}", self.dim - 1, self.d)
    }

    /// Writes the lower triangle of `H = alpha I + rho G` into `h`.
    fn fill_h(&self, mut h: MatMut<'_, f64>) {
        let gram = slice_view(&self.gram, self.dim);
        for j in 0..self.dim {
            for i in j..self.dim {
                h[(i, j)] = RHO * gram[(i, j)];
            }
            h[(j, j)] += ALPHA;
        }
    }

    /// Entry `(r, j)` of `R = alpha Wt^old + rho C`.
    fn rhs_entry(&self, r: usize, j: usize) -> f64 {
        let index = j * self.d + r;
        ALPHA * self.weights_old[index] + RHO * self.cross[index]
    }

    /// Flops of the `cholesky` variant: `dim^3 / 3` for the factorisation and `2 dim^2 d` for
    /// the two triangular solves on `d` columns.
    fn cholesky_flops(&self) -> u64 {
        let (dim, d) = (self.dim as u64, self.d as u64);
        dim * dim * dim / 3 + 2 * dim * dim * d
    }

    /// Flops of the `inverse` variant: `dim^3 / 3` each for the factorisation, the inverse of
    /// `L` and the product `L^{-T} L^{-1}` (one triangle), and `2 d dim^2` for `R H^{-1}`.
    fn inverse_flops(&self) -> u64 {
        let (dim, d) = (self.dim as u64, self.d as u64);
        dim * dim * dim + 2 * d * dim * dim
    }
}

/// Buffers of the `inverse` variant, allocated once.
struct InverseRoute {
    factor: Mat<f64>,
    inverse: Mat<f64>,
    rhs: Mat<f64>,
    weights: Mat<f64>,
    stack: MemBuffer,
}

impl InverseRoute {
    fn new(problem: &WeightProblem, par: Par) -> Self {
        let (dim, d) = (problem.dim, problem.d);
        let stack = MemBuffer::new(StackReq::any_of(&[
            llt::factor::cholesky_in_place_scratch::<f64>(dim, par, Default::default()),
            llt::inverse::inverse_scratch::<f64>(dim, par),
        ]));
        Self {
            factor: Mat::zeros(dim, dim),
            inverse: Mat::zeros(dim, dim),
            rhs: Mat::zeros(d, dim),
            weights: Mat::zeros(d, dim),
            stack,
        }
    }

    /// Computes `Wt = (alpha Wt^old + rho C) H^{-1}` through the explicit inverse, every step
    /// with `par`.
    fn run(&mut self, problem: &WeightProblem, par: Par) {
        let dim = problem.dim;

        // H = L L^T
        problem.fill_h(self.factor.as_mut());
        llt::factor::cholesky_in_place(
            self.factor.as_mut(),
            Default::default(),
            par,
            MemStack::new(&mut self.stack),
            Default::default(),
        )
        .expect("H = alpha I + rho G is positive definite");

        // H^{-1} = L^{-T} L^{-1}: faer writes the lower triangle, the upper one is its mirror
        llt::inverse::inverse(self.inverse.as_mut(), self.factor.as_ref(), par, MemStack::new(&mut self.stack));
        for j in 1..dim {
            for i in 0..j {
                self.inverse[(i, j)] = self.inverse[(j, i)];
            }
        }

        // R = alpha Wt^old + rho C
        for j in 0..dim {
            for r in 0..problem.d {
                self.rhs[(r, j)] = problem.rhs_entry(r, j);
            }
        }

        // Wt = R H^{-1}
        matmul(self.weights.as_mut(), false, self.rhs.as_ref(), self.inverse.as_ref(), 1.0, par);
    }
}

/// Buffers of the `cholesky` variant, allocated once.
struct CholeskyRoute {
    spd: SpdFactor,
    /// `R^T = (alpha Wt^old + rho C)^T`, `dim x d`, overwritten with `Wt^T`.
    rhs: Vec<f64>,
}

impl CholeskyRoute {
    fn new(problem: &WeightProblem) -> Self {
        Self { spd: SpdFactor::new(problem.dim, Par::Seq), rhs: vec![0.0; problem.dim * problem.d] }
    }

    /// Computes `Wt^T = H^{-1} R^T` as the trainer does: a sequential factorisation, then the
    /// columns of `R^T` in `threads` chunks on the current rayon pool.
    fn run(&mut self, problem: &WeightProblem, threads: usize) {
        let dim = problem.dim;

        // H = L L^T
        problem.fill_h(self.spd.matrix_mut(dim));
        self.spd.factor(Par::Seq).expect("H = alpha I + rho G is positive definite");

        // R^T, whose column r is row r of R
        for (r, column) in self.rhs.chunks_exact_mut(dim).enumerate() {
            for (j, entry) in column.iter_mut().enumerate() {
                *entry = problem.rhs_entry(r, j);
            }
        }

        // Wt^T = H^{-1} R^T
        self.spd.solve_columns(&mut self.rhs, threads);
    }
}

/// Runs both variants once and panics unless they agree, so that the two timed routes are
/// known to compute the same weights.
fn check_routes_agree(problem: &WeightProblem, inverse: &mut InverseRoute, cholesky: &mut CholeskyRoute) {
    inverse.run(problem, Par::Seq);
    cholesky.run(problem, 1);
    let solved = slice_view(&cholesky.rhs, problem.dim);
    let mut max_difference = 0.0f64;
    let mut max_entry = 0.0f64;
    for j in 0..problem.dim {
        for r in 0..problem.d {
            max_difference = max_difference.max((inverse.weights[(r, j)] - solved[(j, r)]).abs());
            max_entry = max_entry.max(solved[(j, r)].abs());
        }
    }
    // H has eigenvalues in [alpha, alpha + rho lambda_max(G)], with lambda_max(G) near 1 for
    // this G, so its condition number is small and both routes lose only a few digits.
    let tolerance = 1e3 * problem.dim as f64 * f64::EPSILON * max_entry;
    assert!(
        max_difference <= tolerance,
        "weight update {}: inverse and Cholesky routes differ by {max_difference:e} (tolerance {tolerance:e})",
        problem.shape()
    );
}

fn bench_weights_solve(c: &mut Criterion) {
    let mut group = c.benchmark_group("weights_solve");
    group.sampling_mode(SamplingMode::Flat);
    for (m, d) in WEIGHT_LAYERS {
        let problem = WeightProblem::new(m, d);
        let mut cholesky = CholeskyRoute::new(&problem);
        let mut inverse = InverseRoute::new(&problem, par_for_threads(THREADS[THREADS.len() - 1]));
        check_routes_agree(&problem, &mut inverse, &mut cholesky);

        for threads in THREADS {
            let pool = thread_pool(threads);
            let par = par_for_threads(threads);
            let id = format!("{}/threads{threads}", problem.shape());

            group.throughput(Throughput::Elements(problem.inverse_flops()));
            group.bench_function(BenchmarkId::new("inverse", &id), |b| {
                pool.install(|| {
                    b.iter(|| {
                        inverse.run(black_box(&problem), par);
                        black_box(&mut inverse.weights);
                    })
                })
            });

            group.throughput(Throughput::Elements(problem.cholesky_flops()));
            group.bench_function(BenchmarkId::new("cholesky", &id), |b| {
                pool.install(|| {
                    b.iter(|| {
                        cholesky.run(black_box(&problem), threads);
                        black_box(&mut cholesky.rhs);
                    })
                })
            });
        }
    }
    group.finish();
}

/// Form of the activation update applied to each tile.
#[derive(Clone, Copy, PartialEq)]
enum ActivationForm {
    /// `V = A^{-1} S` with `S = rho W^T U_next`: products of `2 d d_next + 2 d^2` flops per
    /// column.
    Direct,
    /// `V = W^T K` with `K = F U_next - E Q`: products of `2 d_next^2 + 4 d d_next` flops per
    /// column.
    Woodbury,
}

impl ActivationForm {
    fn name(self) -> &'static str {
        match self {
            ActivationForm::Direct => "direct",
            ActivationForm::Woodbury => "woodbury",
        }
    }

    fn flops_per_column(self, d: usize, d_next: usize) -> u64 {
        let (d, dn) = (d as u64, d_next as u64);
        match self {
            ActivationForm::Direct => 2 * d * dn + 2 * d * d,
            ActivationForm::Woodbury => 2 * dn * dn + 4 * d * dn,
        }
    }
}

/// The operands of the activation update of a layer of width `d` over `SAMPLES` columns.
struct ActivationProblem {
    d: usize,
    d_next: usize,
    /// `W = W_{l+1}`, `d_next x d`.
    w: Vec<f32>,
    /// `U_{l+1}`, `d_next x n`.
    u_next: Vec<f32>,
    /// `Q = gamma relu(U_l)`, `d x n`.
    q: Vec<f32>,
    /// `A^{-1}`, `d x d`.
    a_inv: Vec<f32>,
    /// `F = rho (gamma I + rho W W^T)^{-1}`, `d_next x d_next`.
    f: Vec<f32>,
    /// `E = F W / gamma`, `d_next x d`.
    e: Vec<f32>,
    /// `V_l`, `d x n`.
    v: Vec<f32>,
}

impl ActivationProblem {
    fn new(d: usize, d_next: usize) -> Self {
        let n = SAMPLES;
        Self {
            d,
            d_next,
            w: random_matrix(d_next, d, 4),
            u_next: random_matrix(d_next, n, 5),
            q: random_matrix(d, n, 6),
            a_inv: random_matrix(d, d, 7),
            f: random_matrix(d_next, d_next, 8),
            e: random_matrix(d_next, d, 9),
            v: vec![0.0; d * n],
        }
    }

    /// Runs the products of `form` on every tile, in parallel on the current rayon pool, each
    /// tile's products sequential.
    fn run(&mut self, form: ActivationForm, partials: &mut [Partial], scratch: &ThreadScratch<f32>) {
        let (d, dn) = (self.d, self.d_next);
        let grid = TileGrid::new(SAMPLES, DEFAULT_TILE_WIDTH);
        let w = slice_view(&self.w, dn);
        let a_inv = slice_view(&self.a_inv, d);
        let f = slice_view(&self.f, dn);
        let e = slice_view(&self.e, dn);
        let (u_next, q) = (self.u_next.as_slice(), self.q.as_slice());

        for_each_tile_mut(grid, &mut self.v, d, partials, scratch, |columns, tile, slot| {
            let width = columns.len();
            let u_tile = columns_view(u_next, dn, columns.clone());
            match form {
                ActivationForm::Direct => {
                    let s = &mut slot[..d * width];
                    // S = rho W^T U_next
                    matmul(slice_view_mut(s, d), false, w.transpose(), u_tile, RHO as f32, Par::Seq);
                    // V = A^{-1} S
                    matmul(slice_view_mut(tile, d), false, a_inv, slice_view(s, d), 1.0, Par::Seq);
                }
                ActivationForm::Woodbury => {
                    let k = &mut slot[..dn * width];
                    // K = F U_next - E Q
                    matmul(slice_view_mut(k, dn), false, f, u_tile, 1.0, Par::Seq);
                    matmul(slice_view_mut(k, dn), true, e, columns_view(q, d, columns), -1.0, Par::Seq);
                    // V = W^T K
                    matmul(slice_view_mut(tile, d), false, w.transpose(), slice_view(k, dn), 1.0, Par::Seq);
                }
            }
            [0.0; PARTIAL_LEN]
        });
    }
}

fn bench_activation(c: &mut Criterion) {
    let mut group = c.benchmark_group("activation");
    group.sampling_mode(SamplingMode::Flat);
    let d = 1500;
    // The trainer picks the direct form for d_next = 1500 and the Woodbury form for
    // d_next = 10. The direct form on d_next = 10 shows what the Woodbury form saves.
    let cases = [(1500, ActivationForm::Direct), (10, ActivationForm::Woodbury), (10, ActivationForm::Direct)];
    let tiles = SAMPLES.div_ceil(DEFAULT_TILE_WIDTH);
    let mut partials = vec![[0.0; PARTIAL_LEN]; tiles];

    for (d_next, form) in cases {
        let mut problem = ActivationProblem::new(d, d_next);
        let flops = form.flops_per_column(d, d_next) * SAMPLES as u64;
        let shape = format!("d{d}-dnext{d_next}-n{SAMPLES}-tile{DEFAULT_TILE_WIDTH}");
        group.throughput(Throughput::Elements(flops));

        for threads in THREADS {
            let pool = thread_pool(threads);
            let scratch = ThreadScratch::new(threads, d.max(d_next) * DEFAULT_TILE_WIDTH);
            group.bench_function(BenchmarkId::new(form.name(), format!("{shape}/threads{threads}")), |b| {
                pool.install(|| {
                    b.iter(|| {
                        problem.run(form, &mut partials, &scratch);
                        black_box(&mut problem.v);
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_weights_solve, bench_activation
}
criterion_main!(benches);
