//! SIMD versions of the elementwise kernels for `f32`, written once over pulp's [`Simd`] trait
//! and dispatched to the best instruction set detected at first use. Columns shorter than
//! [`MIN_SIMD_LEN`] run the scalar references instead.
//!
//! Every kernel follows one rhythm. It splits each slice into whole SIMD vectors and a tail,
//! applies the vector step to the whole vectors, then applies the same step once to the tail.
//! The tail is loaded with `partial_load_f32s`, which reads the lanes past the end as 0, and
//! written back with `partial_store_f32s`. Every step maps all-zero inputs to a zero output and
//! zero sum terms, so the padding lanes of the tail add nothing to the sums and need no mask.
//!
//! The outputs follow the operation order of the scalar references in [`super::scalar`], with
//! no fused multiply-add, so they match those references to within a few rounding errors. The
//! tests bound the difference per entry by `4 eps (1 + |x|)`.
//!
//! # Accuracy of the sums
//!
//! Sums of squares accumulate in `f32` lanes. Each lane adds about `d / lanes` squares, with a
//! fused multiply-add where the CPU has one. At the end of the column the lanes are added in
//! `f32` and the result is widened to `f64`. The relative error of a returned sum is therefore
//! at most about `(d / lanes + log2(lanes) + 1) * eps / 2` with `eps = f32::EPSILON`, for
//! example `6e-6` for `d = 1500` and 16 lanes. The scalar references square and add in `f64`,
//! with a relative error below `1e-12`. The trainer adds the per-column sums in `f64`, so this
//! error does not grow with the number of columns.

use std::sync::LazyLock;

use pulp::{Arch, Simd, WithSimd};

use super::{scalar, OutputVSums, USums};

/// Instruction set chosen once at first use, with its name for logs and run reports.
struct Dispatch {
    arch: Arch,
    level: &'static str,
}

static DISPATCH: LazyLock<Dispatch> = LazyLock::new(|| {
    let arch = Arch::new();
    let level = level_name(arch);
    log::debug!("elementwise f32 kernels use SIMD level {level}");
    Dispatch { arch, level }
});

/// Returns the name of the instruction set the `f32` elementwise kernels run on, for example
/// `"x86-v4 (AVX-512)"`, `"x86-v3 (AVX2+FMA)"` or `"scalar"`. Detects it on first use.
pub fn simd_level() -> &'static str {
    DISPATCH.level
}

/// Returns the instruction set detected once for this process.
#[inline]
pub(crate) fn arch() -> Arch {
    DISPATCH.arch
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn level_name(arch: Arch) -> &'static str {
    match arch {
        Arch::V4(_) => "x86-v4 (AVX-512)",
        Arch::V3(_) => "x86-v3 (AVX2+FMA)",
        Arch::Scalar => "scalar",
        // `pulp::Arch` is `#[non_exhaustive]`, so a newer pulp may add levels.
        _ => "x86 (level unknown to bcdnn)",
    }
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
fn level_name(arch: Arch) -> &'static str {
    // Runs once, from the initialiser of `DISPATCH`, so at most one string is leaked.
    Box::leak(format!("{arch:?}").into_boxed_str())
}

/// Minimum column length for the SIMD path. Shorter columns run the scalar references in
/// [`super::scalar`], because for them the dispatch call and the masked loads and stores of the
/// tail cost more than the vector arithmetic saves. At `d = 10`, the output layer of a 10-class
/// network, the SIMD versions of `add_bias` and `output_v_step` ran at half the speed of the
/// scalar references on an AMD EPYC with AVX-512 (the `10x8192` cases of the `elementwise`
/// benchmark).
pub const MIN_SIMD_LEN: usize = 16;

/// Panics unless every length in `lengths` equals `expected`, naming the slice in the message.
#[inline]
pub(crate) fn check_lengths(kernel: &str, expected: usize, lengths: &[(&str, usize)]) {
    for &(name, len) in lengths {
        assert_eq!(len, expected, "{kernel}: slice `{name}` has length {len}, expected {expected}");
    }
}

/// `dst = max(src, 0)`.
#[inline]
pub fn relu(dst: &mut [f32], src: &[f32]) {
    check_lengths("relu", dst.len(), &[("src", src.len())]);
    if dst.len() < MIN_SIMD_LEN {
        return scalar::relu(dst, src);
    }
    arch().dispatch(Relu { dst, src })
}

/// `x = max(x + bias, 0)`.
#[inline]
pub fn add_bias_relu(x: &mut [f32], bias: &[f32]) {
    check_lengths("add_bias_relu", x.len(), &[("bias", bias.len())]);
    if x.len() < MIN_SIMD_LEN {
        return scalar::add_bias_relu(x, bias);
    }
    arch().dispatch(AddBiasRelu { x, bias })
}

/// `x = x + bias`.
#[inline]
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    check_lengths("add_bias", x.len(), &[("bias", bias.len())]);
    if x.len() < MIN_SIMD_LEN {
        return scalar::add_bias(x, bias);
    }
    arch().dispatch(AddBias { x, bias })
}

/// `v = (w e_label + gamma u + alpha v) / (w + gamma + alpha)`; see
/// [`super::Elementwise::output_v_step`].
#[inline]
pub fn output_v_step(v: &mut [f32], u: &[f32], label: usize, weight: f32, gamma: f32, alpha: f32) -> OutputVSums {
    check_lengths("output_v_step", v.len(), &[("u", u.len())]);
    if v.len() < MIN_SIMD_LEN {
        return scalar::output_v_step(v, u, label, weight, gamma, alpha);
    }
    arch().dispatch(OutputVStep { v, u, label, coefficients: OutputVParameters { weight, gamma, alpha } })
}

/// `u = (gamma v + rho (p + bias)) / (gamma + rho)`; see [`super::Elementwise::output_u_step`].
#[inline]
pub fn output_u_step(u: &mut [f32], p: &[f32], bias: &[f32], v: &[f32], gamma: f32, rho: f32) -> USums {
    check_lengths("output_u_step", u.len(), &[("p", p.len()), ("bias", bias.len()), ("v", v.len())]);
    if u.len() < MIN_SIMD_LEN {
        return scalar::output_u_step(u, p, bias, v, gamma, rho);
    }
    arch().dispatch(OutputUStep { u, p, bias, v, gamma, rho })
}

