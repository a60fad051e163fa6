//! SIMD versions of the activation kernels for `f32`, written over pulp's [`Simd`] trait and
//! dispatched like [`crate::elementwise::simd`]. Columns shorter than [`MIN_SIMD_LEN`] run the
//! scalar references in [`super::scalar`].
//!
//! Sigmoid, tanh and softplus are built on [`exp_f32s`], a range-reduced polynomial. The
//! smooth proximal step runs a fixed number of safeguarded Newton steps in every lane. A lane
//! is recomputed with the scalar [`prox`] (in `f64`, rounded) when its last step was not below
//! the tolerance or its result is not certified as the global minimiser. The certificate is
//! that `f` is convex on the whole line, or that `f'' > 0` on the region where a point with a
//! smaller or equal `f` could lie (see [`super::prox::improvement_region`]).
//!
//! The tail of a slice is loaded with `partial_load_f32s`, which fills the lanes past the end
//! with 0. The smooth activations do not map 0 to 0, so every sum term of the tail is
//! multiplied by a 0/1 lane mask before it is squared.

use pulp::{Simd, WithSimd};

use super::prox::prox;
use super::scalar;
use crate::elementwise::simd::{
    add_bias_relu, add_square, arch, check_lengths, hidden_u_step_leaky_relu, hidden_u_step_relu, reduce, relu, ULanes,
    MIN_SIMD_LEN,
};
use crate::elementwise::USums;
use crate::model::Activation;

/// Upper bound on `Simd::F32_LANES` over pulp's levels, the size of the per-vector buffers.
const MAX_F32_LANES: usize = 64;

/// Ones, loaded partially to build the 0/1 mask of the valid lanes of a tail.
const ONES: [f32; MAX_F32_LANES] = [1.0; MAX_F32_LANES];

// Activation kinds as const generic parameters, so that each kernel loop is compiled once per kind.
const RELU: u8 = 0;
const LEAKY_RELU: u8 = 1;
const SIGMOID: u8 = 2;
const TANH: u8 = 3;
const SOFTPLUS: u8 = 4;
const LINEAR: u8 = 5;

fn kind(act: Activation) -> u8 {
    match act {
        Activation::Relu => RELU,
        Activation::LeakyRelu { .. } => LEAKY_RELU,
        Activation::Sigmoid => SIGMOID,
        Activation::Tanh => TANH,
        Activation::Softplus => SOFTPLUS,
        Activation::Linear => LINEAR,
    }
}

fn slope(act: Activation) -> f32 {
    match act {
        Activation::LeakyRelu { slope } => slope as f32,
        _ => 0.0,
    }
}

/// Calls `$target.run::<S, KIND>($simd)` with the const kind of `$act`.
macro_rules! run_for_kind {
    ($target:expr, $simd:expr, $act:expr) => {
        match kind($act) {
            RELU => $target.run::<S, RELU>($simd),
            LEAKY_RELU => $target.run::<S, LEAKY_RELU>($simd),
            SIGMOID => $target.run::<S, SIGMOID>($simd),
            TANH => $target.run::<S, TANH>($simd),
            SOFTPLUS => $target.run::<S, SOFTPLUS>($simd),
            _ => $target.run::<S, LINEAR>($simd),
        }
    };
}

/// Largest argument with a finite result: `ln(f32::MAX) = 88.7228391...` rounded down to `f32`.
const EXP_MAX_ARGUMENT: f32 = 88.722_83;
/// Smallest argument with a normal result: `ln(2^-126) = -87.3365447...` rounded up to `f32`.
const EXP_MIN_ARGUMENT: f32 = -87.336_54;
/// `1.5 * 2^23`: adding and subtracting it rounds an `f32` of magnitude below `2^22` to the
/// nearest integer, and the sum's bit pattern is `0x4B40_0000` plus that integer.
const ROUNDING_MAGIC: f32 = 12_582_912.0;
const ROUNDING_MAGIC_BITS: u32 = 0x4B40_0000;
/// `ln 2` split so that `n * LN2_HIGH` is exact for `|n| <= 128`.
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;

