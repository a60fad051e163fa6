//! Values and proximal operators of the separable regularisers on weights and activations.
//!
//! Every regulariser is a sum of the same scalar function over the entries, so it is described
//! by that function. [`WeightRegulariser::value`] and [`ActivationRegulariser::value`] return
//! its value at one entry (infinity outside a constraint set). The `prox` methods return
//! `argmin_z step r(z) + 1/2 (z - x)^2` for one entry.

use crate::model::{ActivationRegulariser, WeightRegulariser};

/// An invalid regulariser parameter.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum RegulariserError {
    /// A weight of a penalty is negative or not finite.
    #[error("regulariser weight `{name}` = {value} is invalid: it must be finite and >= 0")]
    InvalidWeight { name: &'static str, value: f64 },
    /// The bounds of a box constraint are not ordered or are NaN.
    #[error("box bounds lower = {lower}, upper = {upper} are invalid: lower must be <= upper and neither may be NaN")]
    InvalidBox { lower: f64, upper: f64 },
}

fn check_weight(name: &'static str, value: f64) -> Result<(), RegulariserError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(RegulariserError::InvalidWeight { name, value })
    }
}

fn check_box(lower: f64, upper: f64) -> Result<(), RegulariserError> {
    // `lower <= upper` is false when either is NaN.
    if lower <= upper {
        Ok(())
    } else {
        Err(RegulariserError::InvalidBox { lower, upper })
    }
}

/// Computes `sign(x) max(|x| - threshold, 0)`, the proximal operator of `threshold |x|`.
#[inline]
pub fn soft_threshold(x: f64, threshold: f64) -> f64 {
    if x > threshold {
        x - threshold
    } else if x < -threshold {
        x + threshold
    } else {
        0.0
    }
}

/// Returns the indicator of `lower <= x <= upper` at `x`: 0 inside, infinity outside.
#[inline]
fn box_indicator(x: f64, lower: f64, upper: f64) -> f64 {
    if (lower..=upper).contains(&x) {
        0.0
    } else {
        f64::INFINITY
    }
}

impl WeightRegulariser {
    /// Checks that penalty weights are finite and non-negative and that box bounds are ordered.
    pub fn validate(&self) -> Result<(), RegulariserError> {
        match *self {
            WeightRegulariser::None | WeightRegulariser::NonNegative => Ok(()),
            WeightRegulariser::L2 { lambda } | WeightRegulariser::L1 { lambda } => check_weight("lambda", lambda),
            WeightRegulariser::ElasticNet { l1, l2 } => check_weight("l1", l1).and(check_weight("l2", l2)),
            WeightRegulariser::Box { lower, upper } => check_box(lower, upper),
        }
    }

    /// Returns the value of the regulariser at one entry, infinity outside a constraint set.
    #[inline]
    pub fn value(&self, x: f64) -> f64 {
        match *self {
            WeightRegulariser::None => 0.0,
            WeightRegulariser::L2 { lambda } => 0.5 * lambda * x * x,
            WeightRegulariser::L1 { lambda } => lambda * x.abs(),
            WeightRegulariser::ElasticNet { l1, l2 } => l1 * x.abs() + 0.5 * l2 * x * x,
            WeightRegulariser::NonNegative => box_indicator(x, 0.0, f64::INFINITY),
            WeightRegulariser::Box { lower, upper } => box_indicator(x, lower, upper),
        }
    }

    /// Returns the proximal operator `argmin_z step r(z) + 1/2 (z - x)^2` at one entry, for `step >= 0`.
    #[inline]
    pub fn prox(&self, x: f64, step: f64) -> f64 {
        match *self {
            WeightRegulariser::None => x,
            WeightRegulariser::L2 { lambda } => x / (1.0 + step * lambda),
            WeightRegulariser::L1 { lambda } => soft_threshold(x, step * lambda),
            WeightRegulariser::ElasticNet { l1, l2 } => soft_threshold(x, step * l1) / (1.0 + step * l2),
            WeightRegulariser::NonNegative => x.max(0.0),
            WeightRegulariser::Box { lower, upper } => x.clamp(lower, upper),
        }
    }

