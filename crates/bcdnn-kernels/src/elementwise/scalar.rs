//! Scalar reference versions of the elementwise kernels, generic over the float type.
//!
//! These are the oracles for the SIMD versions and the implementation used for `f64`.
//! Sums accumulate in `f64`.

use super::{OutputVSums, USums};
use num_traits::Float;

#[inline(always)]
pub(crate) fn sq<T: Float>(x: T) -> f64 {
    let x = x.to_f64().unwrap_or(f64::NAN);
    x * x
}

/// `dst = max(src, 0)`.
pub fn relu<T: Float>(dst: &mut [T], src: &[T]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.max(T::zero());
    }
}

/// `x = max(x + bias, 0)`.
pub fn add_bias_relu<T: Float>(x: &mut [T], bias: &[T]) {
    debug_assert_eq!(x.len(), bias.len());
    for (x, &b) in x.iter_mut().zip(bias) {
        *x = (*x + b).max(T::zero());
    }
}

/// `x = x + bias`.
pub fn add_bias<T: Float>(x: &mut [T], bias: &[T]) {
    debug_assert_eq!(x.len(), bias.len());
    for (x, &b) in x.iter_mut().zip(bias) {
        *x = *x + b;
    }
}

/// `v = (w e_label + gamma u + alpha v) / (w + gamma + alpha)`.
pub fn output_v_step<T: Float>(v: &mut [T], u: &[T], label: usize, weight: T, gamma: T, alpha: T) -> OutputVSums {
    debug_assert_eq!(v.len(), u.len());
    let scale = T::one() / (weight + gamma + alpha);
    let mut sums = OutputVSums::default();
    for (r, (v, &u)) in v.iter_mut().zip(u).enumerate() {
        let y = if r == label { T::one() } else { T::zero() };
        let old = *v;
        let new = (weight * y + gamma * u + alpha * old) * scale;
        *v = new;
        sums.residual_old += sq(old - y);
        sums.residual_new += sq(new - y);
        sums.dist_old += sq(old - u);
        sums.dist_new += sq(new - u);
        sums.step += sq(new - old);
    }
    sums
}

/// `u = (gamma v + rho (p + bias)) / (gamma + rho)`.
pub fn output_u_step<T: Float>(u: &mut [T], p: &[T], bias: &[T], v: &[T], gamma: T, rho: T) -> USums {
    debug_assert!(u.len() == p.len() && u.len() == bias.len() && u.len() == v.len());
    let scale = T::one() / (gamma + rho);
    let mut sums = USums::default();
    for r in 0..u.len() {
        let old = u[r];
        let product = p[r] + bias[r];
        let new = (gamma * v[r] + rho * product) * scale;
        u[r] = new;
        sums.coupling_old += sq(old - product);
        sums.coupling_new += sq(new - product);
        sums.link_old += sq(v[r] - old);
        sums.link_new += sq(v[r] - new);
        sums.step += sq(new - old);
    }
    sums
}

/// Minimiser of `1/2 (sigma(u) - a)^2 + g/2 (u - b)^2` for the leaky ReLU
/// `sigma(u) = max(u, 0) + slope min(u, 0)` with `0 <= slope < 1`.
///
/// The objective is a convex quadratic on each half-line, so the minimiser is the stationary
/// point of the positive piece (if it is `>= 0`), that of the negative piece (if it is `< 0`),
/// or the kink at 0. The candidates are compared by objective value.
#[inline(always)]
pub fn prox_leaky_relu<T: Float>(a: T, b: T, g: T, slope: T) -> T {
    let half = T::from(0.5).unwrap();
    let objective = |u: T| {
        let s = if u >= T::zero() { u } else { slope * u };
        half * (s - a) * (s - a) + half * g * (u - b) * (u - b)
    };

    let positive = (a + g * b) / (T::one() + g);
    let negative = (slope * a + g * b) / (slope * slope + g);

    let mut best = T::zero();
    let mut best_value = objective(T::zero());
    if positive >= T::zero() {
        let value = objective(positive);
        if value < best_value {
            best = positive;
            best_value = value;
        }
    }
    if negative < T::zero() {
        let value = objective(negative);
        if value < best_value {
            best = negative;
        }
    }
    best
}

/// Hidden ReLU pre-activation update; see [`super::Elementwise::hidden_u_step_relu`].
pub fn hidden_u_step_relu<T: Float>(u: &mut [T], p: &[T], bias: &[T], a: &[T], rho: T, alpha: T, gamma: T) -> USums {
    hidden_u_step_leaky_relu(u, p, bias, a, rho, alpha, gamma, T::zero())
}

/// `max(x, 0) + slope min(x, 0)`.
#[inline(always)]
pub fn leaky_relu<T: Float>(x: T, slope: T) -> T {
    if x >= T::zero() {
        x
    } else {
        slope * x
    }
}

