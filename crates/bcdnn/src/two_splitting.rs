//! Blocks of two-splitting BCD: variables `W_i, b_i, V_i` and couplings
//! `gamma_i/2 ||V_i - S_i V_{i-1} - sigma_i(W_i V_{i-1} + b_i 1^T)||^2`.
//!
//! The output blocks have closed forms (the output is linear). A hidden layer's `V_i` and
//! `W_i` are nonlinear least-squares problems through `sigma`, minimised inexactly by
//! proximal-gradient steps with backtracking on the step size, started at the current value,
//! with the proximal term `alpha/2 ||. - old||^2`; a step is kept only when the block
//! objective does not increase, so `Lbar` never increases.
//!
//! The pre-activation buffers `U_i` hold `Z_i = W_i V_{i-1} + b_i 1^T` at all times, so
//! every block reads its nonlinear terms without recomputing them.

#![allow(non_snake_case)]

use crate::blocks::{activation_penalty, weight_penalty};
use crate::config::InnerSolve;
use bcdnn_kernels::matrix::{columns_view, slice_view, slice_view_mut};
use bcdnn_kernels::model::{Activation, ActivationRegulariser, WeightRegulariser};
use bcdnn_kernels::products::matmul;
use bcdnn_kernels::tiling::{
    for_each_tile, for_each_tile_mut, partial, sum_partials, Partial, ThreadScratch, TileGrid,
};
use bcdnn_kernels::{ColMatrix, Real};
use faer::Par;

/// Largest number of step-size halvings tried in one proximal-gradient iteration.
const MAX_BACKTRACKS: usize = 30;

/// Elements of scratch one thread needs for the hidden activation update on a tile.
pub(crate) fn tile_scratch_len(max_width: usize, tile_width: usize) -> usize {
    8 * max_width * tile_width
}

/// `Z = W V + b 1^T` over all tiles, written into `z`; returns `||target - sigma(Z)||^2` when
/// `target` is given (`target` already contains `V_l - S_l V_{l-1}`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_layer<T: Real>(
    weights: &ColMatrix<T>,
    bias: &[T],
    prev: &[T],
    activation: Activation,
    target: Option<(&[T], Option<&[T]>)>,
    z: &mut ColMatrix<T>,
    grid: TileGrid,
    partials: &mut [Partial],
    scratch: &ThreadScratch<T>,
) -> f64 {
    let (rows, cols) = (weights.rows(), weights.cols());
    for_each_tile_mut(grid, z.as_mut_slice(), rows, partials, scratch, |columns, tile, _| {
        matmul(
            slice_view_mut(tile, rows),
            false,
            weights.view(),
            columns_view(prev, cols, columns.clone()),
            T::one(),
            Par::Seq,
        );
        for column in tile.chunks_exact_mut(rows) {
            for (x, &b) in column.iter_mut().zip(bias) {
                *x += b;
            }
        }
        let Some((v, skip)) = target else { return partial(&[]) };
        let range = columns.start * rows..columns.end * rows;
        let mut sum = 0.0;
        for (k, &zk) in tile.iter().enumerate() {
            let index = range.start + k;
            let t = v[index].to_f64() - skip.map_or(0.0, |s| s[index].to_f64());
            sum += (t - activation.value(zk.to_f64())).powi(2);
        }
        partial(&[sum])
    });
    if target.is_some() {
        sum_partials(partials, grid.count())[0]
    } else {
        0.0
    }
}

/// Inputs of the hidden weight update of layer `l`.
pub(crate) struct HiddenWeights<'a, T> {
    pub gamma: f64,
    pub alpha: f64,
    pub activation: Activation,
    pub reg: WeightRegulariser,
    pub inner: InnerSolve,
    /// `V_{l-1}` (or `X`), `m x n`.
    pub prev: &'a [T],
    /// `V_l`, `d x n`.
    pub v: &'a [T],
    /// `V_{l-1}` again when layer `l` has a skip connection.
    pub skip_input: Option<&'a [T]>,
}

/// Result of a hidden weight update.
pub(crate) struct HiddenWeightSums {
    pub step: f64,
    pub link_old: f64,
    pub link_new: f64,
    pub reg_old: f64,
    pub reg_new: f64,
    pub iterations: usize,
}