/// Returns `exp(x)` in every lane.
///
/// `x = n ln 2 + r` with `n = round(x / ln 2)` and `|r| <= ln(2) / 2`. `exp(r)` is its Taylor
/// polynomial of degree 7 (truncation error below `8e-9` relative), evaluated by Horner's rule,
/// and `2^n` is built in the exponent bits. The maximum relative error is `3 f32::EPSILON`
/// for `x` in `[-87.33654, 88.72283]` (tested against `f64::exp` rounded to `f32`). Above that
/// range the result is `+inf`. Below it the result is 0, an absolute error below `2^-126`
/// where `f64::exp` rounded to `f32` is subnormal. NaN gives NaN.
#[inline(always)]
pub fn exp_f32s<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let zero = simd.splat_f32s(0.0);
    let one = simd.splat_f32s(1.0);
    let max_argument = simd.splat_f32s(EXP_MAX_ARGUMENT);
    let min_argument = simd.splat_f32s(EXP_MIN_ARGUMENT);
    let magic = simd.splat_f32s(ROUNDING_MAGIC);
    let clamped = simd.min_f32s(simd.max_f32s(x, min_argument), max_argument);

    let n =
        simd.sub_f32s(simd.add_f32s(simd.mul_f32s(clamped, simd.splat_f32s(std::f32::consts::LOG2_E)), magic), magic);
    let r = simd.sub_f32s(clamped, simd.mul_f32s(n, simd.splat_f32s(LN2_HIGH)));
    let r = simd.sub_f32s(r, simd.mul_f32s(n, simd.splat_f32s(LN2_LOW)));

    // 1 + r + r^2/2! + ... + r^7/7!
    let mut poly = simd.splat_f32s(1.0 / 5040.0);
    for coefficient in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        poly = simd.mul_add_e_f32s(poly, r, simd.splat_f32s(coefficient));
    }

    // n lies in [-126, 128], but 2^128 has no f32 exponent, so positive n is applied as
    // 2^(n - 1) * 2.
    let extra = simd.select_f32s(simd.greater_than_f32s(n, zero), one, zero);
    let reduced = simd.sub_f32s(n, extra);
    let bits = simd.transmute_u32s_f32s(simd.add_f32s(reduced, magic));
    let biased = simd.sub_u32s(bits, simd.splat_u32s(ROUNDING_MAGIC_BITS - 127));
    let power = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(biased, simd.splat_u32s(23)));
    let result = simd.mul_f32s(simd.mul_f32s(poly, power), simd.add_f32s(one, extra));

    let result = simd.select_f32s(simd.greater_than_f32s(x, max_argument), simd.splat_f32s(f32::INFINITY), result);
    let result = simd.select_f32s(simd.less_than_f32s(x, min_argument), zero, result);
    simd.select_f32s(simd.equal_f32s(x, x), result, x)
}

/// `sigma`, `sigma'` and `sigma''` of a smooth activation in every lane.
struct Parts<S: Simd> {
    value: S::f32s,
    slope: S::f32s,
    curvature: S::f32s,
}

/// Evaluates the smooth activation `KIND` (sigmoid, tanh or softplus) and its derivatives.
///
/// Each form goes through `e = exp(-|u|)` or `exp(-2|u|)`, which lies in `[0, 1]`, so that no
/// intermediate overflows. `tanh(u)` is `(1 - e) / (1 + e)` with `e = exp(-2|u|)`, accurate to
/// a few `f32::EPSILON` absolute (not relative) near 0.
#[inline(always)]
fn smooth_parts<S: Simd, const KIND: u8>(simd: S, u: S::f32s) -> Parts<S> {
    let zero = simd.splat_f32s(0.0);
    let one = simd.splat_f32s(1.0);
    let magnitude = simd.abs_f32s(u);
    let nonnegative = simd.greater_than_or_equal_f32s(u, zero);
    let exponent =
        if KIND == TANH { simd.mul_f32s(simd.splat_f32s(-2.0), magnitude) } else { simd.neg_f32s(magnitude) };
    let e = exp_f32s(simd, exponent);
    let r = simd.div_f32s(one, simd.add_f32s(one, e));
    // (1 - e) / (1 + e): tanh(|u| / 2) for sigmoid, tanh(|u|) for tanh.
    let odd = simd.mul_f32s(simd.sub_f32s(one, e), r);
    let e_r_r = simd.mul_f32s(simd.mul_f32s(e, r), r);
    // sigmoid(u) = 1 / (1 + e) for u >= 0 and e / (1 + e) otherwise.
    let sigmoid = simd.select_f32s(nonnegative, r, simd.mul_f32s(e, r));

    if KIND == SIGMOID {
        // sigma' = e / (1 + e)^2 and sigma'' = -sign(u) sigma' tanh(|u| / 2).
        let curvature = simd.mul_f32s(e_r_r, odd);
        let curvature = simd.select_f32s(nonnegative, simd.neg_f32s(curvature), curvature);
        Parts { value: sigmoid, slope: e_r_r, curvature }
    } else if KIND == TANH {
        // tanh' = 4 e / (1 + e)^2 and tanh'' = -2 tanh tanh'.
        let value = simd.select_f32s(nonnegative, odd, simd.neg_f32s(odd));
        let slope = simd.mul_f32s(simd.splat_f32s(4.0), e_r_r);
        let curvature = simd.mul_f32s(simd.mul_f32s(simd.splat_f32s(-2.0), value), slope);
        Parts { value, slope, curvature }
    } else {
        // softplus = max(u, 0) + log1p(e) with log1p(e) = 2 atanh(z), z = e / (2 + e) <= 1/3,
        // summed to z^15 (relative truncation error below 2e-9). softplus' = sigmoid and
        // softplus'' = e / (1 + e)^2.
        let z = simd.div_f32s(e, simd.add_f32s(simd.splat_f32s(2.0), e));
        let z2 = simd.mul_f32s(z, z);
        let mut series = simd.splat_f32s(1.0 / 15.0);
        for coefficient in [1.0 / 13.0, 1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
            series = simd.mul_add_e_f32s(series, z2, simd.splat_f32s(coefficient));
        }
        let log1p = simd.mul_f32s(simd.add_f32s(z, z), series);
        let value = simd.add_f32s(simd.max_f32s(u, zero), log1p);
        Parts { value, slope: sigmoid, curvature: e_r_r }
    }
}

