//! Output activation (`V_N`) update and loss values for every [`Loss`].
//!
//! With `w` the loss weight (1 for the summed loss, `1/n` for the mean), the update minimises
//! `w R(V; Y) + s(V) + gamma/2 ||V - U||^2 + alpha/2 ||V - V_old||^2` column by column:
//!
//! - Squared loss: exactly, by the prox of `s` at `(w Y + gamma U + alpha V_old) / (w + gamma
//!   + alpha)` with step `1 / (w + gamma + alpha)`.
//! - Hinge loss: exactly, entry by entry. Without `s` the minimiser has a closed form. With `s`
//!   the entry's objective is a convex piecewise quadratic, minimised by comparing its kinks
//!   and the clamped stationary points of its pieces.
//! - Cross-entropy and logistic losses: by one prox-linear step
//!   `V = prox_{s/t}((alpha V_old - w grad R(V_old) + gamma U) / t)` with `t = gamma + alpha`.
//!   It decreases the objective when `alpha > max(0, (w L_R - gamma) / 2)`, where `L_R` is the
//!   Lipschitz constant of `grad R` (see [`prox_linear_bound`]).
//!
//! Targets are one-hot for the squared and cross-entropy losses and `+1` on the label's row,
//! `-1` elsewhere for the hinge and logistic losses. A label at or past `rows` has no `+1`
//! row. Tiles are column-major: `labels.len()` columns of `rows` entries.
//!
//! The squared loss without a regulariser runs the fused [`Elementwise`] kernel (SIMD for
//! `f32`). Every other case works per column in `f64`, with softmax and log-sum-exp shifted by
//! the column maximum so that logits of any finite size give finite results.

use crate::model::{ActivationRegulariser, Loss};
use crate::regulariser::RegulariserError;
use crate::Real;

/// Parameters of one output activation update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputUpdate {
    pub loss: Loss,
    /// Loss weight `w`: 1 for the summed loss, `1/n` for the mean over `n` samples.
    pub weight: f64,
    /// Regulariser `s` on the output activations.
    pub reg: ActivationRegulariser,
    /// Weight `gamma` of the coupling `gamma/2 ||V - U||^2`.
    pub gamma: f64,
    /// Weight `alpha` of the proximal term `alpha/2 ||V - V_old||^2`.
    pub alpha: f64,
}

/// An invalid [`OutputUpdate`].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum OutputUpdateError {
    /// The loss weight, `gamma` or `alpha` is out of range.
    #[error("output update parameter `{name}` = {value} is invalid: it must be finite and {requirement}")]
    InvalidParameter { name: &'static str, value: f64, requirement: &'static str },
    /// `alpha` is at or below the bound above which the prox-linear step decreases the objective.
    #[error(
        "alpha = {alpha} is too small for the prox-linear update of the {loss} loss: it must exceed \
         max(0, (w L_R - gamma) / 2) = {bound}"
    )]
    AlphaBelowBound { loss: &'static str, alpha: f64, bound: f64 },
    #[error(transparent)]
    Regulariser(#[from] RegulariserError),
}

impl OutputUpdate {
    /// Checks that `weight > 0`, `gamma > 0`, `alpha >= 0` (all finite), that the regulariser is
    /// valid and, for the prox-linear losses, that `alpha` exceeds [`prox_linear_bound`].
    pub fn validate(&self) -> Result<(), OutputUpdateError> {
        let check = |name, value: f64, positive: bool| {
            let ok = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
            let requirement = if positive { "> 0" } else { ">= 0" };
            if ok {
                Ok(())
            } else {
                Err(OutputUpdateError::InvalidParameter { name, value, requirement })
            }
        };
        check("weight", self.weight, true)?;
        check("gamma", self.gamma, true)?;
        check("alpha", self.alpha, false)?;
        self.reg.validate()?;
        if let Some(bound) = prox_linear_bound(self.loss, self.weight, self.gamma) {
            if self.alpha <= bound {
                return Err(OutputUpdateError::AlphaBelowBound { loss: self.loss.name(), alpha: self.alpha, bound });
            }
        }
        Ok(())
    }
}

/// Objective terms of an output activation update, summed over a tile, before (`_old`) and
/// after (`_new`) the update.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutputSums {
    /// Weighted loss `w R(V_old; Y)`.
    pub loss_old: f64,
    /// Weighted loss `w R(V_new; Y)`.
    pub loss_new: f64,
    /// `||V_old - U||^2`.
    pub dist_old: f64,
    /// `||V_new - U||^2`.
    pub dist_new: f64,
    /// `s(V_old)`; infinite if `V_old` violates a constraint of `s`.
    pub reg_old: f64,
    /// `s(V_new)`.
    pub reg_new: f64,
    /// `||V_new - V_old||^2`.
    pub step: f64,
}