/// Buffers of the hidden weight updates, sized for the largest layer.
pub(crate) struct WeightBuffers<T> {
    /// `d x n`: `(sigma(Z) - target) * sigma'(Z)`, then the trial `Z`.
    pub residual: ColMatrix<T>,
    pub trial_z: ColMatrix<T>,
    /// `d x (m + 1)`: the gradient, the old weights and the trial weights (`f64`).
    pub gradient: Vec<f64>,
    pub old: Vec<f64>,
    pub current: Vec<f64>,
    pub trial: ColMatrix<T>,
    pub trial_bias: Vec<T>,
    /// Per-layer step-size estimates `L`, adapted across iterations.
    pub lipschitz: Vec<f64>,
}

impl<T: Real> WeightBuffers<T> {
    pub fn new(widths: &[usize], samples: usize) -> Self {
        let max_out = widths[1..].iter().copied().max().unwrap_or(0);
        let max_in = widths[..widths.len() - 1].iter().copied().max().unwrap_or(0);
        let len = max_out * (max_in + 1);
        Self {
            residual: ColMatrix::zeros(max_out, samples),
            trial_z: ColMatrix::zeros(max_out, samples),
            gradient: vec![0.0; len],
            old: vec![0.0; len],
            current: vec![0.0; len],
            trial: ColMatrix::zeros(max_out, max_in),
            trial_bias: vec![T::zero(); max_out],
            lipschitz: vec![0.0; widths.len() - 1],
        }
    }

    pub fn size_bytes(&self) -> usize {
        self.residual.size_bytes()
            + self.trial_z.size_bytes()
            + self.trial.size_bytes()
            + (self.gradient.len() + self.old.len() + self.current.len() + self.lipschitz.len()) * 8
            + self.trial_bias.len() * std::mem::size_of::<T>()
    }
}

/// `||target - sigma(Z)||^2` over a whole matrix, with the target `V - S V_{l-1}`.
fn link_sum<T: Real>(activation: Activation, z: &[T], v: &[T], skip: Option<&[T]>) -> f64 {
    let mut sum = 0.0;
    for (k, (&zk, &vk)) in z.iter().zip(v).enumerate() {
        let t = vk.to_f64() - skip.map_or(0.0, |s| s[k].to_f64());
        sum += (t - activation.value(zk.to_f64())).powi(2);
    }
    sum
}

