//! Monotone FISTA for the blocks whose regulariser has no closed-form update.
//!
//! Both solvers minimise a strongly convex quadratic plus a separable regulariser,
//! `F(X) = 1/2 <X, A X> - <R, X> + c + sum_i r(X_i)`, by accelerated proximal gradient steps
//! with step `1 / L`, where `L` bounds the largest eigenvalue of `A`:
//!
//! - A step is accepted only if `F` does not increase. A rejected step restarts the
//!   momentum from the last accepted point. A rejected step taken from that point itself means
//!   `L` was too small, so `L` is doubled (backtracking). The returned point therefore never
//!   has a larger objective than the starting point.
//! - The solve stops after `max_iterations` steps, or when an accepted step `X_new - X_old`
//!   has `||X_new - X_old|| <= tolerance max(1, ||X_new||)`.
//!
//! All buffers come from a [`FistaScratch`] allocated once.

use crate::model::{ActivationRegulariser, WeightRegulariser};
use crate::Real;
use faer::{Accum, MatMut, MatRef, Par};

/// Limits of an inner iterative solve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InnerSolve {
    /// Maximum number of proximal gradient steps, accepted or rejected.
    pub max_iterations: usize,
    /// Relative step length below which the solve stops.
    pub tolerance: f64,
}

impl Default for InnerSolve {
    fn default() -> Self {
        Self { max_iterations: 200, tolerance: 1e-6 }
    }
}

/// Outcome of an inner solve.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InnerReport {
    /// Proximal gradient steps taken, accepted or rejected.
    pub iterations: usize,
    /// Objective at the starting point.
    pub objective_before: f64,
    /// Objective at the returned point; never above `objective_before`.
    pub objective_after: f64,
}

/// Work buffers of the FISTA solvers for blocks of up to `rows x cols` entries.
pub struct FistaScratch<T> {
    capacity: usize,
    columns: usize,
    previous: Vec<T>,
    extrapolated: Vec<T>,
    trial: Vec<T>,
    applied: Vec<T>,
    applied_previous: Vec<T>,
    applied_extrapolated: Vec<T>,
    applied_trial: Vec<T>,
    linear: Vec<T>,
    power: Vec<f64>,
}

impl<T: Real> FistaScratch<T> {
    /// Allocates buffers for blocks of up to `rows x cols` entries: `d x (m + 1)` for a weight
    /// update, `rows x width` for a block of activation columns.
    pub fn new(rows: usize, cols: usize) -> Self {
        let len = rows * cols;
        let buffer = || vec![T::zero(); len];
        Self {
            capacity: len,
            columns: cols,
            previous: buffer(),
            extrapolated: buffer(),
            trial: buffer(),
            applied: buffer(),
            applied_previous: buffer(),
            applied_extrapolated: buffer(),
            applied_trial: buffer(),
            linear: buffer(),
            power: vec![0.0; 2 * cols],
        }
    }
}

impl<T> FistaScratch<T> {
    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        let buffers = [
            &self.previous,
            &self.extrapolated,
            &self.trial,
            &self.applied,
            &self.applied_previous,
            &self.applied_extrapolated,
            &self.applied_trial,
            &self.linear,
        ];
        buffers.iter().map(|b| b.len()).sum::<usize>() * std::mem::size_of::<T>() + self.power.len() * 8
    }
}

/// Iterates of the solver that live in the scratch, each of the block's length.
struct Buffers<'a, T> {
    previous: &'a mut [T],
    extrapolated: &'a mut [T],
    trial: &'a mut [T],
    applied: &'a mut [T],
    applied_previous: &'a mut [T],
    applied_extrapolated: &'a mut [T],
    applied_trial: &'a mut [T],
}

impl<T: Real> FistaScratch<T> {
    fn buffers(&mut self, len: usize) -> (Buffers<'_, T>, &mut [T]) {
        assert!(len <= self.capacity, "block of {len} entries exceeds the FISTA scratch of {}", self.capacity);
        (
            Buffers {
                previous: &mut self.previous[..len],
                extrapolated: &mut self.extrapolated[..len],
                trial: &mut self.trial[..len],
                applied: &mut self.applied[..len],
                applied_previous: &mut self.applied_previous[..len],
                applied_extrapolated: &mut self.applied_extrapolated[..len],
                applied_trial: &mut self.applied_trial[..len],
            },
            &mut self.linear[..len],
        )
    }
}

/// Computes `1/2 <x, A x> - <r, x> + offset + sum_i reg(i, x_i)` in `f64`, given `A x`.
fn objective<T: Real>(x: &[T], ax: &[T], r: &[T], offset: f64, reg: &impl Fn(usize, f64) -> f64) -> f64 {
    let mut smooth = 0.0;
    let mut penalty = 0.0;
    for (i, ((&x, &ax), &r)) in x.iter().zip(ax).zip(r).enumerate() {
        let x = x.to_f64();
        smooth += x * (0.5 * ax.to_f64() - r.to_f64());
        penalty += reg(i, x);
    }
    smooth + offset + penalty
}