/// Hidden ReLU pre-activation update; see [`super::Elementwise::hidden_u_step_relu`].
///
/// The proximal step divides by `1 + g` through a reciprocal computed once per call, where the
/// scalar reference divides per entry, and it takes the negative candidate as `B` itself, where
/// the scalar reference computes `g B / g`. Each differs from the reference by at most about
/// one rounding error. Where two candidates have objective values equal to within rounding, the
/// two versions may therefore pick different candidates, both minimisers up to rounding.
#[inline]
pub fn hidden_u_step_relu(
    u: &mut [f32],
    p: &[f32],
    bias: &[f32],
    a: &[f32],
    rho: f32,
    alpha: f32,
    gamma: f32,
) -> USums {
    check_lengths("hidden_u_step_relu", u.len(), &[("p", p.len()), ("bias", bias.len()), ("a", a.len())]);
    if u.len() < MIN_SIMD_LEN {
        return scalar::hidden_u_step_relu(u, p, bias, a, rho, alpha, gamma);
    }
    arch().dispatch(HiddenUStepRelu { u, p, bias, a, rho, alpha, gamma, slope: 0.0 })
}

/// Hidden leaky-ReLU pre-activation update with `0 <= slope < 1`; see
/// [`scalar::hidden_u_step_leaky_relu`]. It differs from the scalar reference by rounding, as
/// [`hidden_u_step_relu`] does.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn hidden_u_step_leaky_relu(
    u: &mut [f32],
    p: &[f32],
    bias: &[f32],
    a: &[f32],
    rho: f32,
    alpha: f32,
    gamma: f32,
    slope: f32,
) -> USums {
    check_lengths("hidden_u_step_leaky_relu", u.len(), &[("p", p.len()), ("bias", bias.len()), ("a", a.len())]);
    if u.len() < MIN_SIMD_LEN {
        return scalar::hidden_u_step_leaky_relu(u, p, bias, a, rho, alpha, gamma, slope);
    }
    arch().dispatch(HiddenUStepRelu { u, p, bias, a, rho, alpha, gamma, slope })
}

/// `dst = scale * max(u, 0)`.
#[inline]
pub fn scaled_relu(dst: &mut [f32], u: &[f32], scale: f32) {
    check_lengths("scaled_relu", dst.len(), &[("u", u.len())]);
    if dst.len() < MIN_SIMD_LEN {
        return scalar::scaled_relu(dst, u, scale);
    }
    arch().dispatch(ScaledRelu { dst, u, scale })
}

/// `acc = acc + scale * max(u, 0) + shift`.
#[inline]
pub fn add_scaled_relu_shift(acc: &mut [f32], u: &[f32], scale: f32, shift: &[f32]) {
    check_lengths("add_scaled_relu_shift", acc.len(), &[("u", u.len()), ("shift", shift.len())]);
    if acc.len() < MIN_SIMD_LEN {
        return scalar::add_scaled_relu_shift(acc, u, scale, shift);
    }
    arch().dispatch(AddScaledReluShift { acc, u, scale, shift })
}

/// `v = x`; returns `||x - v_old||^2`.
#[inline]
pub fn assign_with_step(v: &mut [f32], x: &[f32]) -> f64 {
    check_lengths("assign_with_step", v.len(), &[("x", x.len())]);
    if v.len() < MIN_SIMD_LEN {
        return scalar::assign_with_step(v, x);
    }
    arch().dispatch(AssignWithStep { v, x })
}

/// `v = x + beta y`; returns `||v_new - v_old||^2`.
#[inline]
pub fn combine_with_step(v: &mut [f32], x: &[f32], y: &[f32], beta: f32) -> f64 {
    check_lengths("combine_with_step", v.len(), &[("x", x.len()), ("y", y.len())]);
    if v.len() < MIN_SIMD_LEN {
        return scalar::combine_with_step(v, x, y, beta);
    }
    arch().dispatch(CombineWithStep { v, x, y, beta })
}

/// `acc + x^2`, fused where the instruction set has a fused multiply-add.
#[inline(always)]
pub(crate) fn add_square<S: Simd>(simd: S, acc: S::f32s, x: S::f32s) -> S::f32s {
    // pulp's `mul_add_e` is fused on x86-v3 and x86-v4 and a plain multiply and add on its
    // scalar level, where a fused multiply-add may be a slow library call.
    simd.mul_add_e_f32s(x, x, acc)
}

/// Widens the lane sum of `acc` to `f64`.
#[inline(always)]
pub(crate) fn reduce<S: Simd>(simd: S, acc: S::f32s) -> f64 {
    simd.reduce_sum_f32s(acc) as f64
}

// The vector steps below are `#[inline(always)]` functions, not closures. A closure is compiled
// as its own function without the target features that pulp enables for each level, so every
// SIMD operation inside it becomes an out-of-line call. With pulp 0.22.3 and rustc 1.95, a
// closure version of `hidden_u_step_relu` ran 1.7 times slower than the scalar reference.

pub(super) struct Relu<'a> {
    pub dst: &'a mut [f32],
    pub src: &'a [f32],
}

impl WithSimd for Relu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let zero = simd.splat_f32s(0.0);
        let (dst_head, dst_tail) = S::as_mut_simd_f32s(self.dst);
        let (src_head, src_tail) = S::as_simd_f32s(self.src);

        for (dst, &src) in dst_head.iter_mut().zip(src_head) {
            *dst = simd.max_f32s(src, zero);
        }

        let src = simd.partial_load_f32s(src_tail);
        simd.partial_store_f32s(dst_tail, simd.max_f32s(src, zero));
    }
}

pub(super) struct AddBiasRelu<'a> {
    pub x: &'a mut [f32],
    pub bias: &'a [f32],
}