/// Evaluates `sigma(u)` for the activation `KIND` in every lane.
#[inline(always)]
fn value_f32s<S: Simd, const KIND: u8>(simd: S, slope: S::f32s, u: S::f32s) -> S::f32s {
    let zero = simd.splat_f32s(0.0);
    match KIND {
        RELU => simd.max_f32s(u, zero),
        LEAKY_RELU => simd.add_f32s(simd.max_f32s(u, zero), simd.mul_f32s(slope, simd.min_f32s(u, zero))),
        LINEAR => u,
        _ => smooth_parts::<S, KIND>(simd, u).value,
    }
}

/// `exp(src)` on one slice, for the accuracy tests of [`exp_f32s`].
pub(crate) struct Exp<'a> {
    pub dst: &'a mut [f32],
    pub src: &'a [f32],
}

impl WithSimd for Exp<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (dst_head, dst_tail) = S::as_mut_simd_f32s(self.dst);
        let (src_head, src_tail) = S::as_simd_f32s(self.src);
        for (dst, &src) in dst_head.iter_mut().zip(src_head) {
            *dst = exp_f32s(simd, src);
        }
        simd.partial_store_f32s(dst_tail, exp_f32s(simd, simd.partial_load_f32s(src_tail)));
    }
}

/// `dst = sigma(src)`.
pub(crate) struct Activate<'a> {
    pub act: Activation,
    pub dst: &'a mut [f32],
    pub src: &'a [f32],
}

impl WithSimd for Activate<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        run_for_kind!(self, simd, self.act)
    }
}

impl Activate<'_> {
    #[inline(always)]
    fn run<S: Simd, const KIND: u8>(self, simd: S) {
        let slope = simd.splat_f32s(slope(self.act));
        let (dst_head, dst_tail) = S::as_mut_simd_f32s(self.dst);
        let (src_head, src_tail) = S::as_simd_f32s(self.src);
        for (dst, &src) in dst_head.iter_mut().zip(src_head) {
            *dst = value_f32s::<S, KIND>(simd, slope, src);
        }
        let src = simd.partial_load_f32s(src_tail);
        simd.partial_store_f32s(dst_tail, value_f32s::<S, KIND>(simd, slope, src));
    }
}

/// `x = sigma(x + bias)`.
pub(crate) struct AddBiasActivate<'a> {
    pub act: Activation,
    pub x: &'a mut [f32],
    pub bias: &'a [f32],
}

impl WithSimd for AddBiasActivate<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        run_for_kind!(self, simd, self.act)
    }
}

impl AddBiasActivate<'_> {
    #[inline(always)]
    fn run<S: Simd, const KIND: u8>(self, simd: S) {
        let slope = simd.splat_f32s(slope(self.act));
        let (x_head, x_tail) = S::as_mut_simd_f32s(self.x);
        let (bias_head, bias_tail) = S::as_simd_f32s(self.bias);
        for (x, &bias) in x_head.iter_mut().zip(bias_head) {
            *x = value_f32s::<S, KIND>(simd, slope, simd.add_f32s(*x, bias));
        }
        let x = simd.add_f32s(simd.partial_load_f32s(x_tail), simd.partial_load_f32s(bias_tail));
        simd.partial_store_f32s(x_tail, value_f32s::<S, KIND>(simd, slope, x));
    }
}

/// `acc = acc + scale * sigma(u)`.
pub(crate) struct AddScaledActivation<'a> {
    pub act: Activation,
    pub acc: &'a mut [f32],
    pub u: &'a [f32],
    pub scale: f32,
}

impl WithSimd for AddScaledActivation<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        run_for_kind!(self, simd, self.act)
    }
}

impl AddScaledActivation<'_> {
    #[inline(always)]
    fn run<S: Simd, const KIND: u8>(self, simd: S) {
        let slope = simd.splat_f32s(slope(self.act));
        let scale = simd.splat_f32s(self.scale);
        let (acc_head, acc_tail) = S::as_mut_simd_f32s(self.acc);
        let (u_head, u_tail) = S::as_simd_f32s(self.u);
        for (acc, &u) in acc_head.iter_mut().zip(u_head) {
            *acc = simd.add_f32s(*acc, simd.mul_f32s(scale, value_f32s::<S, KIND>(simd, slope, u)));
        }
        let acc = simd.partial_load_f32s(acc_tail);
        let u = simd.partial_load_f32s(u_tail);
        let new = simd.add_f32s(acc, simd.mul_f32s(scale, value_f32s::<S, KIND>(simd, slope, u)));
        simd.partial_store_f32s(acc_tail, new);
    }
}