/// Runs monotone FISTA with restart on `1/2 <x, A x> - <r, x> + offset + sum_i reg(i, x_i)`,
/// starting at `x` and leaving the result there. `prox(i, z, step)` is the proximal
/// operator of `step reg(i, .)`.
#[allow(clippy::too_many_arguments)]
fn fista<T: Real>(
    x: &mut [T],
    r: &[T],
    offset: f64,
    mut apply: impl FnMut(&[T], &mut [T]),
    lipschitz: f64,
    prox: impl Fn(usize, f64, f64) -> f64,
    reg: impl Fn(usize, f64) -> f64,
    solve: &InnerSolve,
    b: Buffers<'_, T>,
) -> InnerReport {
    let mut lipschitz = lipschitz.max(f64::MIN_POSITIVE);
    apply(x, b.applied);
    let mut value = objective(x, b.applied, r, offset, &reg);
    let mut report = InnerReport { iterations: 0, objective_before: value, objective_after: value };

    b.extrapolated.copy_from_slice(x);
    b.applied_extrapolated.copy_from_slice(b.applied);
    let mut momentum = 1.0f64;
    let mut from_accepted_point = true;

    while report.iterations < solve.max_iterations {
        report.iterations += 1;
        let step = 1.0 / lipschitz;
        for (i, ((z, &y), (&ay, &r))) in
            b.trial.iter_mut().zip(&*b.extrapolated).zip(b.applied_extrapolated.iter().zip(r)).enumerate()
        {
            let y = y.to_f64();
            *z = T::from_f64(prox(i, y - step * (ay.to_f64() - r.to_f64()), step));
        }
        apply(b.trial, b.applied_trial);
        let trial_value = objective(b.trial, b.applied_trial, r, offset, &reg);

        // A NaN trial value is rejected too.
        let descends = trial_value <= value;
        if !descends {
            // A step from the accepted point itself can only fail when L is too small.
            if from_accepted_point {
                lipschitz *= 2.0;
            }
            b.extrapolated.copy_from_slice(x);
            b.applied_extrapolated.copy_from_slice(b.applied);
            momentum = 1.0;
            from_accepted_point = true;
            continue;
        }

        let mut step_norm = 0.0;
        let mut norm = 0.0;
        for (&z, &x) in b.trial.iter().zip(&*x) {
            let (z, x) = (z.to_f64(), x.to_f64());
            step_norm += (z - x) * (z - x);
            norm += z * z;
        }
        b.previous.copy_from_slice(x);
        b.applied_previous.copy_from_slice(b.applied);
        x.copy_from_slice(b.trial);
        b.applied.copy_from_slice(b.applied_trial);
        value = trial_value;
        if step_norm <= solve.tolerance * solve.tolerance * norm.max(1.0) {
            break;
        }

        let next = 0.5 * (1.0 + (1.0 + 4.0 * momentum * momentum).sqrt());
        let beta = (momentum - 1.0) / next;
        momentum = next;
        from_accepted_point = beta == 0.0;
        extrapolate(b.extrapolated, x, b.previous, beta);
        extrapolate(b.applied_extrapolated, b.applied, b.applied_previous, beta);
    }

    report.objective_after = value;
    report
}

/// Computes `dst = x + beta (x - previous)`.
fn extrapolate<T: Real>(dst: &mut [T], x: &[T], previous: &[T], beta: f64) {
    let beta = T::from_f64(beta);
    for ((d, &x), &p) in dst.iter_mut().zip(x).zip(previous) {
        *d = x + beta * (x - p);
    }
}

/// Minimises `1/2 <V, A V> - <R, V> + s(V)` over a block of columns, starting at `v` and
/// leaving the result there.
///
/// `v` and `r` are column-major `rows x width` blocks of equal length. `apply(x, y)` writes
/// `y = A x` for such a block, with `A` symmetric positive definite, and `lipschitz` is an
/// upper bound on its largest eigenvalue (doubled as needed when a step fails to descend).
///
/// NOTE: the objective is computed in `f64` from `A x` stored as `T`. For `f32` its rounding
/// error hides differences below about `f32::EPSILON |F|`, so steps are rejected once the
/// iterate is within about `sqrt(f32::EPSILON)` (relative) of the minimiser.
pub fn fista_columns<T: Real>(
    v: &mut [T],
    r: &[T],
    apply: impl FnMut(&[T], &mut [T]),
    lipschitz: f64,
    reg: ActivationRegulariser,
    solve: &InnerSolve,
    scratch: &mut FistaScratch<T>,
) -> InnerReport {
    assert_eq!(r.len(), v.len(), "fista_columns: `r` has {} entries, expected {}", r.len(), v.len());
    let (buffers, _) = scratch.buffers(v.len());
    fista(v, r, 0.0, apply, lipschitz, |_, z, step| reg.prox(z, step), |_, x| reg.value(x), solve, buffers)
}

