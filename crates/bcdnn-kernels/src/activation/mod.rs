//! Hidden activations: forward-pass kernels, objective terms and the exact pre-activation
//! (`U`) update.
//!
//! [`prox`] is the exact scalar proximal step in `f64`, the reference for every kernel and the
//! fallback of the SIMD versions. [`ActivationKernels`] runs the kernels on a column: `f64`
//! runs the generic scalar references in [`scalar`], `f32` the SIMD versions in [`simd`].

pub mod prox;
pub mod scalar;
pub mod simd;

#[cfg(test)]
mod tests;

pub use prox::prox;

use crate::elementwise::USums;
use crate::model::Activation;

/// Activation kernels for one scalar type. Slices passed together must have equal lengths
/// (checked by `debug_assert!` in the scalar versions and by `assert!` in the SIMD versions).
pub trait ActivationKernels: Sized + Copy {
    /// `dst = sigma(src)`.
    fn activate(act: Activation, dst: &mut [Self], src: &[Self]);

    /// `x = sigma(x + bias)`: the hidden-layer epilogue of the forward pass.
    fn add_bias_activate(act: Activation, x: &mut [Self], bias: &[Self]);

    /// `acc = acc + scale * sigma(u)`.
    fn add_scaled_activation(act: Activation, acc: &mut [Self], u: &[Self], scale: Self);

    /// `||v - sigma(u)||^2`, accumulated in `f64`.
    fn dist2_activation(act: Activation, v: &[Self], u: &[Self]) -> f64;

    /// Hidden pre-activation update. With `P = p + bias`,
    /// `B = (rho P + alpha u_old) / (rho + alpha)` and `g = (rho + alpha) / gamma`, each entry
    /// becomes `prox(act, a, B, g)`, the global minimiser of
    /// `1/2 (sigma(u) - a)^2 + g/2 (u - B)^2`.
    ///
    /// For `f32`, sigmoid, tanh and softplus match `prox` in `f64` rounded to `f32` to within
    /// `16 f32::EPSILON (1 + |u| + |B|)`. ReLU and leaky ReLU may pick the other of two
    /// candidates whose objective values are equal to within rounding.
    #[allow(clippy::too_many_arguments)]
    fn hidden_u_step(
        act: Activation,
        u: &mut [Self],
        p: &[Self],
        bias: &[Self],
        a: &[Self],
        rho: Self,
        alpha: Self,
        gamma: Self,
    ) -> USums;
}

impl ActivationKernels for f64 {
    fn activate(act: Activation, dst: &mut [Self], src: &[Self]) {
        scalar::activate(act, dst, src)
    }
    fn add_bias_activate(act: Activation, x: &mut [Self], bias: &[Self]) {
        scalar::add_bias_activate(act, x, bias)
    }
    fn add_scaled_activation(act: Activation, acc: &mut [Self], u: &[Self], scale: Self) {
        scalar::add_scaled_activation(act, acc, u, scale)
    }
    fn dist2_activation(act: Activation, v: &[Self], u: &[Self]) -> f64 {
        scalar::dist2_activation(act, v, u)
    }
    fn hidden_u_step(
        act: Activation,
        u: &mut [Self],
        p: &[Self],
        bias: &[Self],
        a: &[Self],
        rho: Self,
        alpha: Self,
        gamma: Self,
    ) -> USums {
        scalar::hidden_u_step(act, u, p, bias, a, rho, alpha, gamma)
    }
}

impl ActivationKernels for f32 {
    fn activate(act: Activation, dst: &mut [Self], src: &[Self]) {
        simd::activate(act, dst, src)
    }
    fn add_bias_activate(act: Activation, x: &mut [Self], bias: &[Self]) {
        simd::add_bias_activate(act, x, bias)
    }
    fn add_scaled_activation(act: Activation, acc: &mut [Self], u: &[Self], scale: Self) {
        simd::add_scaled_activation(act, acc, u, scale)
    }
    fn dist2_activation(act: Activation, v: &[Self], u: &[Self]) -> f64 {
        simd::dist2_activation(act, v, u)
    }
    fn hidden_u_step(
        act: Activation,
        u: &mut [Self],
        p: &[Self],
        bias: &[Self],
        a: &[Self],
        rho: Self,
        alpha: Self,
        gamma: Self,
    ) -> USums {
        simd::hidden_u_step(act, u, p, bias, a, rho, alpha, gamma)
    }
}