/// Hidden weight update of two-splitting: minimises
/// `gamma/2 ||V_l - S_l V_{l-1} - sigma(Wt Vt)||^2 + r(W) + alpha/2 ||Wt - Wt^old||^2`
/// by proximal-gradient steps from `Wt^old`; `z` contains `Wt^old Vt` on entry and the
/// product of the returned weights on exit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn hidden_weights<T: Real>(
    block: &HiddenWeights<'_, T>,
    layer: usize,
    weights: &mut ColMatrix<T>,
    bias: &mut [T],
    z: &mut ColMatrix<T>,
    buffers: &mut WeightBuffers<T>,
    grid: TileGrid,
    partials: &mut [Partial],
    scratch: &ThreadScratch<T>,
) -> HiddenWeightSums {
    let (d, m) = (weights.rows(), weights.cols());
    let n = z.cols();
    let dim = m + 1;
    let act = block.activation;
    let (gamma, alpha) = (block.gamma, block.alpha);
    let smooth = |z: &[T]| 0.5 * gamma * link_sum(act, z, block.v, block.skip_input);

    // Wt^old in f64, column-major d x (m + 1)
    for j in 0..m {
        for i in 0..d {
            buffers.old[i + j * d] = weights.view()[(i, j)].to_f64();
        }
    }
    for (old, &b) in buffers.old[m * d..(m + 1) * d].iter_mut().zip(bias.iter()) {
        *old = b.to_f64();
    }
    buffers.current[..d * dim].copy_from_slice(&buffers.old[..d * dim]);

    let reg_old = weight_penalty(block.reg, weights.as_slice());
    let link_old = 2.0 / gamma * smooth(z.as_slice());
    // `smooth_value` excludes the regulariser, which is infinite at an infeasible start.
    let mut smooth_value = smooth(z.as_slice());
    let mut value = smooth_value + reg_old;

    // Initial step-size estimate: gamma sup(sigma')^2 ||Vt||_F^2 + alpha bounds the
    // curvature of the linearised problem; later iterations start from half the last one.
    if buffers.lipschitz[layer] == 0.0 {
        let frobenius: f64 = block.prev[..m * n].iter().map(|&x| x.to_f64().powi(2)).sum::<f64>() + n as f64;
        buffers.lipschitz[layer] = gamma * frobenius + alpha;
    }
    let mut lipschitz = 0.5 * buffers.lipschitz[layer];
    let mut iterations = 0;

    for _ in 0..block.inner.max_iterations {
        iterations += 1;
        // residual = (sigma(Z) - target) * sigma'(Z)
        {
            let r = &mut buffers.residual.as_mut_slice()[..d * n];
            for (k, (rk, &zk)) in r.iter_mut().zip(&z.as_slice()[..d * n]).enumerate() {
                let t = block.v[k].to_f64() - block.skip_input.map_or(0.0, |s| s[k].to_f64());
                let zf = zk.to_f64();
                *rk = T::from_f64((act.value(zf) - t) * act.derivative(zf));
            }
        }
        // gradient = gamma [residual V^T, residual 1] + alpha (Wt - Wt^old)
        {
            let residual = columns_view(&buffers.residual.as_slice()[..d * n], d, 0..n);
            let prev = columns_view(block.prev, m, 0..n);
            let g = &mut buffers.gradient[..d * dim];
            let trial = buffers.trial.as_mut_slice();
            let rv = &mut trial[..d * m];
            matmul(slice_view_mut(rv, d), false, residual, prev.transpose(), T::from_f64(gamma), Par::Seq);
            for j in 0..m {
                for i in 0..d {
                    g[i + j * d] = rv[i + j * d].to_f64();
                }
            }
            for i in 0..d {
                let row_sum: f64 = (0..n).map(|c| buffers.residual.as_slice()[i + c * d].to_f64()).sum();
                g[i + m * d] = gamma * row_sum;
            }
            for ((g, &current), &old) in g.iter_mut().zip(&buffers.current).zip(&buffers.old) {
                *g += alpha * (current - old);
            }
        }

        let mut accepted = false;
        for _ in 0..MAX_BACKTRACKS {
            let step = 1.0 / lipschitz;
            // trial = prox_{r step}(current - step gradient); the bias is never regularised
            let (mut linear, mut distance) = (0.0, 0.0);
            let mut prox_term = 0.0;
            for j in 0..dim {
                for i in 0..d {
                    let k = i + j * d;
                    let x = buffers.current[k] - step * buffers.gradient[k];
                    let new = if j < m { block.reg.prox(x, step) } else { x };
                    let new_t = T::from_f64(new);
                    let new = new_t.to_f64();
                    if j < m {
                        buffers.trial.as_mut_slice()[k] = new_t;
                    } else {
                        buffers.trial_bias[i] = new_t;
                    }
                    let delta = new - buffers.current[k];
                    linear += buffers.gradient[k] * delta;
                    distance += delta * delta;
                    prox_term += (new - buffers.old[k]).powi(2);
                }
            }
            let trial_w = &buffers.trial;
            let trial_b = &buffers.trial_bias[..d];
            let trial_z = &mut buffers.trial_z;
            let trial_weights = faer::MatRef::from_column_major_slice(&trial_w.as_slice()[..d * m], d, m);
            for_each_tile_mut(grid, &mut trial_z.as_mut_slice()[..d * n], d, partials, scratch, |columns, tile, _| {
                matmul(
                    slice_view_mut(tile, d),
                    false,
                    trial_weights,
                    columns_view(block.prev, m, columns),
                    T::one(),
                    Par::Seq,
                );
                for column in tile.chunks_exact_mut(d) {
                    for (x, &b) in column.iter_mut().zip(trial_b) {
                        *x += b;
                    }
                }
                partial(&[])
            });
            let trial_smooth = smooth(&trial_z.as_slice()[..d * n]);
            let current_prox: f64 = (0..d * dim).map(|k| (buffers.current[k] - buffers.old[k]).powi(2)).sum();
            let current_smooth = smooth_value + 0.5 * alpha * current_prox;
            let model = current_smooth + linear + 0.5 * lipschitz * distance;
            let trial_reg = weight_penalty(block.reg, &trial_w.as_slice()[..d * m]);
            let trial_value = trial_smooth + trial_reg;
            let trial_objective = trial_value + 0.5 * alpha * prox_term;
            let current_objective = value + 0.5 * alpha * current_prox;
            if trial_smooth + 0.5 * alpha * prox_term <= model + 1e-12 * model.abs()
                && trial_objective <= current_objective
            {
                // Accept: copy the trial into the weights, bias and Z
                weights.as_mut_slice()[..d * m].copy_from_slice(&trial_w.as_slice()[..d * m]);
                bias[..d].copy_from_slice(trial_b);
                z.as_mut_slice()[..d * n].copy_from_slice(&trial_z.as_slice()[..d * n]);
                let accepted_values = weights.as_slice()[..d * m].iter().chain(&bias[..d]);
                for (current, &x) in buffers.current[..d * dim].iter_mut().zip(accepted_values) {
                    *current = x.to_f64();
                }
                let decrease = current_objective - trial_objective;
                value = trial_value;
                smooth_value = trial_smooth;
                accepted = true;
                if current_objective.is_finite() && decrease <= block.inner.tolerance * current_objective.abs() {
                    lipschitz = lipschitz.max(f64::MIN_POSITIVE);
                    buffers.lipschitz[layer] = lipschitz;
                    return finish(weights, bias, buffers, block, link_old, reg_old, z, iterations, d, m);
                }
                break;
            }
            lipschitz *= 2.0;
        }
        if !accepted {
            break;
        }
        lipschitz *= 0.5;
    }
    buffers.lipschitz[layer] = lipschitz;
    finish(weights, bias, buffers, block, link_old, reg_old, z, iterations, d, m)
}