/// Problem data of a weight update without a closed form: minimise
/// `rho/2 (tr(Wt G Wt^T) - 2 tr(Wt C^T)) + alpha/2 ||Wt - Wt_old||^2 + r(W)` over
/// `Wt = [W b]`, where the bias column `b` is never regularised.
#[derive(Clone, Copy)]
pub struct WeightProblem<'a> {
    /// The full symmetric Gram matrix `G = Vt Vt^T`, `(m + 1) x (m + 1)`.
    pub gram: MatRef<'a, f64>,
    /// `C = U Vt^T`, `d x (m + 1)`.
    pub cross: MatRef<'a, f64>,
    /// `Wt_old`, `d x (m + 1)`, column-major; also the starting point.
    pub previous: &'a [f64],
    pub rho: f64,
    pub alpha: f64,
    pub reg: WeightRegulariser,
}

/// Minimises the weight-update objective of `problem` by monotone FISTA starting at
/// `Wt_old`, and writes the result to `wt` (column-major `d x (m + 1)`, the bias last).
///
/// The step uses `L = rho lambda_max(G) + alpha`, with `lambda_max(G)` estimated by power
/// iteration and capped by the Gershgorin bound (backtracking corrects an underestimate).
pub fn fista_weights(
    wt: &mut [f64],
    problem: &WeightProblem<'_>,
    solve: &InnerSolve,
    scratch: &mut FistaScratch<f64>,
) -> InnerReport {
    let WeightProblem { gram, cross, previous, rho, alpha, reg } = *problem;
    let (rows, cols) = (cross.nrows(), cross.ncols());
    assert_eq!((gram.nrows(), gram.ncols()), (cols, cols), "fista_weights: G must be {cols} x {cols}");
    assert_eq!(wt.len(), rows * cols, "fista_weights: `wt` must hold {rows} x {cols} entries");
    assert_eq!(previous.len(), rows * cols, "fista_weights: `previous` must hold {rows} x {cols} entries");
    assert!(cols <= scratch.columns, "fista_weights: {cols} columns exceed the FISTA scratch of {}", scratch.columns);

    let lambda_max = estimate_lambda_max(gram, &mut scratch.power[..2 * cols]);
    let lipschitz = rho * lambda_max + alpha;

    // In the form 1/2 <Wt, A Wt> - <R, Wt> + c: A Wt = rho Wt G + alpha Wt,
    // R = rho C + alpha Wt_old and c = alpha/2 ||Wt_old||^2.
    let (buffers, linear) = scratch.buffers(rows * cols);
    for j in 0..cols {
        for i in 0..rows {
            linear[j * rows + i] = rho * cross[(i, j)] + alpha * previous[j * rows + i];
        }
    }
    let offset = 0.5 * alpha * previous.iter().map(|x| x * x).sum::<f64>();
    let apply = |x: &[f64], y: &mut [f64]| {
        let dst = MatMut::from_column_major_slice_mut(&mut *y, rows, cols);
        let x_view = MatRef::from_column_major_slice(x, rows, cols);
        faer::linalg::matmul::matmul(dst, Accum::Replace, x_view, gram, rho, Par::Seq);
        for (y, &x) in y.iter_mut().zip(x) {
            *y += alpha * x;
        }
    };
    let bias_start = rows * (cols.max(1) - 1);
    let prox = |i: usize, z: f64, step: f64| if i >= bias_start { z } else { reg.prox(z, step) };
    let value = |i: usize, x: f64| if i >= bias_start { 0.0 } else { reg.value(x) };

    wt.copy_from_slice(previous);
    fista(wt, linear, offset, apply, lipschitz, prox, value, solve, buffers)
}

/// Estimates the largest eigenvalue of the symmetric positive semidefinite `g` by 30 power
/// iterations times a safety factor of 1.1. The Gershgorin bound `max_i sum_j |g_ij|`, which is
/// never below the eigenvalue, caps the estimate. `work` must have at least `2 n` entries.
pub fn estimate_lambda_max(g: MatRef<'_, f64>, work: &mut [f64]) -> f64 {
    let n = g.nrows();
    if n == 0 {
        return 0.0;
    }
    let gershgorin = (0..n).map(|i| (0..n).map(|j| g[(i, j)].abs()).sum::<f64>()).fold(0.0, f64::max);
    let (x, y) = work[..2 * n].split_at_mut(n);
    // A start vector with irregular positive entries, so that it is not orthogonal to the top
    // eigenvector of a Gram matrix built from structured data.
    for (i, x) in x.iter_mut().enumerate() {
        *x = 1.0 + (i as f64 * 0.618_033_988_75).fract();
    }
    let mut estimate = 0.0;
    for _ in 0..30 {
        let norm = x.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            break;
        }
        for x in x.iter_mut() {
            *x /= norm;
        }
        let dst = MatMut::from_column_major_slice_mut(y, n, 1);
        faer::linalg::matmul::matmul(dst, Accum::Replace, g, MatRef::from_column_major_slice(x, n, 1), 1.0, Par::Seq);
        estimate = x.iter().zip(&*y).map(|(x, y)| x * y).sum::<f64>();
        x.copy_from_slice(y);
    }
    (1.1 * estimate).min(gershgorin)
}

#[cfg(test)]
mod tests;