    /// Returns the weight `lambda` of a regulariser that is the quadratic `lambda/2 ||W||^2`
    /// (0 for no regulariser). The exact weight update adds it to the diagonal of its Cholesky
    /// system. Returns `None` for regularisers that need an iterative solver.
    pub fn closed_form_l2(&self) -> Option<f64> {
        match *self {
            WeightRegulariser::None => Some(0.0),
            WeightRegulariser::L2 { lambda } => Some(lambda),
            _ => None,
        }
    }
}

impl ActivationRegulariser {
    /// Checks that penalty weights are finite and non-negative and that box bounds are ordered.
    pub fn validate(&self) -> Result<(), RegulariserError> {
        match *self {
            ActivationRegulariser::None | ActivationRegulariser::NonNegative => Ok(()),
            ActivationRegulariser::L1 { lambda } => check_weight("lambda", lambda),
            ActivationRegulariser::Box { lower, upper } => check_box(lower, upper),
        }
    }

    /// Returns whether this is [`ActivationRegulariser::None`].
    pub fn is_none(&self) -> bool {
        matches!(self, ActivationRegulariser::None)
    }

    /// Returns the value of the regulariser at one entry, infinity outside a constraint set.
    #[inline]
    pub fn value(&self, x: f64) -> f64 {
        match *self {
            ActivationRegulariser::None => 0.0,
            ActivationRegulariser::L1 { lambda } => lambda * x.abs(),
            ActivationRegulariser::NonNegative => box_indicator(x, 0.0, f64::INFINITY),
            ActivationRegulariser::Box { lower, upper } => box_indicator(x, lower, upper),
        }
    }

    /// Returns the proximal operator `argmin_z step s(z) + 1/2 (z - x)^2` at one entry, for `step >= 0`.
    #[inline]
    pub fn prox(&self, x: f64, step: f64) -> f64 {
        match *self {
            ActivationRegulariser::None => x,
            ActivationRegulariser::L1 { lambda } => soft_threshold(x, step * lambda),
            ActivationRegulariser::NonNegative => x.max(0.0),
            ActivationRegulariser::Box { lower, upper } => x.clamp(lower, upper),
        }
    }

    /// Returns the interval `[lower, upper]` outside which the regulariser is infinite.
    pub fn domain(&self) -> (f64, f64) {
        match *self {
            ActivationRegulariser::None | ActivationRegulariser::L1 { .. } => (f64::NEG_INFINITY, f64::INFINITY),
            ActivationRegulariser::NonNegative => (0.0, f64::INFINITY),
            ActivationRegulariser::Box { lower, upper } => (lower, upper),
        }
    }