/// `||v - sigma(u)||^2`.
pub(crate) struct Dist2Activation<'a> {
    pub act: Activation,
    pub v: &'a [f32],
    pub u: &'a [f32],
}

impl WithSimd for Dist2Activation<'_> {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        run_for_kind!(self, simd, self.act)
    }
}

impl Dist2Activation<'_> {
    #[inline(always)]
    fn run<S: Simd, const KIND: u8>(self, simd: S) -> f64 {
        let slope = simd.splat_f32s(slope(self.act));
        let mut sum = simd.splat_f32s(0.0);
        let (v_head, v_tail) = S::as_simd_f32s(self.v);
        let (u_head, u_tail) = S::as_simd_f32s(self.u);
        for (&v, &u) in v_head.iter().zip(u_head) {
            sum = add_square(simd, sum, simd.sub_f32s(v, value_f32s::<S, KIND>(simd, slope, u)));
        }
        let valid = simd.partial_load_f32s(&ONES[..v_tail.len()]);
        let v = simd.partial_load_f32s(v_tail);
        let u = simd.partial_load_f32s(u_tail);
        let difference = simd.mul_f32s(valid, simd.sub_f32s(v, value_f32s::<S, KIND>(simd, slope, u)));
        sum = add_square(simd, sum, difference);
        reduce(simd, sum)
    }
}

#[cfg(test)]
thread_local! {
    /// Lanes recomputed by the scalar `prox` on this thread, for the tests of the fallback rate.
    pub(crate) static FALLBACK_LANES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Safeguarded Newton steps per lane of the smooth proximal step. From the centre `B`, most
/// lanes with `f` convex reach the tolerance in 3 to 5 steps; the others are recomputed by
/// the scalar [`prox`].
const NEWTON_STEPS: usize = 8;

/// A lane is accepted when its last Newton step is at most `NEWTON_TOLERANCE (1 + |u| + |B|)`.
/// Newton converges quadratically, so the error after that step is far smaller, and the
/// rounding of `f'` in `f32` leaves the root uncertain by a few `f32::EPSILON` of that scale.
const NEWTON_TOLERANCE: f32 = 64.0 * f32::EPSILON;

/// Hidden sigmoid, tanh, softplus or linear pre-activation update; see
/// [`super::ActivationKernels::hidden_u_step`].
pub(crate) struct HiddenUStepSmooth<'a> {
    pub act: Activation,
    pub u: &'a mut [f32],
    pub p: &'a [f32],
    pub bias: &'a [f32],
    pub a: &'a [f32],
    pub rho: f32,
    pub alpha: f32,
    pub gamma: f32,
}

impl WithSimd for HiddenUStepSmooth<'_> {
    type Output = USums;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> USums {
        match kind(self.act) {
            SIGMOID => self.run::<S, SIGMOID>(simd),
            TANH => self.run::<S, TANH>(simd),
            SOFTPLUS => self.run::<S, SOFTPLUS>(simd),
            LINEAR => self.run::<S, LINEAR>(simd),
            _ => unreachable!("HiddenUStepSmooth: {} has its own kernel", self.act.name()),
        }
    }
}

/// Coefficients of the smooth update, splatted once per call.
struct SmoothCoefficients<S: Simd, const KIND: u8> {
    act: Activation,
    g_scalar: f32,
    zero: S::f32s,
    one: S::f32s,
    half: S::f32s,
    rho: S::f32s,
    alpha: S::f32s,
    inv: S::f32s,
    g: S::f32s,
    inv_g: S::f32s,
    inv_one_plus_g: S::f32s,
}