impl OutputSums {
    pub fn add(&mut self, other: OutputSums) {
        self.loss_old += other.loss_old;
        self.loss_new += other.loss_new;
        self.dist_old += other.dist_old;
        self.dist_new += other.dist_new;
        self.reg_old += other.reg_old;
        self.reg_new += other.reg_new;
        self.step += other.step;
    }
}

/// Returns the bound `max(0, (w L_R - gamma) / 2)` that `alpha` must strictly exceed for the
/// prox-linear update of a smooth loss to decrease the objective. Returns `None` for the
/// losses with an exact update (squared, hinge).
pub fn prox_linear_bound(loss: Loss, weight: f64, gamma: f64) -> Option<f64> {
    loss.prox_linear_lipschitz().map(|lipschitz| (0.5 * (weight * lipschitz - gamma)).max(0.0))
}

/// Output activation update and loss values for one scalar type.
pub trait LossKernels: Sized + Copy {
    /// Replaces the tile `v` (`labels.len()` columns of `rows` entries) by the output
    /// activation update described by `update`, given the output pre-activations `u`, and
    /// returns the objective terms before and after. The parameters are not validated; call
    /// [`OutputUpdate::validate`] once beforehand.
    fn output_v_update(update: &OutputUpdate, v: &mut [Self], u: &[Self], labels: &[u8], rows: usize) -> OutputSums;

    /// Weighted loss `w R(outputs; Y)` of a tile of network outputs.
    fn loss_value(loss: Loss, weight: f64, outputs: &[Self], labels: &[u8], rows: usize) -> f64;
}

macro_rules! loss_kernels_impl {
    ($t:ty) => {
        impl LossKernels for $t {
            fn output_v_update(
                update: &OutputUpdate,
                v: &mut [Self],
                u: &[Self],
                labels: &[u8],
                rows: usize,
            ) -> OutputSums {
                update_tile(update, v, u, labels, rows)
            }

            fn loss_value(loss: Loss, weight: f64, outputs: &[Self], labels: &[u8], rows: usize) -> f64 {
                loss_value_tile(loss, weight, outputs, labels, rows)
            }
        }
    };
}

loss_kernels_impl!(f32);
loss_kernels_impl!(f64);

fn check_tile(kernel: &str, v: usize, u: usize, labels: usize, rows: usize) {
    assert_eq!(v, labels * rows, "{kernel}: tile of {v} entries is not {labels} columns of {rows} rows");
    assert_eq!(u, v, "{kernel}: `u` has {u} entries, expected {v}");
}

fn update_tile<T: Real>(update: &OutputUpdate, v: &mut [T], u: &[T], labels: &[u8], rows: usize) -> OutputSums {
    check_tile("output_v_update", v.len(), u.len(), labels.len(), rows);
    if update.loss == Loss::Squared && update.reg.is_none() {
        let weight = update.weight;
        let s = T::output_v_step_tile(
            v,
            u,
            labels,
            rows,
            T::from_f64(weight),
            T::from_f64(update.gamma),
            T::from_f64(update.alpha),
        );
        return OutputSums {
            loss_old: 0.5 * weight * s.residual_old,
            loss_new: 0.5 * weight * s.residual_new,
            dist_old: s.dist_old,
            dist_new: s.dist_new,
            reg_old: 0.0,
            reg_new: 0.0,
            step: s.step,
        };
    }
    reference::update_tile(update, v, u, labels, rows)
}