impl WithSimd for AddBiasRelu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let zero = simd.splat_f32s(0.0);
        let (x_head, x_tail) = S::as_mut_simd_f32s(self.x);
        let (bias_head, bias_tail) = S::as_simd_f32s(self.bias);

        for (x, &bias) in x_head.iter_mut().zip(bias_head) {
            *x = simd.max_f32s(simd.add_f32s(*x, bias), zero);
        }

        let x = simd.partial_load_f32s(x_tail);
        let bias = simd.partial_load_f32s(bias_tail);
        simd.partial_store_f32s(x_tail, simd.max_f32s(simd.add_f32s(x, bias), zero));
    }
}

pub(super) struct AddBias<'a> {
    pub x: &'a mut [f32],
    pub bias: &'a [f32],
}

impl WithSimd for AddBias<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (x_head, x_tail) = S::as_mut_simd_f32s(self.x);
        let (bias_head, bias_tail) = S::as_simd_f32s(self.bias);

        for (x, &bias) in x_head.iter_mut().zip(bias_head) {
            *x = simd.add_f32s(*x, bias);
        }

        let x = simd.partial_load_f32s(x_tail);
        let bias = simd.partial_load_f32s(bias_tail);
        simd.partial_store_f32s(x_tail, simd.add_f32s(x, bias));
    }
}

/// Loss weight `w`, `gamma` and `alpha` of the squared-loss output update.
#[derive(Clone, Copy)]
pub(super) struct OutputVParameters {
    pub weight: f32,
    pub gamma: f32,
    pub alpha: f32,
}

impl OutputVParameters {
    #[inline(always)]
    fn splat<S: Simd>(self, simd: S) -> OutputVCoefficients<S> {
        OutputVCoefficients {
            weight: simd.splat_f32s(self.weight),
            gamma: simd.splat_f32s(self.gamma),
            alpha: simd.splat_f32s(self.alpha),
            scale: simd.splat_f32s(1.0 / (self.weight + self.gamma + self.alpha)),
        }
    }
}

pub(super) struct OutputVStep<'a> {
    pub v: &'a mut [f32],
    pub u: &'a [f32],
    pub label: usize,
    pub coefficients: OutputVParameters,
}

/// Upper bound on `Simd::F32_LANES` over pulp's levels (16 for AVX-512), used to size the
/// stack buffer the one-hot vector is loaded from.
const MAX_F32_LANES: usize = 64;

/// Coefficients of `v = (w y + gamma u + alpha v) * scale`, splatted once per call.
struct OutputVCoefficients<S: Simd> {
    weight: S::f32s,
    gamma: S::f32s,
    alpha: S::f32s,
    scale: S::f32s,
}

/// Running sums of the terms of [`OutputVSums`] per lane.
struct OutputVLanes<S: Simd> {
    residual_old: S::f32s,
    residual_new: S::f32s,
    dist_old: S::f32s,
    dist_new: S::f32s,
    step: S::f32s,
}

impl<S: Simd> OutputVLanes<S> {
    #[inline(always)]
    fn new(simd: S) -> Self {
        let zero = simd.splat_f32s(0.0);
        Self { residual_old: zero, residual_new: zero, dist_old: zero, dist_new: zero, step: zero }
    }

    #[inline(always)]
    fn reduce(self, simd: S) -> OutputVSums {
        OutputVSums {
            residual_old: reduce(simd, self.residual_old),
            residual_new: reduce(simd, self.residual_new),
            dist_old: reduce(simd, self.dist_old),
            dist_new: reduce(simd, self.dist_new),
            step: reduce(simd, self.step),
        }
    }
}

impl<S: Simd> OutputVCoefficients<S> {
    /// Returns `v_new` for one vector of entries and adds its terms to `sums`.
    #[inline(always)]
    fn update(&self, simd: S, old: S::f32s, u: S::f32s, y: S::f32s, sums: &mut OutputVLanes<S>) -> S::f32s {
        // v = (w y + gamma u + alpha v) * scale
        let new = simd.add_f32s(
            simd.add_f32s(simd.mul_f32s(self.weight, y), simd.mul_f32s(self.gamma, u)),
            simd.mul_f32s(self.alpha, old),
        );
        let new = simd.mul_f32s(new, self.scale);
        sums.residual_old = add_square(simd, sums.residual_old, simd.sub_f32s(old, y));
        sums.residual_new = add_square(simd, sums.residual_new, simd.sub_f32s(new, y));
        sums.dist_old = add_square(simd, sums.dist_old, simd.sub_f32s(old, u));
        sums.dist_new = add_square(simd, sums.dist_new, simd.sub_f32s(new, u));
        sums.step = add_square(simd, sums.step, simd.sub_f32s(new, old));
        new
    }
}

impl WithSimd for OutputVStep<'_> {
    type Output = OutputVSums;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> OutputVSums {
        let lanes = S::F32_LANES;
        debug_assert!(lanes <= MAX_F32_LANES, "{lanes} f32 lanes exceed MAX_F32_LANES = {MAX_F32_LANES}");
        let zero = simd.splat_f32s(0.0);
        let coefficients = self.coefficients.splat(simd);

        // The target e_label is zero except in lane `label % lanes` of vector `label / lanes`.
        // A label past the end selects no vector, so the padding lanes of the tail stay zero.
        let label_vector = if self.label < self.v.len() { self.label / lanes } else { usize::MAX };
        let mut one_hot = [0.0f32; MAX_F32_LANES];
        one_hot[self.label % lanes] = 1.0;
        let y_label = simd.partial_load_f32s(&one_hot[..lanes]);

        let mut sums = OutputVLanes::new(simd);
        let (v_head, v_tail) = S::as_mut_simd_f32s(self.v);
        let (u_head, u_tail) = S::as_simd_f32s(self.u);
        let tail_index = v_head.len();

        for (i, (v, &u)) in v_head.iter_mut().zip(u_head).enumerate() {
            let y = if i == label_vector { y_label } else { zero };
            *v = coefficients.update(simd, *v, u, y, &mut sums);
        }

        let y = if tail_index == label_vector { y_label } else { zero };
        let old = simd.partial_load_f32s(v_tail);
        let new = coefficients.update(simd, old, simd.partial_load_f32s(u_tail), y, &mut sums);
        simd.partial_store_f32s(v_tail, new);

        sums.reduce(simd)
    }
}