impl<S: Simd, const KIND: u8> SmoothCoefficients<S, KIND> {
    /// Returns `u_new` for one vector of entries, of which the first `count` are valid, and
    /// adds their terms to `sums`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn update(
        &self,
        simd: S,
        old: S::f32s,
        p: S::f32s,
        bias: S::f32s,
        a: S::f32s,
        count: usize,
        sums: &mut ULanes<S>,
    ) -> S::f32s {
        let product = simd.add_f32s(p, bias);
        let center = simd.add_f32s(simd.mul_f32s(self.rho, product), simd.mul_f32s(self.alpha, old));
        let center = simd.mul_f32s(center, self.inv);
        let new = if KIND == LINEAR {
            simd.mul_f32s(simd.add_f32s(a, simd.mul_f32s(self.g, center)), self.inv_one_plus_g)
        } else {
            self.minimiser(simd, a, center, count)
        };

        let valid = if count == S::F32_LANES { self.one } else { simd.partial_load_f32s(&ONES[..count]) };
        let link_old = simd.sub_f32s(a, value_f32s::<S, KIND>(simd, self.zero, old));
        let link_new = simd.sub_f32s(a, value_f32s::<S, KIND>(simd, self.zero, new));
        let coupling_old = simd.mul_f32s(valid, simd.sub_f32s(old, product));
        let coupling_new = simd.mul_f32s(valid, simd.sub_f32s(new, product));
        sums.coupling_old = add_square(simd, sums.coupling_old, coupling_old);
        sums.coupling_new = add_square(simd, sums.coupling_new, coupling_new);
        sums.link_old = add_square(simd, sums.link_old, simd.mul_f32s(valid, link_old));
        sums.link_new = add_square(simd, sums.link_new, simd.mul_f32s(valid, link_new));
        sums.step = add_square(simd, sums.step, simd.mul_f32s(valid, simd.sub_f32s(new, old)));
        new
    }

    /// Returns `argmin_u 1/2 (sigma(u) - a)^2 + g/2 (u - B)^2` in every lane: safeguarded
    /// Newton in the lanes where `f` is convex with margin, the scalar [`prox`] in the others
    /// and in those that did not converge.
    #[inline(always)]
    fn minimiser(&self, simd: S, a: S::f32s, center: S::f32s, count: usize) -> S::f32s {
        // The bracket of every stationary point and sup |sigma - a| over it, as in
        // `prox::bracket`.
        let (mut low, mut high, max_link, max_curvature) = if KIND == SOFTPLUS {
            let high = simd.add_f32s(center, simd.mul_f32s(simd.max_f32s(a, self.zero), self.inv_g));
            let value_high = smooth_parts::<S, KIND>(simd, high).value;
            let shift = simd.sub_f32s(value_high, simd.min_f32s(a, self.zero));
            let low = simd.sub_f32s(center, simd.mul_f32s(shift, self.inv_g));
            let value_low = smooth_parts::<S, KIND>(simd, low).value;
            let max_link =
                simd.max_f32s(simd.abs_f32s(simd.sub_f32s(value_low, a)), simd.abs_f32s(simd.sub_f32s(value_high, a)));
            (low, high, max_link, 0.25)
        } else {
            let (range_low, max_slope, max_curvature) =
                if KIND == SIGMOID { (0.0, 0.25, 0.096_225_05) } else { (-1.0, 1.0, 0.769_800_4) };
            let max_link = simd.max_f32s(
                simd.abs_f32s(simd.sub_f32s(a, simd.splat_f32s(range_low))),
                simd.abs_f32s(simd.sub_f32s(self.one, a)),
            );
            let radius = simd.mul_f32s(simd.mul_f32s(max_link, simd.splat_f32s(max_slope)), self.inv_g);
            (simd.sub_f32s(center, radius), simd.add_f32s(center, radius), max_link, max_curvature)
        };
        // f'' >= g - sup |sigma''| sup |sigma - a| >= g / 2.
        let convex = simd.greater_than_f32s(self.g, simd.mul_f32s(simd.splat_f32s(2.0 * max_curvature), max_link));
        // Newton narrows the bracket as if f' increased, which is only true where f is convex.
        let bracket = (low, high);

        let mut u = center;
        let mut step = simd.splat_f32s(f32::INFINITY);
        for _ in 0..NEWTON_STEPS {
            let parts = smooth_parts::<S, KIND>(simd, u);
            let link = simd.sub_f32s(parts.value, a);
            let first =
                simd.add_f32s(simd.mul_f32s(link, parts.slope), simd.mul_f32s(self.g, simd.sub_f32s(u, center)));
            let second = simd.add_f32s(
                simd.add_f32s(simd.mul_f32s(parts.slope, parts.slope), simd.mul_f32s(link, parts.curvature)),
                self.g,
            );
            let positive = simd.greater_than_f32s(first, self.zero);
            high = simd.select_f32s(positive, u, high);
            low = simd.select_f32s(positive, low, u);
            let newton = simd.sub_f32s(u, simd.div_f32s(first, second));
            // A Newton step that rounds to no change means convergence, also where u is a
            // bracket end.
            let inside = simd.and_m32s(simd.greater_than_f32s(newton, low), simd.less_than_f32s(newton, high));
            let inside = simd.or_m32s(inside, simd.equal_f32s(newton, u));
            let bisection = simd.mul_f32s(self.half, simd.add_f32s(low, high));
            let next = simd.select_f32s(inside, newton, bisection);
            let next = simd.select_f32s(simd.equal_f32s(first, self.zero), u, next);
            step = simd.sub_f32s(next, u);
            u = next;
        }

        let scale = simd.add_f32s(simd.add_f32s(self.one, simd.abs_f32s(u)), simd.abs_f32s(center));
        let converged =
            simd.less_than_or_equal_f32s(simd.abs_f32s(step), simd.mul_f32s(simd.splat_f32s(NEWTON_TOLERANCE), scale));
        let mut accepted = simd.and_m32s(convex, converged);
        if simd.first_true_m32s(simd.not_m32s(accepted)) >= S::F32_LANES {
            return u;
        }
        let uncertified = simd.and_m32s(converged, simd.not_m32s(convex));
        if simd.first_true_m32s(uncertified) < S::F32_LANES {
            let certified = self.certified_global(simd, a, center, bracket, u);
            accepted = simd.or_m32s(accepted, simd.and_m32s(uncertified, certified));
            if simd.first_true_m32s(simd.not_m32s(accepted)) >= S::F32_LANES {
                return u;
            }
        }
        self.recompute(simd, u, a, center, accepted, count)
    }

    /// Returns whether the stationary point `u` is certified as the global minimiser, by the
    /// argument of [`super::prox::improvement_region`]. A global minimiser `v` has
    /// `f(v) <= f(u) = F` and lies in the `bracket` of every stationary point, with
    /// `|v - B| <= sqrt(2 F / g)` and `|sigma(v) - a| <= sqrt(2 F)`. So `f'' > 0` between `u`
    /// and any such `v` if `g + min (sigma - a) sigma'' > 0` over the ranges of both factors on
    /// that region.
    ///
    /// The `f32` rounding of `F` is covered by enlarging it by `2^-10`, and the rounding of
    /// sigma and `sigma''` (a few `f32::EPSILON` absolute) by a margin of `2^-10` of the terms.
    #[inline(always)]
    fn certified_global(
        &self,
        simd: S,
        a: S::f32s,
        center: S::f32s,
        bracket: (S::f32s, S::f32s),
        u: S::f32s,
    ) -> S::m32s {
        let (low, high) = bracket;
        let margin = simd.splat_f32s(1.0 / 1024.0);
        let parts = smooth_parts::<S, KIND>(simd, u);
        let link = simd.sub_f32s(parts.value, a);
        let offset = simd.sub_f32s(u, center);
        let value = simd.mul_f32s(
            self.half,
            simd.add_f32s(simd.mul_f32s(link, link), simd.mul_f32s(self.g, simd.mul_f32s(offset, offset))),
        );
        let twice_value = simd.mul_f32s(simd.add_f32s(value, value), simd.add_f32s(self.one, margin));
        let max_link = simd.sqrt_f32s(twice_value);
        let radius = simd.sqrt_f32s(simd.mul_f32s(twice_value, self.inv_g));
        // Newton keeps u inside the bracket, but the region must contain u also after rounding.
        let region_low = simd.min_f32s(simd.max_f32s(low, simd.sub_f32s(center, radius)), u);
        let region_high = simd.max_f32s(simd.min_f32s(high, simd.add_f32s(center, radius)), u);
        let at_low = smooth_parts::<S, KIND>(simd, region_low);
        let at_high = smooth_parts::<S, KIND>(simd, region_high);
        let lowest = if KIND == SOFTPLUS {
            // softplus'' = sigmoid' lies in (0, 1/4] and peaks at u = 0.
            let link_low = simd.max_f32s(simd.sub_f32s(at_low.value, a), simd.neg_f32s(max_link));
            let link_high = simd.min_f32s(simd.sub_f32s(at_high.value, a), max_link);
            let curvature_low = simd.min_f32s(at_low.curvature, at_high.curvature);
            let curvature_high = simd.max_f32s(at_low.curvature, at_high.curvature);
            let straddles =
                simd.and_m32s(simd.less_than_f32s(region_low, self.zero), simd.less_than_f32s(self.zero, region_high));
            let curvature_high = simd.select_f32s(straddles, simd.splat_f32s(0.25), curvature_high);
            lowest_product(simd, (link_low, link_high), (curvature_low, curvature_high))
        } else {
            // sigma'' is a polynomial in s = sigma(u), and s - a lies within max_link of 0, so
            // s ranges over the values at the region's ends clipped to [a - max_link, a + max_link].
            // sigma'' changes sign only at s = `middle`, so each half has a fixed sign of sigma''
            // and the product bound is tight in that factor's sign.
            let middle = simd.splat_f32s(if KIND == SIGMOID { 0.5 } else { 0.0 });
            let s_low = simd.max_f32s(at_low.value, simd.sub_f32s(a, max_link));
            let s_high = simd.min_f32s(at_high.value, simd.add_f32s(a, max_link));
            let below = self.lowest_on_values(simd, a, s_low, simd.min_f32s(s_high, middle));
            let above = self.lowest_on_values(simd, a, simd.max_f32s(s_low, middle), s_high);
            simd.min_f32s(below, above)
        };
        let bound = simd.add_f32s(self.g, lowest);
        let slack = simd.mul_f32s(margin, simd.add_f32s(simd.add_f32s(self.g, simd.abs_f32s(lowest)), self.one));
        simd.greater_than_f32s(bound, slack)
    }

    /// Returns a lower bound of `(s - a) c(s)` over `s` in `[s_low, s_high]`, where `c(s)` is
    /// `sigma''` as a polynomial in `s = sigma(u)`, or `+inf` where the interval is empty.
    ///
    /// - tanh: `c(s) = -2 s (1 - s^2)`, minimum `-4 / (3 sqrt 3)` at `s = 1/sqrt 3`, maximum
    ///   `4 / (3 sqrt 3)` at `s = -1/sqrt 3`.
    /// - sigmoid: `c(s) = s (1 - s) (1 - 2 s)`, minimum `-1 / (6 sqrt 3)` at
    ///   `s = 1/2 + sqrt(3) / 6`, maximum `1 / (6 sqrt 3)` at `s = 1/2 - sqrt(3) / 6`.
    ///
    /// The critical points and extreme values are rounded outwards.
    #[inline(always)]
    fn lowest_on_values(&self, simd: S, a: S::f32s, s_low: S::f32s, s_high: S::f32s) -> S::f32s {
        let curvature_of = |s: S::f32s| {
            let square = simd.mul_f32s(s, s);
            if KIND == SIGMOID {
                let slope = simd.sub_f32s(s, square);
                simd.mul_f32s(slope, simd.sub_f32s(self.one, simd.add_f32s(s, s)))
            } else {
                simd.mul_f32s(simd.mul_f32s(simd.splat_f32s(-2.0), s), simd.sub_f32s(self.one, square))
            }
        };
        let (at_low, at_high) = (curvature_of(s_low), curvature_of(s_high));
        let (minimum_at, maximum_at, extreme) = if KIND == SIGMOID {
            (0.788_675_1, 0.211_324_87, 0.096_225_05)
        } else {
            (0.577_350_3, -0.577_350_3, 0.769_800_4)
        };
        let crosses = |s: f32| {
            let s = simd.splat_f32s(s);
            simd.and_m32s(simd.less_than_or_equal_f32s(s_low, s), simd.less_than_or_equal_f32s(s, s_high))
        };
        let extreme = simd.splat_f32s(extreme);
        let curvature_low =
            simd.select_f32s(crosses(minimum_at), simd.neg_f32s(extreme), simd.min_f32s(at_low, at_high));
        let curvature_high = simd.select_f32s(crosses(maximum_at), extreme, simd.max_f32s(at_low, at_high));
        let link = (simd.sub_f32s(s_low, a), simd.sub_f32s(s_high, a));
        let lowest = lowest_product(simd, link, (curvature_low, curvature_high));
        let empty = simd.greater_than_f32s(s_low, s_high);
        simd.select_f32s(empty, simd.splat_f32s(f32::INFINITY), lowest)
    }

    /// Replaces the lanes of `u` that are not `accepted`, among the first `count`, by the
    /// scalar [`prox`].
    #[cold]
    #[inline(never)]
    fn recompute(&self, simd: S, u: S::f32s, a: S::f32s, center: S::f32s, accepted: S::m32s, count: usize) -> S::f32s {
        let lanes = S::F32_LANES;
        let mut u_lanes = [0.0f32; MAX_F32_LANES];
        let mut a_lanes = [0.0f32; MAX_F32_LANES];
        let mut center_lanes = [0.0f32; MAX_F32_LANES];
        let mut accepted_lanes = [0.0f32; MAX_F32_LANES];
        simd.partial_store_f32s(&mut u_lanes[..lanes], u);
        simd.partial_store_f32s(&mut a_lanes[..lanes], a);
        simd.partial_store_f32s(&mut center_lanes[..lanes], center);
        simd.partial_store_f32s(&mut accepted_lanes[..lanes], simd.select_f32s(accepted, self.one, self.zero));
        for i in 0..count {
            if accepted_lanes[i] == 0.0 {
                #[cfg(test)]
                FALLBACK_LANES.with(|lanes| lanes.set(lanes.get() + 1));
                let g = f64::from(self.g_scalar);
                u_lanes[i] = prox(self.act, f64::from(a_lanes[i]), f64::from(center_lanes[i]), g) as f32;
            }
        }
        simd.partial_load_f32s(&u_lanes[..lanes])
    }
}