fn loss_value_tile<T: Real>(loss: Loss, weight: f64, outputs: &[T], labels: &[u8], rows: usize) -> f64 {
    assert_eq!(
        outputs.len(),
        labels.len() * rows,
        "loss_value: tile of {} entries is not {} columns of {rows} rows",
        outputs.len(),
        labels.len()
    );
    if rows == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    for (column, &label) in outputs.chunks_exact(rows).zip(labels) {
        total += reference::column_loss(loss, column, label as usize);
    }
    weight * total
}

/// Per-column updates in `f64` for every loss and regulariser; the squared-loss case is also
/// the reference for the fused kernel.
pub mod reference {
    use super::{OutputSums, OutputUpdate};
    use crate::model::{ActivationRegulariser, Loss};
    use crate::Real;

    /// Returns the target of row `row` in a column labelled `label`.
    #[inline(always)]
    pub fn target(loss: Loss, row: usize, label: usize) -> f64 {
        match (row == label, loss.signed_targets()) {
            (true, _) => 1.0,
            (false, true) => -1.0,
            (false, false) => 0.0,
        }
    }

    /// Computes `log(1 + exp(x))` without overflow.
    #[inline]
    pub fn softplus(x: f64) -> f64 {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    /// Computes `1 / (1 + exp(-x))` without overflow.
    #[inline]
    pub fn sigmoid(x: f64) -> f64 {
        if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            let e = x.exp();
            e / (1.0 + e)
        }
    }

