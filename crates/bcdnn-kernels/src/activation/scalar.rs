//! Scalar reference versions of the activation kernels, generic over the float type.
//!
//! ReLU, leaky ReLU and linear work in the slice type `T`. Sigmoid, tanh and softplus are
//! evaluated in `f64` by [`Activation::value`] and [`prox`] and rounded to `T`. Sums
//! accumulate in `f64`.

use num_traits::Float;

use super::prox::prox;
use crate::elementwise::scalar::{hidden_u_step_leaky_relu, hidden_u_step_relu, leaky_relu, sq};
use crate::elementwise::USums;
use crate::model::Activation;

/// Converts to `f64`; every `Float` the kernels run on (`f32`, `f64`) converts exactly.
#[inline(always)]
fn to_f64<T: Float>(x: T) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}

/// Converts from `f64`, rounding to nearest.
#[inline(always)]
fn from_f64<T: Float>(x: f64) -> T {
    T::from(x).unwrap_or_else(T::nan)
}

/// Evaluates `sigma(x)` in `T` for the piecewise-linear activations and in `f64` otherwise.
#[inline(always)]
pub fn value<T: Float>(act: Activation, x: T) -> T {
    match act {
        Activation::Relu => x.max(T::zero()),
        Activation::LeakyRelu { slope } => leaky_relu(x, from_f64(slope)),
        Activation::Linear => x,
        Activation::Sigmoid | Activation::Tanh | Activation::Softplus => from_f64(act.value(to_f64(x))),
    }
}

/// `dst = sigma(src)`.
pub fn activate<T: Float>(act: Activation, dst: &mut [T], src: &[T]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = value(act, s);
    }
}

/// `x = sigma(x + bias)`.
pub fn add_bias_activate<T: Float>(act: Activation, x: &mut [T], bias: &[T]) {
    debug_assert_eq!(x.len(), bias.len());
    for (x, &b) in x.iter_mut().zip(bias) {
        *x = value(act, *x + b);
    }
}

/// `acc = acc + scale * sigma(u)`.
pub fn add_scaled_activation<T: Float>(act: Activation, acc: &mut [T], u: &[T], scale: T) {
    debug_assert_eq!(acc.len(), u.len());
    for (acc, &u) in acc.iter_mut().zip(u) {
        *acc = *acc + scale * value(act, u);
    }
}

/// `||v - sigma(u)||^2`.
pub fn dist2_activation<T: Float>(act: Activation, v: &[T], u: &[T]) -> f64 {
    debug_assert_eq!(v.len(), u.len());
    v.iter().zip(u).map(|(&v, &u)| sq(v - value(act, u))).sum()
}

/// Hidden pre-activation update; see [`super::ActivationKernels::hidden_u_step`].
#[allow(clippy::too_many_arguments)]
pub fn hidden_u_step<T: Float>(
    act: Activation,
    u: &mut [T],
    p: &[T],
    bias: &[T],
    a: &[T],
    rho: T,
    alpha: T,
    gamma: T,
) -> USums {
    debug_assert!(u.len() == p.len() && u.len() == bias.len() && u.len() == a.len());
    match act {
        Activation::Relu => return hidden_u_step_relu(u, p, bias, a, rho, alpha, gamma),
        Activation::LeakyRelu { slope } => {
            return hidden_u_step_leaky_relu(u, p, bias, a, rho, alpha, gamma, from_f64(slope))
        }
        _ => {}
    }

    let inv = T::one() / (rho + alpha);
    let g = (rho + alpha) / gamma;
    let mut sums = USums::default();
    for r in 0..u.len() {
        let old = u[r];
        let product = p[r] + bias[r];
        let center = (rho * product + alpha * old) * inv;
        let new = match act {
            Activation::Linear => (a[r] + g * center) / (T::one() + g),
            _ => from_f64(prox(act, to_f64(a[r]), to_f64(center), to_f64(g))),
        };
        u[r] = new;
        sums.coupling_old += sq(old - product);
        sums.coupling_new += sq(new - product);
        sums.link_old += sq(a[r] - value(act, old));
        sums.link_new += sq(a[r] - value(act, new));
        sums.step += sq(new - old);
    }
    sums
}