/// Returns `min x y` over `x` in `[x.0, x.1]` and `y` in `[y.0, y.1]`, attained at a corner.
#[inline(always)]
fn lowest_product<S: Simd>(simd: S, x: (S::f32s, S::f32s), y: (S::f32s, S::f32s)) -> S::f32s {
    simd.min_f32s(
        simd.min_f32s(simd.mul_f32s(x.0, y.0), simd.mul_f32s(x.0, y.1)),
        simd.min_f32s(simd.mul_f32s(x.1, y.0), simd.mul_f32s(x.1, y.1)),
    )
}

impl HiddenUStepSmooth<'_> {
    #[inline(always)]
    fn run<S: Simd, const KIND: u8>(self, simd: S) -> USums {
        let g = (self.rho + self.alpha) / self.gamma;
        let coefficients = SmoothCoefficients::<S, KIND> {
            act: self.act,
            g_scalar: g,
            zero: simd.splat_f32s(0.0),
            one: simd.splat_f32s(1.0),
            half: simd.splat_f32s(0.5),
            rho: simd.splat_f32s(self.rho),
            alpha: simd.splat_f32s(self.alpha),
            inv: simd.splat_f32s(1.0 / (self.rho + self.alpha)),
            g: simd.splat_f32s(g),
            inv_g: simd.splat_f32s(1.0 / g),
            inv_one_plus_g: simd.splat_f32s(1.0 / (1.0 + g)),
        };
        let mut sums = ULanes::new(simd);
        let (u_head, u_tail) = S::as_mut_simd_f32s(self.u);
        let (p_head, p_tail) = S::as_simd_f32s(self.p);
        let (bias_head, bias_tail) = S::as_simd_f32s(self.bias);
        let (a_head, a_tail) = S::as_simd_f32s(self.a);

        for (((u, &p), &bias), &a) in u_head.iter_mut().zip(p_head).zip(bias_head).zip(a_head) {
            *u = coefficients.update(simd, *u, p, bias, a, S::F32_LANES, &mut sums);
        }

        let new = coefficients.update(
            simd,
            simd.partial_load_f32s(u_tail),
            simd.partial_load_f32s(p_tail),
            simd.partial_load_f32s(bias_tail),
            simd.partial_load_f32s(a_tail),
            u_tail.len(),
            &mut sums,
        );
        simd.partial_store_f32s(u_tail, new);

        sums.reduce(simd)
    }
}