#[allow(clippy::too_many_arguments)]
fn finish<T: Real>(
    weights: &ColMatrix<T>,
    bias: &[T],
    buffers: &WeightBuffers<T>,
    block: &HiddenWeights<'_, T>,
    link_old: f64,
    reg_old: f64,
    z: &ColMatrix<T>,
    iterations: usize,
    d: usize,
    m: usize,
) -> HiddenWeightSums {
    let n = z.cols();
    let values = weights.as_slice()[..d * m].iter().chain(&bias[..d]);
    let step: f64 = values.zip(&buffers.old).map(|(&new, &old)| (new.to_f64() - old).powi(2)).sum();
    HiddenWeightSums {
        step,
        link_old,
        link_new: link_sum(block.activation, &z.as_slice()[..d * n], block.v, block.skip_input),
        reg_old,
        reg_new: weight_penalty(block.reg, weights.as_slice()),
        iterations,
    }
}

/// Inputs of the hidden activation update of layer `l`.
pub(crate) struct HiddenActivation<'a, T> {
    pub gamma: f64,
    pub gamma_next: f64,
    pub alpha: f64,
    pub activation: Activation,
    pub activation_next: Activation,
    pub reg: ActivationRegulariser,
    pub inner: InnerSolve,
    /// `Z_l = W_l V_{l-1} + b_l`, `d x n`.
    pub z: &'a [T],
    /// `V_{l-1}` when layer `l` has a skip connection.
    pub skip_input: Option<&'a [T]>,
    /// `W_{l+1}`, `b_{l+1}`, `V_{l+1}`.
    pub w_next: &'a ColMatrix<T>,
    pub b_next: &'a [T],
    pub v_next: &'a [T],
    /// Whether layer `l + 1` has a skip connection.
    pub skip_next: bool,
    /// Step-size estimate to start from.
    pub lipschitz: f64,
}

/// Sums of a hidden activation update.
pub(crate) struct HiddenActivationSums {
    pub step: f64,
    pub link_old: f64,
    pub link_new: f64,
    pub link_next_old: f64,
    pub link_next_new: f64,
    pub reg_old: f64,
    pub reg_new: f64,
    pub iterations: usize,
}