/// Running `||U_old - P||^2`, `||U_new - P||^2`, `||target - sigma(U_old)||^2`,
/// `||target - sigma(U_new)||^2` and `||U_new - U_old||^2` per lane, the terms of [`USums`].
pub(crate) struct ULanes<S: Simd> {
    pub coupling_old: S::f32s,
    pub coupling_new: S::f32s,
    pub link_old: S::f32s,
    pub link_new: S::f32s,
    pub step: S::f32s,
}

impl<S: Simd> ULanes<S> {
    #[inline(always)]
    pub fn new(simd: S) -> Self {
        let zero = simd.splat_f32s(0.0);
        Self { coupling_old: zero, coupling_new: zero, link_old: zero, link_new: zero, step: zero }
    }

    #[inline(always)]
    pub fn reduce(self, simd: S) -> USums {
        USums {
            coupling_old: reduce(simd, self.coupling_old),
            coupling_new: reduce(simd, self.coupling_new),
            link_old: reduce(simd, self.link_old),
            link_new: reduce(simd, self.link_new),
            step: reduce(simd, self.step),
        }
    }
}

pub(super) struct OutputUStep<'a> {
    pub u: &'a mut [f32],
    pub p: &'a [f32],
    pub bias: &'a [f32],
    pub v: &'a [f32],
    pub gamma: f32,
    pub rho: f32,
}

/// Coefficients of `u = (gamma v + rho P) * scale`, splatted once per call.
struct OutputUCoefficients<S: Simd> {
    gamma: S::f32s,
    rho: S::f32s,
    scale: S::f32s,
}

impl<S: Simd> OutputUCoefficients<S> {
    /// Returns `u_new` for one vector of entries and adds its terms to `sums`.
    #[inline(always)]
    fn update(&self, simd: S, old: S::f32s, p: S::f32s, bias: S::f32s, v: S::f32s, sums: &mut ULanes<S>) -> S::f32s {
        // P = p + bias, u = (gamma v + rho P) * scale
        let product = simd.add_f32s(p, bias);
        let new = simd.add_f32s(simd.mul_f32s(self.gamma, v), simd.mul_f32s(self.rho, product));
        let new = simd.mul_f32s(new, self.scale);
        sums.coupling_old = add_square(simd, sums.coupling_old, simd.sub_f32s(old, product));
        sums.coupling_new = add_square(simd, sums.coupling_new, simd.sub_f32s(new, product));
        sums.link_old = add_square(simd, sums.link_old, simd.sub_f32s(v, old));
        sums.link_new = add_square(simd, sums.link_new, simd.sub_f32s(v, new));
        sums.step = add_square(simd, sums.step, simd.sub_f32s(new, old));
        new
    }
}

impl WithSimd for OutputUStep<'_> {
    type Output = USums;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> USums {
        let coefficients = OutputUCoefficients::<S> {
            gamma: simd.splat_f32s(self.gamma),
            rho: simd.splat_f32s(self.rho),
            scale: simd.splat_f32s(1.0 / (self.gamma + self.rho)),
        };
        let mut sums = ULanes::new(simd);
        let (u_head, u_tail) = S::as_mut_simd_f32s(self.u);
        let (p_head, p_tail) = S::as_simd_f32s(self.p);
        let (bias_head, bias_tail) = S::as_simd_f32s(self.bias);
        let (v_head, v_tail) = S::as_simd_f32s(self.v);

        for (((u, &p), &bias), &v) in u_head.iter_mut().zip(p_head).zip(bias_head).zip(v_head) {
            *u = coefficients.update(simd, *u, p, bias, v, &mut sums);
        }

        let new = coefficients.update(
            simd,
            simd.partial_load_f32s(u_tail),
            simd.partial_load_f32s(p_tail),
            simd.partial_load_f32s(bias_tail),
            simd.partial_load_f32s(v_tail),
            &mut sums,
        );
        simd.partial_store_f32s(u_tail, new);

        sums.reduce(simd)
    }
}

/// Hidden ReLU (`slope = 0`) or leaky-ReLU pre-activation update.
pub(crate) struct HiddenUStepRelu<'a> {
    pub u: &'a mut [f32],
    pub p: &'a [f32],
    pub bias: &'a [f32],
    pub a: &'a [f32],
    pub rho: f32,
    pub alpha: f32,
    pub gamma: f32,
    pub slope: f32,
}

/// Coefficients of the hidden ReLU and leaky-ReLU update, splatted once per call: the centre
/// `B = (rho P + alpha u_old) * inv` and the proximal step
/// `argmin_u 1/2 (sigma(u) - a)^2 + g/2 (u - B)^2`. `LEAKY = false` is the ReLU, which skips
/// the terms that vanish for `slope = 0`.
struct HiddenUCoefficients<S: Simd, const LEAKY: bool> {
    zero: S::f32s,
    half: S::f32s,
    rho: S::f32s,
    alpha: S::f32s,
    inv: S::f32s,
    g: S::f32s,
    half_g: S::f32s,
    inv_one_plus_g: S::f32s,
    slope: S::f32s,
    inv_slope_squared_plus_g: S::f32s,
}

impl<S: Simd, const LEAKY: bool> HiddenUCoefficients<S, LEAKY> {
    #[inline(always)]
    fn new(simd: S, rho: f32, alpha: f32, gamma: f32, slope: f32) -> Self {
        let g = (rho + alpha) / gamma;
        Self {
            slope: simd.splat_f32s(slope),
            inv_slope_squared_plus_g: simd.splat_f32s(1.0 / (slope * slope + g)),
            zero: simd.splat_f32s(0.0),
            half: simd.splat_f32s(0.5),
            rho: simd.splat_f32s(rho),
            alpha: simd.splat_f32s(alpha),
            inv: simd.splat_f32s(1.0 / (rho + alpha)),
            g: simd.splat_f32s(g),
            half_g: simd.splat_f32s(0.5 * g),
            inv_one_plus_g: simd.splat_f32s(1.0 / (1.0 + g)),
        }
    }