/// `dst = exp(src)` by [`exp_f32s`], for every length.
pub fn exp(dst: &mut [f32], src: &[f32]) {
    check_lengths("exp", dst.len(), &[("src", src.len())]);
    arch().dispatch(Exp { dst, src })
}

/// `dst = sigma(src)`.
pub fn activate(act: Activation, dst: &mut [f32], src: &[f32]) {
    check_lengths("activate", dst.len(), &[("src", src.len())]);
    if act == Activation::Relu {
        return relu(dst, src);
    }
    if dst.len() < MIN_SIMD_LEN {
        return scalar::activate(act, dst, src);
    }
    arch().dispatch(Activate { act, dst, src })
}

/// `x = sigma(x + bias)`.
pub fn add_bias_activate(act: Activation, x: &mut [f32], bias: &[f32]) {
    check_lengths("add_bias_activate", x.len(), &[("bias", bias.len())]);
    if act == Activation::Relu {
        return add_bias_relu(x, bias);
    }
    if x.len() < MIN_SIMD_LEN {
        return scalar::add_bias_activate(act, x, bias);
    }
    arch().dispatch(AddBiasActivate { act, x, bias })
}

/// `acc = acc + scale * sigma(u)`.
pub fn add_scaled_activation(act: Activation, acc: &mut [f32], u: &[f32], scale: f32) {
    check_lengths("add_scaled_activation", acc.len(), &[("u", u.len())]);
    if acc.len() < MIN_SIMD_LEN {
        return scalar::add_scaled_activation(act, acc, u, scale);
    }
    arch().dispatch(AddScaledActivation { act, acc, u, scale })
}