/// Per-column objective pieces of a tile: `(gamma_l/2 ||V - q1||^2, gamma_{l+1}/2 ||e||^2)`
/// with `e = sigma(W V + b) - V_{l+1} + S_{l+1} V`, writing `Z_{l+1}` into `z_next` and `e`
/// into `e`.
#[allow(clippy::too_many_arguments)]
fn tile_terms<T: Real>(
    block: &HiddenActivation<'_, T>,
    v: &[T],
    q1: &[T],
    v_next: &[T],
    z_next: &mut [T],
    e: &mut [T],
    d: usize,
    dn: usize,
) -> (f64, f64) {
    let width = v.len() / d;
    matmul(slice_view_mut(z_next, dn), false, block.w_next.view(), slice_view(v, d), T::one(), Par::Seq);
    let mut next = 0.0;
    for c in 0..width {
        for r in 0..dn {
            let k = r + c * dn;
            z_next[k] += block.b_next[r];
            let skip = if block.skip_next { v[k].to_f64() } else { 0.0 };
            let value = block.activation_next.value(z_next[k].to_f64()) - v_next[k].to_f64() + skip;
            e[k] = T::from_f64(value);
            next += value * value;
        }
    }
    let link: f64 = v.iter().zip(q1).map(|(&a, &b)| (a.to_f64() - b.to_f64()).powi(2)).sum();
    (link, next)
}