    /// Returns `u_new` for one vector of entries and adds its terms to `sums`.
    #[inline(always)]
    fn update(&self, simd: S, old: S::f32s, p: S::f32s, bias: S::f32s, a: S::f32s, sums: &mut ULanes<S>) -> S::f32s {
        // P = p + bias, B = (rho P + alpha u_old) * inv, u = prox(a, B)
        let product = simd.add_f32s(p, bias);
        let center = simd.add_f32s(simd.mul_f32s(self.rho, product), simd.mul_f32s(self.alpha, old));
        let center = simd.mul_f32s(center, self.inv);
        let new = self.minimiser(simd, a, center);

        sums.coupling_old = add_square(simd, sums.coupling_old, simd.sub_f32s(old, product));
        sums.coupling_new = add_square(simd, sums.coupling_new, simd.sub_f32s(new, product));
        sums.link_old = add_square(simd, sums.link_old, simd.sub_f32s(a, self.activation(simd, old)));
        sums.link_new = add_square(simd, sums.link_new, simd.sub_f32s(a, self.activation(simd, new)));
        sums.step = add_square(simd, sums.step, simd.sub_f32s(new, old));
        new
    }

    /// `max(x, 0) + slope min(x, 0)`, without the second term for the ReLU.
    #[inline(always)]
    fn activation(&self, simd: S, x: S::f32s) -> S::f32s {
        let positive = simd.max_f32s(x, self.zero);
        if LEAKY {
            simd.add_f32s(positive, simd.mul_f32s(self.slope, simd.min_f32s(x, self.zero)))
        } else {
            positive
        }
    }

    /// Returns the minimiser of `1/2 (sigma(u) - a)^2 + g/2 (u - B)^2` for each lane, without
    /// branches.
    ///
    /// The candidates are the kink `0`, the stationary point `u+ = (a + g B) / (1 + g)` of the
    /// positive piece if `u+ >= 0`, and that of the negative piece,
    /// `u- = (slope a + g B) / (slope^2 + g)` (`B` for the ReLU), if `u- < 0`. As in
    /// the scalar reference, a later candidate replaces the current one only if its objective
    /// value is strictly lower, so ties keep `0`, then `u+`.
    #[inline(always)]
    fn minimiser(&self, simd: S, a: S::f32s, center: S::f32s) -> S::f32s {
        let zero = self.zero;

        // f(0) = 1/2 a^2 + g/2 B^2, in the scalar reference's order of operations.
        let minus_a = simd.sub_f32s(zero, a);
        let link_at_kink = simd.mul_f32s(simd.mul_f32s(self.half, minus_a), minus_a);
        let minus_center = simd.sub_f32s(zero, center);
        let coupling_at_kink = simd.mul_f32s(simd.mul_f32s(self.half_g, minus_center), minus_center);
        let value_kink = simd.add_f32s(link_at_kink, coupling_at_kink);

        // u+ = (a + g B) / (1 + g) and f(u+) = 1/2 (u+ - a)^2 + g/2 (u+ - B)^2.
        let positive = simd.mul_f32s(simd.add_f32s(a, simd.mul_f32s(self.g, center)), self.inv_one_plus_g);
        let positive_minus_a = simd.sub_f32s(positive, a);
        let positive_minus_center = simd.sub_f32s(positive, center);
        let value_positive = simd.add_f32s(
            simd.mul_f32s(simd.mul_f32s(self.half, positive_minus_a), positive_minus_a),
            simd.mul_f32s(simd.mul_f32s(self.half_g, positive_minus_center), positive_minus_center),
        );

        // ReLU: u- = B and f(u-) = 1/2 a^2, because relu(B) = 0 and u- - B = 0. Leaky ReLU:
        // u- = (slope a + g B) / (slope^2 + g) and f(u-) = 1/2 (slope u- - a)^2 + g/2 (u- - B)^2.
        let (negative, value_negative) = if LEAKY {
            let negative = simd.mul_f32s(
                simd.add_f32s(simd.mul_f32s(self.slope, a), simd.mul_f32s(self.g, center)),
                self.inv_slope_squared_plus_g,
            );
            let negative_minus_a = simd.sub_f32s(simd.mul_f32s(self.slope, negative), a);
            let negative_minus_center = simd.sub_f32s(negative, center);
            let value = simd.add_f32s(
                simd.mul_f32s(simd.mul_f32s(self.half, negative_minus_a), negative_minus_a),
                simd.mul_f32s(simd.mul_f32s(self.half_g, negative_minus_center), negative_minus_center),
            );
            (negative, value)
        } else {
            (center, link_at_kink)
        };

        // Keep 0 unless u+ is feasible and strictly better.
        let take_positive = simd
            .and_m32s(simd.greater_than_or_equal_f32s(positive, zero), simd.less_than_f32s(value_positive, value_kink));
        let best = simd.select_f32s(take_positive, positive, zero);
        let best_value = simd.select_f32s(take_positive, value_positive, value_kink);

        // Then replace it by u- if u- is feasible and strictly better.
        let take_negative =
            simd.and_m32s(simd.less_than_f32s(negative, zero), simd.less_than_f32s(value_negative, best_value));
        simd.select_f32s(take_negative, negative, best)
    }
}

impl WithSimd for HiddenUStepRelu<'_> {
    type Output = USums;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> USums {
        if self.slope == 0.0 {
            self.run::<S, false>(simd)
        } else {
            self.run::<S, true>(simd)
        }
    }
}