    /// Returns the weight `lambda` of the `l1` penalty, or 0 for the other regularisers.
    pub fn l1_weight(&self) -> f64 {
        match *self {
            ActivationRegulariser::L1 { lambda } => lambda,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimises `step r(z) + 1/2 (z - x)^2` over a grid of 2001 points on `[x - 10, x + 10]`,
    /// then three times on a grid 100 times narrower around the best point (final spacing 1e-8).
    fn grid_prox(value: impl Fn(f64) -> f64, x: f64, step: f64) -> f64 {
        let objective = |z: f64| step * value(z) + 0.5 * (z - x) * (z - x);
        let (mut center, mut radius) = (x, 10.0);
        for _ in 0..4 {
            let points = 2000;
            let mut best = (f64::INFINITY, center);
            for k in 0..=points {
                let z = center - radius + 2.0 * radius * k as f64 / points as f64;
                let f = objective(z);
                if f < best.0 {
                    best = (f, z);
                }
            }
            center = best.1;
            radius *= 0.01;
        }
        center
    }

    fn weight_regularisers() -> Vec<WeightRegulariser> {
        vec![
            WeightRegulariser::None,
            WeightRegulariser::L2 { lambda: 0.7 },
            WeightRegulariser::L1 { lambda: 0.4 },
            WeightRegulariser::ElasticNet { l1: 0.3, l2: 1.5 },
            WeightRegulariser::NonNegative,
            WeightRegulariser::Box { lower: -0.5, upper: 1.25 },
        ]
    }

    fn activation_regularisers() -> Vec<ActivationRegulariser> {
        vec![
            ActivationRegulariser::None,
            ActivationRegulariser::L1 { lambda: 0.4 },
            ActivationRegulariser::NonNegative,
            ActivationRegulariser::Box { lower: -0.5, upper: 1.25 },
        ]
    }

    const POINTS: [f64; 9] = [-3.0, -1.1, -0.45, -0.1, 0.0, 0.05, 0.6, 1.3, 4.0];
    const STEPS: [f64; 3] = [0.25, 1.0, 2.5];

    #[test]
    fn weight_prox_matches_grid() {
        for reg in weight_regularisers() {
            for &x in &POINTS {
                for &step in &STEPS {
                    let got = reg.prox(x, step);
                    let want = grid_prox(|z| reg.value(z), x, step);
                    assert!((got - want).abs() < 1e-6, "{reg:?}: prox({x}, {step}) = {got}, grid minimiser {want}");
                }
            }
        }
    }

    #[test]
    fn activation_prox_matches_grid() {
        for reg in activation_regularisers() {
            for &x in &POINTS {
                for &step in &STEPS {
                    let got = reg.prox(x, step);
                    let want = grid_prox(|z| reg.value(z), x, step);
                    assert!((got - want).abs() < 1e-6, "{reg:?}: prox({x}, {step}) = {got}, grid minimiser {want}");
                }
            }
        }
    }

    #[test]
    fn values_infinite_outside_constraints() {
        assert_eq!(WeightRegulariser::NonNegative.value(-1e-9), f64::INFINITY);
        assert_eq!(WeightRegulariser::NonNegative.value(0.0), 0.0);
        assert_eq!(WeightRegulariser::Box { lower: -1.0, upper: 2.0 }.value(2.5), f64::INFINITY);
        assert_eq!(WeightRegulariser::Box { lower: -1.0, upper: 2.0 }.value(-1.0), 0.0);
        assert_eq!(ActivationRegulariser::NonNegative.value(-0.5), f64::INFINITY);
        assert_eq!(ActivationRegulariser::Box { lower: 0.0, upper: 1.0 }.value(1.5), f64::INFINITY);
        assert_eq!(ActivationRegulariser::L1 { lambda: 2.0 }.value(-1.5), 3.0);
        assert_eq!(WeightRegulariser::ElasticNet { l1: 1.0, l2: 2.0 }.value(-2.0), 6.0);
    }

    #[test]
    fn closed_form_only_for_quadratic() {
        assert_eq!(WeightRegulariser::None.closed_form_l2(), Some(0.0));
        assert_eq!(WeightRegulariser::L2 { lambda: 0.3 }.closed_form_l2(), Some(0.3));
        for reg in weight_regularisers().into_iter().skip(2) {
            assert_eq!(reg.closed_form_l2(), None, "{reg:?} has no closed form");
        }
    }

    #[test]
    fn validate_rejects_bad_parameters() {
        assert!(WeightRegulariser::L1 { lambda: -1.0 }.validate().is_err());
        assert!(WeightRegulariser::ElasticNet { l1: 0.1, l2: f64::NAN }.validate().is_err());
        assert!(WeightRegulariser::Box { lower: 1.0, upper: 0.0 }.validate().is_err());
        assert!(ActivationRegulariser::Box { lower: f64::NAN, upper: 0.0 }.validate().is_err());
        assert!(ActivationRegulariser::L1 { lambda: f64::INFINITY }.validate().is_err());
        for reg in weight_regularisers() {
            assert_eq!(reg.validate(), Ok(()), "{reg:?}");
        }
        for reg in activation_regularisers() {
            assert_eq!(reg.validate(), Ok(()), "{reg:?}");
        }
    }
}