/// Hidden activation update of two-splitting, column tile by column tile: minimises
/// `gamma_l/2 ||V - S_l V_{l-1} - sigma(Z_l)||^2 + gamma_{l+1}/2 ||V_{l+1} - S_{l+1} V
/// - sigma(W_{l+1} V + b_{l+1})||^2 + s_l(V) + alpha/2 ||V - V^old||^2` by
/// proximal-gradient steps from `V^old`, and writes `Z_{l+1}` of the result into `z_next`.
pub(crate) fn hidden_activation<T: Real>(
    block: &HiddenActivation<'_, T>,
    v: &mut ColMatrix<T>,
    z_next: &mut ColMatrix<T>,
    grid: TileGrid,
    partials: &mut [Partial],
    scratch: &ThreadScratch<T>,
) -> HiddenActivationSums {
    let d = v.rows();
    let dn = block.w_next.rows();
    let (gamma, gamma_next, alpha) = (block.gamma, block.gamma_next, block.alpha);
    // Each tile writes its own columns of `Z_{l+1}`; the lock is held only for that copy.
    let z_next_cell = std::sync::Mutex::new(z_next.as_mut_slice());
    for_each_tile_mut(grid, v.as_mut_slice(), d, partials, scratch, |columns, tile, slot| {
        let width = columns.len();
        let (q1, rest) = slot.split_at_mut(d * width);
        let (old, rest) = rest.split_at_mut(d * width);
        let (grad, rest) = rest.split_at_mut(d * width);
        let (trial, rest) = rest.split_at_mut(d * width);
        let (zn, rest) = rest.split_at_mut(dn * width);
        let (e, rest) = rest.split_at_mut(dn * width);
        let (trial_zn, rest) = rest.split_at_mut(dn * width);
        let trial_e = &mut rest[..dn * width];
        let range = columns.start * d..columns.end * d;
        let next_range = columns.start * dn..columns.end * dn;
        let v_next = &block.v_next[next_range.clone()];

        // q1 = S_l V_{l-1} + sigma(Z_l)
        for (k, q) in q1.iter_mut().enumerate() {
            let index = range.start + k;
            let skip = block.skip_input.map_or(0.0, |s| s[index].to_f64());
            *q = T::from_f64(skip + block.activation.value(block.z[index].to_f64()));
        }
        old.copy_from_slice(tile);
        let (link_old, next_old) = tile_terms(block, tile, q1, v_next, zn, e, d, dn);
        let reg_old = activation_penalty(block.reg, tile);
        let mut value = 0.5 * gamma * link_old + 0.5 * gamma_next * next_old + reg_old;
        let (mut link, mut next) = (link_old, next_old);
        let mut lipschitz = block.lipschitz;
        let mut iterations = 0.0;
        for _ in 0..block.inner.max_iterations {
            iterations += 1.0;
            // grad = gamma (V - q1) + gamma_next (W^T (e * sigma'(Z_next)) + S e) + alpha (V - V^old)
            for (k, g) in grad.iter_mut().enumerate() {
                *g = T::from_f64(
                    gamma * (tile[k].to_f64() - q1[k].to_f64()) + alpha * (tile[k].to_f64() - old[k].to_f64()),
                );
            }
            for (k, ek) in e.iter_mut().enumerate() {
                let scaled = ek.to_f64() * block.activation_next.derivative(zn[k].to_f64());
                if block.skip_next {
                    grad[k] += T::from_f64(gamma_next * ek.to_f64());
                }
                *ek = T::from_f64(scaled);
            }
            matmul(
                slice_view_mut(grad, d),
                true,
                block.w_next.view().transpose(),
                slice_view(e, dn),
                T::from_f64(gamma_next),
                Par::Seq,
            );
            let current_prox: f64 = tile.iter().zip(old.iter()).map(|(&a, &b)| (a - b).to_f64().powi(2)).sum();
            let current_smooth = 0.5 * gamma * link + 0.5 * gamma_next * next + 0.5 * alpha * current_prox;
            let current_objective = value + 0.5 * alpha * current_prox;
            let mut accepted = false;
            for _ in 0..MAX_BACKTRACKS {
                let step = 1.0 / lipschitz;
                let (mut linear, mut distance, mut prox_term) = (0.0, 0.0, 0.0);
                for k in 0..d * width {
                    let x = tile[k].to_f64() - step * grad[k].to_f64();
                    let new = T::from_f64(block.reg.prox(x, step));
                    trial[k] = new;
                    let delta = new.to_f64() - tile[k].to_f64();
                    linear += grad[k].to_f64() * delta;
                    distance += delta * delta;
                    prox_term += (new.to_f64() - old[k].to_f64()).powi(2);
                }
                let (trial_link, trial_next) = tile_terms(block, trial, q1, v_next, trial_zn, trial_e, d, dn);
                let trial_smooth = 0.5 * gamma * trial_link + 0.5 * gamma_next * trial_next + 0.5 * alpha * prox_term;
                let trial_reg = activation_penalty(block.reg, trial);
                let model = current_smooth + linear + 0.5 * lipschitz * distance;
                if trial_smooth <= model + 1e-12 * model.abs() && trial_smooth + trial_reg <= current_objective {
                    tile.copy_from_slice(trial);
                    zn.copy_from_slice(trial_zn);
                    e.copy_from_slice(trial_e);
                    let decrease = current_objective - (trial_smooth + trial_reg);
                    link = trial_link;
                    next = trial_next;
                    value = 0.5 * gamma * link + 0.5 * gamma_next * next + trial_reg;
                    accepted = true;
                    if current_objective.is_finite() && decrease <= block.inner.tolerance * current_objective.abs() {
                        lipschitz = f64::INFINITY;
                    }
                    break;
                }
                lipschitz *= 2.0;
            }
            if !accepted || lipschitz == f64::INFINITY {
                break;
            }
            lipschitz *= 0.5;
        }
        {
            let mut z_all = z_next_cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            z_all[next_range].copy_from_slice(zn);
        }
        let step: f64 = tile.iter().zip(old.iter()).map(|(&a, &b)| (a - b).to_f64().powi(2)).sum();
        let reg_new = activation_penalty(block.reg, tile);
        partial(&[step, link_old, link, next_old, next, reg_old, reg_new, iterations])
    });
    let t = sum_partials(partials, grid.count());
    HiddenActivationSums {
        step: t[0],
        link_old: t[1],
        link_new: t[2],
        link_next_old: t[3],
        link_next_new: t[4],
        reg_old: t[5],
        reg_new: t[6],
        iterations: t[7] as usize,
    }
}

/// `||target - sigma(Z)||^2` summed over the tiles of a layer, used after the output
/// weight update.
pub(crate) fn link_of_layer<T: Real>(
    z: &ColMatrix<T>,
    v: &ColMatrix<T>,
    grid: TileGrid,
    partials: &mut [Partial],
    scratch: &ThreadScratch<T>,
) -> f64 {
    let rows = z.rows();
    for_each_tile(grid, partials, scratch, |columns, _| {
        let range = columns.start * rows..columns.end * rows;
        partial(&[link_sum(Activation::Linear, &z.as_slice()[range.clone()], &v.as_slice()[range], None)])
    });
    sum_partials(partials, grid.count())[0]
}