impl HiddenUStepRelu<'_> {
    #[inline(always)]
    fn run<S: Simd, const LEAKY: bool>(self, simd: S) -> USums {
        let coefficients = HiddenUCoefficients::<S, LEAKY>::new(simd, self.rho, self.alpha, self.gamma, self.slope);
        let mut sums = ULanes::new(simd);
        let (u_head, u_tail) = S::as_mut_simd_f32s(self.u);
        let (p_head, p_tail) = S::as_simd_f32s(self.p);
        let (bias_head, bias_tail) = S::as_simd_f32s(self.bias);
        let (a_head, a_tail) = S::as_simd_f32s(self.a);

        for (((u, &p), &bias), &a) in u_head.iter_mut().zip(p_head).zip(bias_head).zip(a_head) {
            *u = coefficients.update(simd, *u, p, bias, a, &mut sums);
        }

        let new = coefficients.update(
            simd,
            simd.partial_load_f32s(u_tail),
            simd.partial_load_f32s(p_tail),
            simd.partial_load_f32s(bias_tail),
            simd.partial_load_f32s(a_tail),
            &mut sums,
        );
        simd.partial_store_f32s(u_tail, new);

        sums.reduce(simd)
    }
}

pub(super) struct ScaledRelu<'a> {
    pub dst: &'a mut [f32],
    pub u: &'a [f32],
    pub scale: f32,
}

impl WithSimd for ScaledRelu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let zero = simd.splat_f32s(0.0);
        let scale = simd.splat_f32s(self.scale);
        let (dst_head, dst_tail) = S::as_mut_simd_f32s(self.dst);
        let (u_head, u_tail) = S::as_simd_f32s(self.u);

        for (dst, &u) in dst_head.iter_mut().zip(u_head) {
            *dst = simd.mul_f32s(scale, simd.max_f32s(u, zero));
        }

        let u = simd.partial_load_f32s(u_tail);
        simd.partial_store_f32s(dst_tail, simd.mul_f32s(scale, simd.max_f32s(u, zero)));
    }
}

pub(super) struct AddScaledReluShift<'a> {
    pub acc: &'a mut [f32],
    pub u: &'a [f32],
    pub scale: f32,
    pub shift: &'a [f32],
}

/// `acc + scale * max(u, 0) + shift`, added left to right as in the scalar reference.
#[inline(always)]
fn add_scaled_relu_shift_step<S: Simd>(simd: S, scale: S::f32s, acc: S::f32s, u: S::f32s, shift: S::f32s) -> S::f32s {
    let scaled = simd.mul_f32s(scale, simd.max_f32s(u, simd.splat_f32s(0.0)));
    simd.add_f32s(simd.add_f32s(acc, scaled), shift)
}

impl WithSimd for AddScaledReluShift<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let scale = simd.splat_f32s(self.scale);
        let (acc_head, acc_tail) = S::as_mut_simd_f32s(self.acc);
        let (u_head, u_tail) = S::as_simd_f32s(self.u);
        let (shift_head, shift_tail) = S::as_simd_f32s(self.shift);

        for ((acc, &u), &shift) in acc_head.iter_mut().zip(u_head).zip(shift_head) {
            *acc = add_scaled_relu_shift_step(simd, scale, *acc, u, shift);
        }

        let acc = simd.partial_load_f32s(acc_tail);
        let u = simd.partial_load_f32s(u_tail);
        let shift = simd.partial_load_f32s(shift_tail);
        simd.partial_store_f32s(acc_tail, add_scaled_relu_shift_step(simd, scale, acc, u, shift));
    }
}

pub(super) struct AssignWithStep<'a> {
    pub v: &'a mut [f32],
    pub x: &'a [f32],
}

impl WithSimd for AssignWithStep<'_> {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        let mut step = simd.splat_f32s(0.0);
        let (v_head, v_tail) = S::as_mut_simd_f32s(self.v);
        let (x_head, x_tail) = S::as_simd_f32s(self.x);

        for (v, &x) in v_head.iter_mut().zip(x_head) {
            step = add_square(simd, step, simd.sub_f32s(x, *v));
            *v = x;
        }

        let x = simd.partial_load_f32s(x_tail);
        step = add_square(simd, step, simd.sub_f32s(x, simd.partial_load_f32s(v_tail)));
        simd.partial_store_f32s(v_tail, x);

        reduce(simd, step)
    }
}

pub(super) struct CombineWithStep<'a> {
    pub v: &'a mut [f32],
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub beta: f32,
}

impl WithSimd for CombineWithStep<'_> {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        let beta = simd.splat_f32s(self.beta);
        let mut step = simd.splat_f32s(0.0);
        let (v_head, v_tail) = S::as_mut_simd_f32s(self.v);
        let (x_head, x_tail) = S::as_simd_f32s(self.x);
        let (y_head, y_tail) = S::as_simd_f32s(self.y);

        for ((v, &x), &y) in v_head.iter_mut().zip(x_head).zip(y_head) {
            let new = simd.add_f32s(x, simd.mul_f32s(beta, y));
            step = add_square(simd, step, simd.sub_f32s(new, *v));
            *v = new;
        }

        let old = simd.partial_load_f32s(v_tail);
        let new = simd.add_f32s(simd.partial_load_f32s(x_tail), simd.mul_f32s(beta, simd.partial_load_f32s(y_tail)));
        step = add_square(simd, step, simd.sub_f32s(new, old));
        simd.partial_store_f32s(v_tail, new);

        reduce(simd, step)
    }
}

/// Columns per group in the short-column tile kernels: a group of `SHORT_GROUP` columns of
/// `rows < MIN_SIMD_LEN` entries is processed as one flat run of vectors.
const SHORT_GROUP: usize = MIN_SIMD_LEN;

/// Maximum length of the flat run of one group: `SHORT_GROUP` columns of at most `MIN_SIMD_LEN - 1` entries.
const SHORT_RUN: usize = SHORT_GROUP * (MIN_SIMD_LEN - 1);

/// Output activation update of a whole tile of short columns (`rows < MIN_SIMD_LEN`, the
/// output layer); see [`output_v_step_tile`].
pub(super) struct OutputVStepShortTile<'a> {
    pub v: &'a mut [f32],
    pub u: &'a [f32],
    pub labels: &'a [u8],
    pub rows: usize,
    pub coefficients: OutputVParameters,
}