/// `||v - sigma(u)||^2`.
pub fn dist2_activation(act: Activation, v: &[f32], u: &[f32]) -> f64 {
    check_lengths("dist2_activation", v.len(), &[("u", u.len())]);
    if v.len() < MIN_SIMD_LEN {
        return scalar::dist2_activation(act, v, u);
    }
    arch().dispatch(Dist2Activation { act, v, u })
}

/// Hidden pre-activation update; see [`super::ActivationKernels::hidden_u_step`].
#[allow(clippy::too_many_arguments)]
pub fn hidden_u_step(
    act: Activation,
    u: &mut [f32],
    p: &[f32],
    bias: &[f32],
    a: &[f32],
    rho: f32,
    alpha: f32,
    gamma: f32,
) -> USums {
    check_lengths("hidden_u_step", u.len(), &[("p", p.len()), ("bias", bias.len()), ("a", a.len())]);
    match act {
        Activation::Relu => hidden_u_step_relu(u, p, bias, a, rho, alpha, gamma),
        Activation::LeakyRelu { slope } => hidden_u_step_leaky_relu(u, p, bias, a, rho, alpha, gamma, slope as f32),
        _ if u.len() < MIN_SIMD_LEN => scalar::hidden_u_step(act, u, p, bias, a, rho, alpha, gamma),
        _ => arch().dispatch(HiddenUStepSmooth { act, u, p, bias, a, rho, alpha, gamma }),
    }
}