/// Hidden leaky-ReLU pre-activation update with `0 <= slope < 1`: as
/// [`hidden_u_step_relu`] with `sigma(u) = max(u, 0) + slope min(u, 0)`.
#[allow(clippy::too_many_arguments)]
pub fn hidden_u_step_leaky_relu<T: Float>(
    u: &mut [T],
    p: &[T],
    bias: &[T],
    a: &[T],
    rho: T,
    alpha: T,
    gamma: T,
    slope: T,
) -> USums {
    debug_assert!(u.len() == p.len() && u.len() == bias.len() && u.len() == a.len());
    let inv = T::one() / (rho + alpha);
    let g = (rho + alpha) / gamma;
    let mut sums = USums::default();
    for r in 0..u.len() {
        let old = u[r];
        let product = p[r] + bias[r];
        let center = (rho * product + alpha * old) * inv;
        let new = prox_leaky_relu(a[r], center, g, slope);
        u[r] = new;
        sums.coupling_old += sq(old - product);
        sums.coupling_new += sq(new - product);
        sums.link_old += sq(a[r] - leaky_relu(old, slope));
        sums.link_new += sq(a[r] - leaky_relu(new, slope));
        sums.step += sq(new - old);
    }
    sums
}

/// `dst = scale * max(u, 0)`.
pub fn scaled_relu<T: Float>(dst: &mut [T], u: &[T], scale: T) {
    debug_assert_eq!(dst.len(), u.len());
    for (d, &x) in dst.iter_mut().zip(u) {
        *d = scale * x.max(T::zero());
    }
}

/// `acc = acc + scale * max(u, 0) + shift`.
pub fn add_scaled_relu_shift<T: Float>(acc: &mut [T], u: &[T], scale: T, shift: &[T]) {
    debug_assert!(acc.len() == u.len() && acc.len() == shift.len());
    for r in 0..acc.len() {
        acc[r] = acc[r] + scale * u[r].max(T::zero()) + shift[r];
    }
}

/// `v = x`; returns `||x - v_old||^2`.
pub fn assign_with_step<T: Float>(v: &mut [T], x: &[T]) -> f64 {
    debug_assert_eq!(v.len(), x.len());
    let mut step = 0.0;
    for (v, &x) in v.iter_mut().zip(x) {
        step += sq(x - *v);
        *v = x;
    }
    step
}

/// `v = x + beta y`; returns `||v_new - v_old||^2`.
pub fn combine_with_step<T: Float>(v: &mut [T], x: &[T], y: &[T], beta: T) -> f64 {
    debug_assert!(v.len() == x.len() && v.len() == y.len());
    let mut step = 0.0;
    for r in 0..v.len() {
        let new = x[r] + beta * y[r];
        step += sq(new - v[r]);
        v[r] = new;
    }
    step
}

/// `||u - p - bias||^2`.
pub fn dist2_shifted<T: Float>(u: &[T], p: &[T], bias: &[T]) -> f64 {
    u.iter().zip(p).zip(bias).map(|((&u, &p), &b)| sq(u - p - b)).sum()
}

/// `||v - max(u, 0)||^2`.
pub fn dist2_relu<T: Float>(v: &[T], u: &[T]) -> f64 {
    v.iter().zip(u).map(|(&v, &u)| sq(v - u.max(T::zero()))).sum()
}

/// `||v - u||^2`.
pub fn dist2<T: Float>(v: &[T], u: &[T]) -> f64 {
    v.iter().zip(u).map(|(&v, &u)| sq(v - u)).sum()
}

/// `||v - e_label||^2`.
pub fn dist2_one_hot<T: Float>(v: &[T], label: usize) -> f64 {
    v.iter().enumerate().map(|(r, &v)| if r == label { sq(v - T::one()) } else { sq(v) }).sum()
}

/// `q = gamma q1 + gamma_next q2`; returns `[||v - q1||^2, ||q2 - v||^2]`.
pub fn activation_target<T: Float>(q: &mut [T], v: &[T], q1: &[T], q2: &[T], gamma: T, gamma_next: T) -> [f64; 2] {
    debug_assert!(q.len() == v.len() && q.len() == q1.len() && q.len() == q2.len());
    let mut sums = [0.0; 2];
    for k in 0..q.len() {
        q[k] = gamma * q1[k] + gamma_next * q2[k];
        sums[0] += sq(v[k] - q1[k]);
        sums[1] += sq(q2[k] - v[k]);
    }
    sums
}

/// `v = out`; returns `[||out - v_old||^2, ||out - q1||^2, ||q2 - out||^2, <q, out>, <r, out>,
/// ||out||^2]`.
pub fn activation_finish<T: Float>(v: &mut [T], out: &[T], q1: &[T], q2: &[T], q: &[T], r: &[T]) -> [f64; 6] {
    debug_assert!(v.len() == out.len() && v.len() == q1.len() && v.len() == q2.len());
    debug_assert!(v.len() == q.len() && v.len() == r.len());
    let value = |x: T| x.to_f64().unwrap_or(f64::NAN);
    let mut sums = [0.0; 6];
    for k in 0..v.len() {
        let o = value(out[k]);
        sums[0] += (o - value(v[k])).powi(2);
        sums[1] += (o - value(q1[k])).powi(2);
        sums[2] += (value(q2[k]) - o).powi(2);
        sums[3] += value(q[k]) * o;
        sums[4] += value(r[k]) * o;
        sums[5] += o * o;
    }
    v.copy_from_slice(out);
    sums
}