impl WithSimd for OutputVStepShortTile<'_> {
    type Output = OutputVSums;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> OutputVSums {
        let coefficients = self.coefficients.splat(simd);
        let rows = self.rows;
        let mut total = OutputVSums::default();
        let mut one_hot = [0.0f32; SHORT_RUN];

        // Each group of columns is one flat run with its one-hot targets written into a
        // buffer, so a vector spans several columns and no call handles only 10 entries.
        for ((v, u), labels) in self
            .v
            .chunks_mut(SHORT_GROUP * rows)
            .zip(self.u.chunks(SHORT_GROUP * rows))
            .zip(self.labels.chunks(SHORT_GROUP))
        {
            let y = &mut one_hot[..v.len()];
            y.fill(0.0);
            for (column, &label) in labels.iter().enumerate() {
                if (label as usize) < rows {
                    y[column * rows + label as usize] = 1.0;
                }
            }
            let mut sums = OutputVLanes::new(simd);
            let (v_head, v_tail) = S::as_mut_simd_f32s(v);
            let (u_head, u_tail) = S::as_simd_f32s(u);
            let (y_head, y_tail) = S::as_simd_f32s(y);
            for ((v, &u), &y) in v_head.iter_mut().zip(u_head).zip(y_head) {
                *v = coefficients.update(simd, *v, u, y, &mut sums);
            }
            let old = simd.partial_load_f32s(v_tail);
            let new = coefficients.update(
                simd,
                old,
                simd.partial_load_f32s(u_tail),
                simd.partial_load_f32s(y_tail),
                &mut sums,
            );
            simd.partial_store_f32s(v_tail, new);
            total.add(sums.reduce(simd));
        }
        total
    }
}

/// Output pre-activation update of a whole tile of short columns; see [`output_u_step_tile`].
pub(super) struct OutputUStepShortTile<'a> {
    pub u: &'a mut [f32],
    pub p: &'a [f32],
    pub bias: &'a [f32],
    pub v: &'a [f32],
    pub gamma: f32,
    pub rho: f32,
}

impl WithSimd for OutputUStepShortTile<'_> {
    type Output = USums;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> USums {
        let coefficients = OutputUCoefficients::<S> {
            gamma: simd.splat_f32s(self.gamma),
            rho: simd.splat_f32s(self.rho),
            scale: simd.splat_f32s(1.0 / (self.gamma + self.rho)),
        };
        let rows = self.bias.len();
        let run = SHORT_GROUP * rows;

        // The bias repeated once per column of a group; every group starts at a column start.
        let mut pattern = [0.0f32; SHORT_RUN];
        for column in pattern[..run].chunks_exact_mut(rows) {
            column.copy_from_slice(self.bias);
        }

        let mut total = USums::default();
        for (((u, p), v), bias) in self
            .u
            .chunks_mut(run)
            .zip(self.p.chunks(run))
            .zip(self.v.chunks(run))
            .zip(std::iter::repeat(&pattern[..run]))
        {
            let bias = &bias[..u.len()];
            let mut sums = ULanes::<S>::new(simd);
            let (u_head, u_tail) = S::as_mut_simd_f32s(u);
            let (p_head, p_tail) = S::as_simd_f32s(p);
            let (b_head, b_tail) = S::as_simd_f32s(bias);
            let (v_head, v_tail) = S::as_simd_f32s(v);
            for (((u, &p), &b), &v) in u_head.iter_mut().zip(p_head).zip(b_head).zip(v_head) {
                *u = coefficients.update(simd, *u, p, b, v, &mut sums);
            }
            let old = simd.partial_load_f32s(u_tail);
            let new = coefficients.update(
                simd,
                old,
                simd.partial_load_f32s(p_tail),
                simd.partial_load_f32s(b_tail),
                simd.partial_load_f32s(v_tail),
                &mut sums,
            );
            simd.partial_store_f32s(u_tail, new);
            total.add(sums.reduce(simd));
        }
        total
    }
}

/// [`output_v_step`] on every column of a tile: `v` and `u` hold `labels.len()` columns of
/// `rows` entries. Columns shorter than one SIMD register are processed as flat runs of
/// several columns, which avoids a call per column of the 10-row output layer.
pub fn output_v_step_tile(
    v: &mut [f32],
    u: &[f32],
    labels: &[u8],
    rows: usize,
    weight: f32,
    gamma: f32,
    alpha: f32,
) -> OutputVSums {
    check_lengths("output_v_step_tile", v.len(), &[("u", u.len()), ("labels x rows", labels.len() * rows)]);
    if rows >= MIN_SIMD_LEN || rows == 0 {
        let mut total = OutputVSums::default();
        for ((v, u), &label) in v.chunks_exact_mut(rows.max(1)).zip(u.chunks_exact(rows.max(1))).zip(labels) {
            total.add(output_v_step(v, u, label as usize, weight, gamma, alpha));
        }
        return total;
    }
    let coefficients = OutputVParameters { weight, gamma, alpha };
    arch().dispatch(OutputVStepShortTile { v, u, labels, rows, coefficients })
}

/// [`output_u_step`] on every column of a tile: `u`, `p` and `v` hold columns of
/// `bias.len()` entries. Short columns are processed as flat runs, as in
/// [`output_v_step_tile`].
pub fn output_u_step_tile(u: &mut [f32], p: &[f32], bias: &[f32], v: &[f32], gamma: f32, rho: f32) -> USums {
    let rows = bias.len();
    check_lengths("output_u_step_tile", u.len(), &[("p", p.len()), ("v", v.len())]);
    if rows >= MIN_SIMD_LEN || rows == 0 {
        let mut total = USums::default();
        for ((u, p), v) in
            u.chunks_exact_mut(rows.max(1)).zip(p.chunks_exact(rows.max(1))).zip(v.chunks_exact(rows.max(1)))
        {
            total.add(output_u_step(u, p, bias, v, gamma, rho));
        }
        return total;
    }
    assert_eq!(u.len() % rows, 0, "output_u_step_tile: {} entries are not whole columns of {rows}", u.len());
    arch().dispatch(OutputUStepShortTile { u, p, bias, v, gamma, rho })
}