    /// Computes `log sum_r exp(column_r)`, shifted by the column maximum. Returns `-inf` for an
    /// empty column.
    pub fn log_sum_exp<T: Real>(column: &[T]) -> f64 {
        let max = column.iter().map(|&x| x.to_f64()).fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return max;
        }
        let sum: f64 = column.iter().map(|&x| (x.to_f64() - max).exp()).sum();
        max + sum.ln()
    }

    /// Computes the unweighted loss `R` of one column with label `label`.
    pub fn column_loss<T: Real>(loss: Loss, column: &[T], label: usize) -> f64 {
        match loss {
            Loss::Squared => {
                column.iter().enumerate().map(|(r, &x)| 0.5 * (x.to_f64() - target(loss, r, label)).powi(2)).sum()
            }
            Loss::Hinge => {
                column.iter().enumerate().map(|(r, &x)| (1.0 - target(loss, r, label) * x.to_f64()).max(0.0)).sum()
            }
            Loss::Logistic => {
                column.iter().enumerate().map(|(r, &x)| softplus(-target(loss, r, label) * x.to_f64())).sum()
            }
            Loss::CrossEntropy => {
                let labelled = column.get(label).map_or(0.0, |&x| x.to_f64());
                log_sum_exp(column) - labelled
            }
        }
    }

    /// Returns the exact minimiser of the hinge update without a regulariser,
    /// `argmin_v w max(0, 1 - y v) + t/2 (v - b)^2` for `y` in `{-1, +1}`: dividing by `w`
    /// gives a hinge prox with weight `t / w`, which is `b + y w / t` when `y b <= 1 - w / t`,
    /// the kink `1 / y = y` when `1 - w / t < y b < 1`, and `b` when `y b >= 1`.
    #[inline]
    pub fn hinge_prox(y: f64, b: f64, weight: f64, t: f64) -> f64 {
        let ratio = weight / t;
        let margin = y * b;
        if margin <= 1.0 - ratio {
            b + y * ratio
        } else if margin < 1.0 {
            y
        } else {
            b
        }
    }

    /// Returns the exact minimiser of `w max(0, 1 - y v) + s(v) + t/2 (v - b)^2` for `y` in
    /// `{-1, +1}`.
    ///
    /// The objective is convex and, on the domain of `s`, quadratic between the kinks `y`
    /// (hinge) and 0 (`l1`). Its minimiser is a kink or the stationary point of the piece that
    /// contains it, and a minimiser at an end of the domain is the stationary point of the
    /// adjacent piece clamped to the domain. So the smallest objective over the kinks and the
    /// clamped stationary points of all four slope combinations is the minimum.
    pub fn hinge_prox_regularised(y: f64, b: f64, weight: f64, t: f64, reg: ActivationRegulariser) -> f64 {
        let (lower, upper) = reg.domain();
        let lambda = reg.l1_weight();
        let objective = |v: f64| weight * (1.0 - y * v).max(0.0) + lambda * v.abs() + 0.5 * t * (v - b) * (v - b);

        let hinge_slopes = [-weight * y, 0.0];
        let l1_slopes = [-lambda, lambda];
        let stationary = hinge_slopes.into_iter().flat_map(|h| l1_slopes.map(|l| b - (h + l) / t));

        let mut best = (f64::INFINITY, b.clamp(lower, upper));
        for candidate in [y, 0.0].into_iter().chain(stationary) {
            let candidate = candidate.clamp(lower, upper);
            let value = objective(candidate);
            if value < best.0 {
                best = (value, candidate);
            }
        }
        best.1
    }

    /// Returns the gradient of the unweighted prox-linear loss at one entry of the old column.
    /// Cross-entropy also needs the old column's log-sum-exp.
    #[inline]
    fn gradient(loss: Loss, old: f64, y: f64, log_sum_exp: f64) -> f64 {
        match loss {
            Loss::CrossEntropy => (old - log_sum_exp).exp() - y,
            Loss::Logistic => -y * sigmoid(-y * old),
            Loss::Squared | Loss::Hinge => unreachable!("{} has an exact update", loss.name()),
        }
    }

    /// Updates one column in `f64` and returns its objective terms.
    pub fn update_column<T: Real>(update: &OutputUpdate, v: &mut [T], u: &[T], label: usize) -> OutputSums {
        debug_assert_eq!(v.len(), u.len());
        let OutputUpdate { loss, weight, reg, gamma, alpha } = *update;
        let t = gamma + alpha;
        let mut sums = OutputSums { loss_old: weight * column_loss(loss, v, label), ..OutputSums::default() };

        // Cross-entropy needs the log-sum-exp of the whole old column before any entry changes.
        let old_log_sum_exp = if loss == Loss::CrossEntropy { log_sum_exp(v) } else { 0.0 };
        let squared_scale = 1.0 / (weight + t);

        for (r, (v, u)) in v.iter_mut().zip(u).enumerate() {
            let (old, u) = ((*v).to_f64(), (*u).to_f64());
            let y = target(loss, r, label);
            let new = match loss {
                Loss::Squared => reg.prox((weight * y + gamma * u + alpha * old) * squared_scale, squared_scale),
                Loss::Hinge => {
                    let b = (gamma * u + alpha * old) / t;
                    if reg.is_none() {
                        hinge_prox(y, b, weight, t)
                    } else {
                        hinge_prox_regularised(y, b, weight, t, reg)
                    }
                }
                Loss::CrossEntropy | Loss::Logistic => {
                    let grad = gradient(loss, old, y, old_log_sum_exp);
                    reg.prox((alpha * old - weight * grad + gamma * u) / t, 1.0 / t)
                }
            };
            let stored = T::from_f64(new);
            *v = stored;
            let new = stored.to_f64();

            sums.dist_old += (old - u) * (old - u);
            sums.dist_new += (new - u) * (new - u);
            sums.reg_old += reg.value(old);
            sums.reg_new += reg.value(new);
            sums.step += (new - old) * (new - old);
        }

        sums.loss_new = weight * column_loss(loss, v, label);
        sums
    }

    /// Runs [`update_column`] on every column of a tile.
    pub fn update_tile<T: Real>(update: &OutputUpdate, v: &mut [T], u: &[T], labels: &[u8], rows: usize) -> OutputSums {
        let mut total = OutputSums::default();
        if rows == 0 {
            return total;
        }
        for ((v, u), &label) in v.chunks_exact_mut(rows).zip(u.chunks_exact(rows)).zip(labels) {
            total.add(update_column(update, v, u, label as usize));
        }
        total
    }
}

#[cfg(test)]
mod tests;