/// Column pass before the activation solve; see [`super::Elementwise::activation_target`].
pub fn activation_target(q: &mut [f32], v: &[f32], q1: &[f32], q2: &[f32], gamma: f32, gamma_next: f32) -> [f64; 2] {
    check_lengths("activation_target", q.len(), &[("v", v.len()), ("q1", q1.len()), ("q2", q2.len())]);
    if q.len() < MIN_SIMD_LEN {
        return scalar::activation_target(q, v, q1, q2, gamma, gamma_next);
    }
    arch().dispatch(ActivationTarget { q, v, q1, q2, gamma, gamma_next })
}

/// Column pass after the activation solve; see [`super::Elementwise::activation_finish`].
pub fn activation_finish(v: &mut [f32], out: &[f32], q1: &[f32], q2: &[f32], q: &[f32], r: &[f32]) -> [f64; 6] {
    let lengths = [("out", out.len()), ("q1", q1.len()), ("q2", q2.len()), ("q", q.len()), ("r", r.len())];
    check_lengths("activation_finish", v.len(), &lengths);
    if v.len() < MIN_SIMD_LEN {
        return scalar::activation_finish(v, out, q1, q2, q, r);
    }
    arch().dispatch(ActivationFinish { v, out, q1, q2, q, r })
}

pub(super) struct ActivationTarget<'a> {
    pub q: &'a mut [f32],
    pub v: &'a [f32],
    pub q1: &'a [f32],
    pub q2: &'a [f32],
    pub gamma: f32,
    pub gamma_next: f32,
}

#[inline(always)]
fn activation_target_step<S: Simd>(
    simd: S,
    (gamma, gamma_next): (S::f32s, S::f32s),
    (v, q1, q2): (S::f32s, S::f32s, S::f32s),
    sums: &mut [S::f32s; 2],
) -> S::f32s {
    sums[0] = add_square(simd, sums[0], simd.sub_f32s(v, q1));
    sums[1] = add_square(simd, sums[1], simd.sub_f32s(q2, v));
    simd.mul_add_e_f32s(gamma, q1, simd.mul_f32s(gamma_next, q2))
}

impl WithSimd for ActivationTarget<'_> {
    type Output = [f64; 2];

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> [f64; 2] {
        let weights = (simd.splat_f32s(self.gamma), simd.splat_f32s(self.gamma_next));
        let mut sums = [simd.splat_f32s(0.0); 2];
        let (q_head, q_tail) = S::as_mut_simd_f32s(self.q);
        let (v_head, v_tail) = S::as_simd_f32s(self.v);
        let (q1_head, q1_tail) = S::as_simd_f32s(self.q1);
        let (q2_head, q2_tail) = S::as_simd_f32s(self.q2);
        for (((q, &v), &q1), &q2) in q_head.iter_mut().zip(v_head).zip(q1_head).zip(q2_head) {
            *q = activation_target_step(simd, weights, (v, q1, q2), &mut sums);
        }
        let tail = (simd.partial_load_f32s(v_tail), simd.partial_load_f32s(q1_tail), simd.partial_load_f32s(q2_tail));
        let q = activation_target_step(simd, weights, tail, &mut sums);
        simd.partial_store_f32s(q_tail, q);
        [reduce(simd, sums[0]), reduce(simd, sums[1])]
    }
}

pub(super) struct ActivationFinish<'a> {
    pub v: &'a mut [f32],
    pub out: &'a [f32],
    pub q1: &'a [f32],
    pub q2: &'a [f32],
    pub q: &'a [f32],
    pub r: &'a [f32],
}

/// The five inputs of one vector of [`ActivationFinish`]: `out`, `q1`, `q2`, `q`, `r`.
type FinishInputs<S> = (<S as Simd>::f32s, <S as Simd>::f32s, <S as Simd>::f32s, <S as Simd>::f32s, <S as Simd>::f32s);

#[inline(always)]
fn activation_finish_step<S: Simd>(
    simd: S,
    old: S::f32s,
    (out, q1, q2, q, r): FinishInputs<S>,
    sums: &mut [S::f32s; 6],
) {
    sums[0] = add_square(simd, sums[0], simd.sub_f32s(out, old));
    sums[1] = add_square(simd, sums[1], simd.sub_f32s(out, q1));
    sums[2] = add_square(simd, sums[2], simd.sub_f32s(q2, out));
    sums[3] = simd.mul_add_e_f32s(q, out, sums[3]);
    sums[4] = simd.mul_add_e_f32s(r, out, sums[4]);
    sums[5] = add_square(simd, sums[5], out);
}

impl WithSimd for ActivationFinish<'_> {
    type Output = [f64; 6];

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> [f64; 6] {
        let mut sums = [simd.splat_f32s(0.0); 6];
        let (v_head, v_tail) = S::as_mut_simd_f32s(self.v);
        let (out_head, out_tail) = S::as_simd_f32s(self.out);
        let (q1_head, q1_tail) = S::as_simd_f32s(self.q1);
        let (q2_head, q2_tail) = S::as_simd_f32s(self.q2);
        let (q_head, q_tail) = S::as_simd_f32s(self.q);
        let (r_head, r_tail) = S::as_simd_f32s(self.r);
        let inputs = out_head.iter().zip(q1_head).zip(q2_head).zip(q_head).zip(r_head);
        for (v, ((((&out, &q1), &q2), &q), &r)) in v_head.iter_mut().zip(inputs) {
            activation_finish_step(simd, *v, (out, q1, q2, q, r), &mut sums);
            *v = out;
        }
        let out = simd.partial_load_f32s(out_tail);
        let tail = (
            out,
            simd.partial_load_f32s(q1_tail),
            simd.partial_load_f32s(q2_tail),
            simd.partial_load_f32s(q_tail),
            simd.partial_load_f32s(r_tail),
        );
        activation_finish_step(simd, simd.partial_load_f32s(v_tail), tail, &mut sums);
        simd.partial_store_f32s(v_tail, out);
        sums.map(|s| reduce(simd, s))
    }
}
