//! Tests of the SIMD kernels against the scalar references on every SIMD level this CPU has,
//! and of the scalar leaky-ReLU proximal step against brute-force minimisation.
//!
//! Every SIMD kernel runs on each length from 0 to `MAX_LEN` at start offsets 0 to
//! `MAX_OFFSET` inside a larger buffer, which covers whole vectors, tails and unaligned starts.
//! The inputs are seeded random values, so a failure can be replayed.

use pulp::Arch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::simd::{
    ActivationFinish, ActivationTarget, AddBias, AddBiasRelu, AddScaledReluShift, AssignWithStep, CombineWithStep,
    HiddenUStepRelu, OutputUStep, OutputVParameters, OutputVStep, Relu, ScaledRelu,
};
use super::{scalar, simd, USums};

const EPS: f32 = f32::EPSILON;

/// Maximum slice length tested: three AVX-512 vectors of 16 lanes plus a tail of 5.
const MAX_LEN: usize = 3 * 16 + 5;

/// Maximum start offset of a slice inside its buffer, in entries.
const MAX_OFFSET: usize = 3;

/// Entries after each slice, checked to be left unchanged by the kernels.
const GUARD: usize = 3;

/// Returns every SIMD level this CPU supports, each with the `Arch` that forces it.
///
/// NOTE: a level the test machine lacks (x86-v4 on a CPU without AVX-512) is not tested.
fn levels() -> Vec<(&'static str, Arch)> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut levels = vec![("scalar", Arch::Scalar)];
        if let Some(v3) = pulp::x86::V3::try_new() {
            levels.push(("x86-v3", Arch::V3(v3)));
        }
        if let Some(v4) = pulp::x86::V4::try_new() {
            levels.push(("x86-v4", Arch::V4(v4)));
        }
        levels
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        vec![("detected", Arch::new())]
    }
}

/// One run of a kernel: the SIMD level, slice length and start offset, and the generator seed.
struct Case {
    level: &'static str,
    arch: Arch,
    len: usize,
    offset: usize,
    seed: u64,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "level {}, len {}, offset {}, seed {}", self.level, self.len, self.offset, self.seed)
    }
}

/// Runs `check` on every level, length and offset, with a generator seeded from `kernel_seed`
/// and the case.
fn for_each_case(kernel_seed: u64, mut check: impl FnMut(&Case, &mut StdRng)) {
    for (level, arch) in levels() {
        for len in 0..=MAX_LEN {
            for offset in 0..=MAX_OFFSET {
                let seed = kernel_seed * 1_000_000 + (len * (MAX_OFFSET + 1) + offset) as u64;
                let case = Case { level, arch, len, offset, seed };
                let mut rng = StdRng::seed_from_u64(seed);
                check(&case, &mut rng);
            }
        }
    }
}

/// Draws a value from a mix of wide and tiny magnitudes of both signs, exact zeros and small
/// integers.
fn random_value(rng: &mut StdRng) -> f32 {
    match rng.random_range(0..10) {
        0 => 0.0,
        1 => rng.random_range(-1e-3..1e-3),
        2 => rng.random_range(-3..=3) as f32,
        _ => rng.random_range(-4.0..4.0),
    }
}

/// A slice of length `len` starting at `offset` inside a buffer with `GUARD` entries after it.
#[derive(Clone)]
struct Padded {
    data: Vec<f32>,
    offset: usize,
    len: usize,
}

impl Padded {
    fn random(rng: &mut StdRng, case: &Case) -> Self {
        let data = (0..case.offset + case.len + GUARD).map(|_| random_value(rng)).collect();
        Self { data, offset: case.offset, len: case.len }
    }

    fn get(&self) -> &[f32] {
        &self.data[self.offset..self.offset + self.len]
    }

    fn get_mut(&mut self) -> &mut [f32] {
        &mut self.data[self.offset..self.offset + self.len]
    }
}

/// Asserts that a kernel left the entries before and after its output slice bit for bit unchanged.
fn assert_outside_unchanged(kernel: &str, case: &Case, before: &Padded, after: &Padded) {
    let end = before.offset + before.len;
    for i in (0..before.offset).chain(end..before.data.len()) {
        assert_eq!(
            before.data[i].to_bits(),
            after.data[i].to_bits(),
            "{kernel} [{case}]: buffer entry {i} outside the slice {}..{end} changed from {} to {}",
            before.offset,
            before.data[i],
            after.data[i]
        );
    }
}

/// Per-entry tolerance: a few `f32` rounding errors of the expected value.
fn entry_tolerance(expected: f32) -> f32 {
    4.0 * EPS * (1.0 + expected.abs())
}

/// Tolerance of a sum of `len` squares accumulated in `f32` lanes against one accumulated in
/// `f64`: `(len + 4) eps` relative, plus an absolute floor for squares that underflow in `f32`.
fn sum_tolerance(len: usize, expected: f64) -> f64 {
    (len as f64 + 4.0) * EPS as f64 * expected.abs() + 1e-30
}

fn assert_entries_close(kernel: &str, case: &Case, expected: &[f32], actual: &[f32], inputs: impl Fn(usize) -> String) {
    assert_eq!(expected.len(), actual.len(), "{kernel} [{case}]: output lengths differ");
    for (r, (&expected, &actual)) in expected.iter().zip(actual).enumerate() {
        let tolerance = entry_tolerance(expected);
        assert!(
            (actual - expected).abs() <= tolerance,
            "{kernel} [{case}] entry {r}: SIMD {actual:e}, scalar {expected:e}, tolerance {tolerance:e}; inputs {}",
            inputs(r)
        );
    }
}

fn assert_sum_close(kernel: &str, sum: &str, case: &Case, expected: f64, actual: f64, inputs: impl Fn() -> String) {
    let tolerance = sum_tolerance(case.len, expected);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{kernel} [{case}] sum {sum}: SIMD {actual:e}, scalar {expected:e}, tolerance {tolerance:e}; inputs {}",
        inputs()
    );
}

/// Formats named slices for an assert message.
fn describe(slices: &[(&str, &[f32])]) -> String {
    slices.iter().map(|(name, values)| format!("{name} = {values:?}")).collect::<Vec<_>>().join(", ")
}

/// Formats entry `r` of named slices for an assert message.
fn describe_entry(slices: &[(&str, &[f32])], r: usize) -> String {
    slices.iter().map(|(name, values)| format!("{name} = {:e}", values[r])).collect::<Vec<_>>().join(", ")
}

/// `||u - P||^2` in `f64` with `P = p + bias` rounded to `f32`, as the kernels compute it.
fn dist2_to_product(u: &[f32], p: &[f32], bias: &[f32]) -> f64 {
    u.iter().zip(p).zip(bias).map(|((&u, &p), &b)| (f64::from(u) - f64::from(p + b)).powi(2)).sum()
}

fn assert_usums_close(kernel: &str, case: &Case, expected: USums, actual: USums, inputs: impl Fn() -> String) {
    assert_sum_close(kernel, "coupling_old", case, expected.coupling_old, actual.coupling_old, &inputs);
    assert_sum_close(kernel, "coupling_new", case, expected.coupling_new, actual.coupling_new, &inputs);
    assert_sum_close(kernel, "link_old", case, expected.link_old, actual.link_old, &inputs);
    assert_sum_close(kernel, "link_new", case, expected.link_new, actual.link_new, &inputs);
    assert_sum_close(kernel, "step", case, expected.step, actual.step, &inputs);
}

#[test]
fn relu_matches_scalar() {
    for_each_case(1, |case, rng| {
        let src = Padded::random(rng, case);
        let dst = Padded::random(rng, case);

        let mut expected = dst.clone();
        scalar::relu(expected.get_mut(), src.get());
        let mut actual = dst.clone();
        case.arch.dispatch(Relu { dst: actual.get_mut(), src: src.get() });

        assert_outside_unchanged("relu", case, &dst, &actual);
        assert_entries_close("relu", case, expected.get(), actual.get(), |r| describe_entry(&[("src", src.get())], r));
    });
}

#[test]
fn add_bias_relu_matches_scalar() {
    for_each_case(2, |case, rng| {
        let x = Padded::random(rng, case);
        let bias = Padded::random(rng, case);

        let mut expected = x.clone();
        scalar::add_bias_relu(expected.get_mut(), bias.get());
        let mut actual = x.clone();
        case.arch.dispatch(AddBiasRelu { x: actual.get_mut(), bias: bias.get() });

        assert_outside_unchanged("add_bias_relu", case, &x, &actual);
        assert_entries_close("add_bias_relu", case, expected.get(), actual.get(), |r| {
            describe_entry(&[("x", x.get()), ("bias", bias.get())], r)
        });
    });
}

#[test]
fn add_bias_matches_scalar() {
    for_each_case(3, |case, rng| {
        let x = Padded::random(rng, case);
        let bias = Padded::random(rng, case);

        let mut expected = x.clone();
        scalar::add_bias(expected.get_mut(), bias.get());
        let mut actual = x.clone();
        case.arch.dispatch(AddBias { x: actual.get_mut(), bias: bias.get() });

        assert_outside_unchanged("add_bias", case, &x, &actual);
        assert_entries_close("add_bias", case, expected.get(), actual.get(), |r| {
            describe_entry(&[("x", x.get()), ("bias", bias.get())], r)
        });
    });
}

#[test]
fn output_v_step_matches_scalar() {
    for_each_case(4, |case, rng| {
        let v = Padded::random(rng, case);
        let u = Padded::random(rng, case);
        let weight = if rng.random_bool(0.5) { 1.0 } else { rng.random_range(1e-4..2.0) };
        let gamma = rng.random_range(0.05..20.0);
        let alpha = rng.random_range(0.0..5.0);

        // Labels in the first and last entry, at random, and past the end (no one-hot entry).
        let labels = [0, case.len.saturating_sub(1), rng.random_range(0..=case.len), case.len, case.len + 17];
        for label in labels {
            let mut expected = v.clone();
            let expected_sums = scalar::output_v_step(expected.get_mut(), u.get(), label, weight, gamma, alpha);
            let mut actual = v.clone();
            let coefficients = OutputVParameters { weight, gamma, alpha };
            let actual_sums = case.arch.dispatch(OutputVStep { v: actual.get_mut(), u: u.get(), label, coefficients });

            let kernel = format!("output_v_step(label {label}, weight {weight}, gamma {gamma}, alpha {alpha})");
            let inputs = || describe(&[("v", v.get()), ("u", u.get())]);
            assert_outside_unchanged(&kernel, case, &v, &actual);
            assert_entries_close(&kernel, case, expected.get(), actual.get(), |r| {
                describe_entry(&[("v", v.get()), ("u", u.get())], r)
            });
            let (e, a) = (expected_sums, actual_sums);
            assert_sum_close(&kernel, "residual_old", case, e.residual_old, a.residual_old, inputs);
            assert_sum_close(&kernel, "residual_new", case, e.residual_new, a.residual_new, inputs);
            assert_sum_close(&kernel, "dist_old", case, e.dist_old, a.dist_old, inputs);
            assert_sum_close(&kernel, "dist_new", case, e.dist_new, a.dist_new, inputs);
            assert_sum_close(&kernel, "step", case, e.step, a.step, inputs);
        }
    });
}

#[test]
fn output_u_step_matches_scalar() {
    for_each_case(5, |case, rng| {
        let u = Padded::random(rng, case);
        let p = Padded::random(rng, case);
        let bias = Padded::random(rng, case);
        let v = Padded::random(rng, case);
        let gamma = rng.random_range(0.05..20.0);
        let rho = rng.random_range(0.05..20.0);

        let mut expected = u.clone();
        let expected_sums = scalar::output_u_step(expected.get_mut(), p.get(), bias.get(), v.get(), gamma, rho);
        let mut actual = u.clone();
        let actual_sums = case.arch.dispatch(OutputUStep {
            u: actual.get_mut(),
            p: p.get(),
            bias: bias.get(),
            v: v.get(),
            gamma,
            rho,
        });

        let kernel = format!("output_u_step(gamma {gamma}, rho {rho})");
        let slices = [("u", u.get()), ("p", p.get()), ("bias", bias.get()), ("v", v.get())];
        assert_outside_unchanged(&kernel, case, &u, &actual);
        assert_entries_close(&kernel, case, expected.get(), actual.get(), |r| describe_entry(&slices, r));
        assert_usums_close(&kernel, case, expected_sums, actual_sums, || describe(&slices));
    });
}

/// `(rho, alpha, gamma)` for the hidden update. The first gives `g = 1`, `inv = 1/2` and exact
/// centres `B = (P + u_old) / 2` for small inputs; the others give `g` from `0.2` to `56`.
const HIDDEN_PARAMETERS: [(f32, f32, f32); 4] = [(1.0, 1.0, 2.0), (1.0, 0.0, 0.5), (0.3, 0.7, 4.0), (2.5, 0.3, 0.05)];

/// Computes the centre `B = (rho (p + bias) + alpha u_old) / (rho + alpha)` as both kernels
/// compute it.
fn hidden_center(p: f32, bias: f32, old: f32, rho: f32, alpha: f32) -> f32 {
    let inv = 1.0 / (rho + alpha);
    (rho * (p + bias) + alpha * old) * inv
}

/// Evaluates the ReLU proximal objective `1/2 (relu(u) - a)^2 + g/2 (u - B)^2` in `f64`.
fn relu_prox_objective(u: f64, a: f64, center: f64, g: f64) -> f64 {
    0.5 * (u.max(0.0) - a).powi(2) + 0.5 * g * (u - center).powi(2)
}

/// Overwrites entries of the hidden-update inputs so that each branch boundary of the proximal
/// step occurs: `B = 0`, `u+ = 0`, `a = 0`, and `f(u+) = f(B)` up to rounding with `B < 0`.
fn plant_prox_boundaries(rng: &mut StdRng, inputs: [&mut [f32]; 4], rho: f32, alpha: f32, gamma: f32) {
    let [old, p, bias, a] = inputs;
    let g = (rho + alpha) / gamma;
    for r in 0..old.len() {
        match rng.random_range(0..8) {
            // B = 0: P = p + bias = 0 exactly and u_old = 0.
            0 => {
                p[r] = -bias[r];
                old[r] = 0.0;
            }
            // u+ = 0: a + g B = 0 exactly, because a = -(g B) rounds the same product.
            1 => {
                let center = hidden_center(p[r], bias[r], old[r], rho, alpha);
                a[r] = -(g * center);
            }
            // a = 0.
            2 => a[r] = 0.0,
            // f(u+) = f(B) with B < 0 and u+ > 0: g (a - B)^2 / (1 + g) = a^2 gives
            // a = B / (1 - sqrt((1 + g) / g)), which is positive.
            3 => {
                p[r] = -p[r].abs() - 0.5;
                bias[r] = -bias[r].abs();
                old[r] = -old[r].abs();
                let center = f64::from(hidden_center(p[r], bias[r], old[r], rho, alpha));
                let g = f64::from(g);
                a[r] = (center / (1.0 - ((1.0 + g) / g).sqrt())) as f32;
            }
            _ => {}
        }
    }
}

#[test]
fn hidden_u_step_relu_matches_scalar() {
    for_each_case(6, |case, rng| {
        let random_parameters =
            (rng.random_range(0.05..10.0), rng.random_range(0.0..5.0), rng.random_range(0.05..10.0));
        for (rho, alpha, gamma) in HIDDEN_PARAMETERS.into_iter().chain([random_parameters]) {
            let mut u = Padded::random(rng, case);
            let mut p = Padded::random(rng, case);
            let mut bias = Padded::random(rng, case);
            let mut a = Padded::random(rng, case);
            let inputs = [u.get_mut(), p.get_mut(), bias.get_mut(), a.get_mut()];
            plant_prox_boundaries(rng, inputs, rho, alpha, gamma);

            let mut expected = u.clone();
            let expected_sums =
                scalar::hidden_u_step_relu(expected.get_mut(), p.get(), bias.get(), a.get(), rho, alpha, gamma);
            let mut actual = u.clone();
            let actual_sums = case.arch.dispatch(HiddenUStepRelu {
                u: actual.get_mut(),
                p: p.get(),
                bias: bias.get(),
                a: a.get(),
                rho,
                alpha,
                gamma,
                slope: 0.0,
            });

            let kernel = format!("hidden_u_step_relu(rho {rho}, alpha {alpha}, gamma {gamma})");
            let slices = [("u_old", u.get()), ("p", p.get()), ("bias", bias.get()), ("a", a.get())];
            assert_outside_unchanged(&kernel, case, &u, &actual);

            // Entries agree to within rounding, or, where rounding flipped the choice between
            // two candidates, the two choices have equal objective values to within rounding.
            let g = (rho + alpha) / gamma;
            for r in 0..case.len {
                let (expected_u, actual_u) = (expected.get()[r], actual.get()[r]);
                if (actual_u - expected_u).abs() <= entry_tolerance(expected_u) {
                    continue;
                }
                let center = f64::from(hidden_center(p.get()[r], bias.get()[r], u.get()[r], rho, alpha));
                let (a_r, g) = (f64::from(a.get()[r]), f64::from(g));
                let expected_value = relu_prox_objective(f64::from(expected_u), a_r, center, g);
                let actual_value = relu_prox_objective(f64::from(actual_u), a_r, center, g);
                let value_tolerance = 16.0 * EPS as f64 * (relu_prox_objective(0.0, a_r, center, g) + 1e-30);
                assert!(
                    (actual_value - expected_value).abs() <= value_tolerance,
                    "{kernel} [{case}] entry {r}: SIMD u = {actual_u:e} with f = {actual_value:e}, scalar u = \
                     {expected_u:e} with f = {expected_value:e}, tolerance {value_tolerance:e}; B = {center:e}, \
                     inputs {}",
                    describe_entry(&slices, r)
                );
            }

            // The sums must match those of the SIMD output itself, accumulated in f64 as the
            // scalar reference does; `coupling_old` does not depend on the output.
            let expected_sums = USums {
                coupling_old: expected_sums.coupling_old,
                coupling_new: dist2_to_product(actual.get(), p.get(), bias.get()),
                link_old: expected_sums.link_old,
                link_new: scalar::dist2_relu(a.get(), actual.get()),
                step: scalar::dist2(actual.get(), u.get()),
            };
            assert_usums_close(&kernel, case, expected_sums, actual_sums, || describe(&slices));
        }
    });
}

#[test]
fn scaled_relu_matches_scalar() {
    for_each_case(7, |case, rng| {
        let u = Padded::random(rng, case);
        let dst = Padded::random(rng, case);
        let scale = rng.random_range(-3.0..3.0);

        let mut expected = dst.clone();
        scalar::scaled_relu(expected.get_mut(), u.get(), scale);
        let mut actual = dst.clone();
        case.arch.dispatch(ScaledRelu { dst: actual.get_mut(), u: u.get(), scale });

        let kernel = format!("scaled_relu(scale {scale})");
        assert_outside_unchanged(&kernel, case, &dst, &actual);
        assert_entries_close(&kernel, case, expected.get(), actual.get(), |r| describe_entry(&[("u", u.get())], r));
    });
}

#[test]
fn add_scaled_relu_shift_matches_scalar() {
    for_each_case(8, |case, rng| {
        let acc = Padded::random(rng, case);
        let u = Padded::random(rng, case);
        let shift = Padded::random(rng, case);
        let scale = rng.random_range(-3.0..3.0);

        let mut expected = acc.clone();
        scalar::add_scaled_relu_shift(expected.get_mut(), u.get(), scale, shift.get());
        let mut actual = acc.clone();
        case.arch.dispatch(AddScaledReluShift { acc: actual.get_mut(), u: u.get(), scale, shift: shift.get() });

        let kernel = format!("add_scaled_relu_shift(scale {scale})");
        let slices = [("acc", acc.get()), ("u", u.get()), ("shift", shift.get())];
        assert_outside_unchanged(&kernel, case, &acc, &actual);
        assert_entries_close(&kernel, case, expected.get(), actual.get(), |r| describe_entry(&slices, r));
    });
}

#[test]
fn assign_with_step_matches_scalar() {
    for_each_case(9, |case, rng| {
        let v = Padded::random(rng, case);
        let x = Padded::random(rng, case);

        let mut expected = v.clone();
        let expected_step = scalar::assign_with_step(expected.get_mut(), x.get());
        let mut actual = v.clone();
        let actual_step = case.arch.dispatch(AssignWithStep { v: actual.get_mut(), x: x.get() });

        let slices = [("v", v.get()), ("x", x.get())];
        assert_outside_unchanged("assign_with_step", case, &v, &actual);
        assert_entries_close("assign_with_step", case, expected.get(), actual.get(), |r| describe_entry(&slices, r));
        assert_sum_close("assign_with_step", "step", case, expected_step, actual_step, || describe(&slices));
    });
}

#[test]
fn combine_with_step_matches_scalar() {
    for_each_case(10, |case, rng| {
        let v = Padded::random(rng, case);
        let x = Padded::random(rng, case);
        let y = Padded::random(rng, case);
        let beta = rng.random_range(-2.0..2.0);

        let mut expected = v.clone();
        let expected_step = scalar::combine_with_step(expected.get_mut(), x.get(), y.get(), beta);
        let mut actual = v.clone();
        let actual_step = case.arch.dispatch(CombineWithStep { v: actual.get_mut(), x: x.get(), y: y.get(), beta });

        let kernel = format!("combine_with_step(beta {beta})");
        let slices = [("v", v.get()), ("x", x.get()), ("y", y.get())];
        assert_outside_unchanged(&kernel, case, &v, &actual);
        assert_entries_close(&kernel, case, expected.get(), actual.get(), |r| describe_entry(&slices, r));
        assert_sum_close(&kernel, "step", case, expected_step, actual_step, || describe(&slices));
    });
}

#[test]
fn f32_trait_dispatches_to_simd() {
    use super::Elementwise;

    let mut rng = StdRng::seed_from_u64(11);
    let len = MAX_LEN;
    let u_old: Vec<f32> = (0..len).map(|_| random_value(&mut rng)).collect();
    let p: Vec<f32> = (0..len).map(|_| random_value(&mut rng)).collect();
    let bias: Vec<f32> = (0..len).map(|_| random_value(&mut rng)).collect();
    let a: Vec<f32> = (0..len).map(|_| random_value(&mut rng)).collect();

    let mut through_trait = u_old.clone();
    let trait_sums = f32::hidden_u_step_relu(&mut through_trait, &p, &bias, &a, 1.5, 0.5, 0.8);
    let mut through_simd = u_old.clone();
    let simd_sums = simd::hidden_u_step_relu(&mut through_simd, &p, &bias, &a, 1.5, 0.5, 0.8);

    assert_eq!(through_simd, through_trait, "f32::hidden_u_step_relu outputs differ from simd::hidden_u_step_relu");
    assert_eq!(simd_sums, trait_sums, "f32::hidden_u_step_relu sums differ from simd::hidden_u_step_relu");
}

#[test]
fn short_column_runs_scalar() {
    let mut rng = StdRng::seed_from_u64(13);
    let len = simd::MIN_SIMD_LEN - 1;
    let v_old: Vec<f32> = (0..len).map(|_| random_value(&mut rng)).collect();
    let u: Vec<f32> = (0..len).map(|_| random_value(&mut rng)).collect();

    let mut through_simd = v_old.clone();
    let simd_sums = simd::output_v_step(&mut through_simd, &u, 3, 0.5, 0.7, 0.2);
    let mut through_scalar = v_old.clone();
    let scalar_sums = scalar::output_v_step(&mut through_scalar, &u, 3, 0.5, 0.7, 0.2);

    assert_eq!(
        through_simd, through_scalar,
        "output_v_step on {len} entries: outputs differ from the scalar reference"
    );
    assert_eq!(simd_sums, scalar_sums, "output_v_step on {len} entries: sums differ from the scalar reference");
}

#[test]
#[cfg(target_arch = "x86_64")]
fn simd_level_names_best_level() {
    let expected = if pulp::x86::V4::try_new().is_some() {
        "x86-v4 (AVX-512)"
    } else if pulp::x86::V3::try_new().is_some() {
        "x86-v3 (AVX2+FMA)"
    } else {
        "scalar"
    };
    assert_eq!(simd::simd_level(), expected);
}

#[test]
#[should_panic(expected = "combine_with_step: slice `y` has length 4, expected 5")]
fn slice_length_mismatch_panics() {
    let mut v = vec![0.0f32; 5];
    simd::combine_with_step(&mut v, &[1.0; 5], &[1.0; 4], 0.5);
}

/// Evaluates the leaky-ReLU proximal objective `1/2 (sigma(u) - a)^2 + g/2 (u - b)^2`.
fn leaky_prox_objective(u: f64, a: f64, b: f64, g: f64, slope: f64) -> f64 {
    let activation = if u >= 0.0 { u } else { slope * u };
    0.5 * (activation - a).powi(2) + 0.5 * g * (u - b).powi(2)
}

/// Grid points per bracket in the brute-force minimisation.
const GRID_POINTS: f64 = 20_000.0;

/// Returns `min f` over the grid `k h` (which contains 0) covering a bracket of every candidate
/// minimiser, and the spacing `h`.
fn grid_minimum(a: f64, b: f64, g: f64, slope: f64) -> (f64, f64) {
    // The minimiser of the positive piece lies between a and b, and that of the negative piece
    // between a / slope and b (it is b for slope 0). The bracket also contains the kink 0.
    let mut low = a.min(b).min(0.0);
    if slope > 0.0 {
        low = low.min(a / slope);
    }
    let low = low - 1.0;
    let high = a.max(b).max(0.0) + 1.0;
    let h = (high - low) / GRID_POINTS;

    let first = (low / h).floor() as i64;
    let last = (high / h).ceil() as i64;
    let minimum =
        (first..=last).map(|k| leaky_prox_objective(k as f64 * h, a, b, g, slope)).fold(f64::INFINITY, f64::min);
    (minimum, h)
}

/// `(a, b)` on the boundaries of each branch of the leaky-ReLU proximal step for `g` and `slope`.
fn prox_boundary_cases(rng: &mut StdRng, g: f64, slope: f64) -> Vec<(f64, f64)> {
    let b: f64 = rng.random_range(0.1..4.0);
    let mut cases = vec![
        (0.0, 0.0),
        (rng.random_range(-4.0..4.0), 0.0),
        (0.0, b),
        (0.0, -b),
        // u+ = (a + g b) / (1 + g) = 0, with b < 0 and with b > 0.
        (g * b, -b),
        (-g * b, b),
    ];
    // u- = (slope a + g b) / (slope^2 + g) = 0.
    let a: f64 = rng.random_range(-4.0..4.0);
    cases.push((a, -slope * a / g));
    // Equal minima of the two pieces, g (a - b)^2 / (1 + g) = g (a - slope b)^2 / (slope^2 + g),
    // solved for a > 0 with b < 0.
    let (p, n) = (1.0 / (1.0 + g).sqrt(), 1.0 / (slope * slope + g).sqrt());
    cases.push((-b * (p - slope * n) / (p - n), -b));
    cases
}

#[test]
fn prox_leaky_relu_matches_grid_minimum() {
    let mut rng = StdRng::seed_from_u64(12);
    for slope in [0.0, 0.01, 0.1, 0.5, 0.9] {
        for _ in 0..60 {
            let g = 10f64.powf(rng.random_range(-2.0..2.0));
            let mut cases = prox_boundary_cases(&mut rng, g, slope);
            cases.extend((0..4).map(|_| (rng.random_range(-5.0..5.0), rng.random_range(-5.0..5.0))));

            for (a, b) in cases {
                let u = scalar::prox_leaky_relu(a, b, g, slope);
                let value = leaky_prox_objective(u, a, b, g, slope);
                let (grid_value, h) = grid_minimum(a, b, g, slope);
                let roundoff = 64.0 * f64::EPSILON * (1.0 + leaky_prox_objective(0.0, a, b, g, slope));
                let inputs = format!("a = {a:e}, b = {b:e}, g = {g:e}, slope = {slope}");

                // No grid point may beat the proximal step by more than rounding.
                assert!(
                    grid_value >= value - roundoff,
                    "prox_leaky_relu returned u = {u:e} with f = {value:e}, but a grid point has f = {grid_value:e}; \
                     {inputs}"
                );
                // The grid comes within its resolution of the minimum, so the bracket contains it:
                // the nearest grid point is within h / 2 of the minimiser and the curvature is at
                // most 1 + g.
                let resolution = (1.0 + g) * h * h / 8.0;
                assert!(
                    grid_value <= value + resolution + roundoff,
                    "grid minimum {grid_value:e} exceeds f(prox) = {value:e} by more than the resolution \
                     {resolution:e}; {inputs}"
                );
            }
        }
    }
}

#[test]
fn u_step_sums_match_direct() {
    let mut rng = StdRng::seed_from_u64(14);
    for len in [0, 7, 16, 53] {
        let draw = |rng: &mut StdRng| (0..len).map(|_| random_value(rng)).collect::<Vec<f32>>();
        let (u_old, p, bias, v) = (draw(&mut rng), draw(&mut rng), draw(&mut rng), draw(&mut rng));
        let case = Case { level: "detected", arch: Arch::new(), len, offset: 0, seed: 14 };

        // Output layer: sigma is the identity, so link_old = ||v - u_old||^2.
        for (name, simd_version) in [("scalar", false), ("simd", true)] {
            let mut u = u_old.clone();
            let sums = if simd_version {
                simd::output_u_step(&mut u, &p, &bias, &v, 0.7, 1.3)
            } else {
                scalar::output_u_step(&mut u, &p, &bias, &v, 0.7, 1.3)
            };
            let expected = USums {
                coupling_old: dist2_to_product(&u_old, &p, &bias),
                coupling_new: dist2_to_product(&u, &p, &bias),
                link_old: scalar::dist2(&v, &u_old),
                link_new: scalar::dist2(&v, &u),
                step: scalar::dist2(&u, &u_old),
            };
            assert_usums_close(&format!("output_u_step ({name})"), &case, expected, sums, || {
                describe(&[("u_old", &u_old), ("p", &p), ("bias", &bias), ("v", &v)])
            });
        }

        // Hidden ReLU layer: link_old = ||a - max(u_old, 0)||^2.
        for (name, simd_version) in [("scalar", false), ("simd", true)] {
            let mut u = u_old.clone();
            let sums = if simd_version {
                simd::hidden_u_step_relu(&mut u, &p, &bias, &v, 0.7, 0.4, 1.3)
            } else {
                scalar::hidden_u_step_relu(&mut u, &p, &bias, &v, 0.7, 0.4, 1.3)
            };
            let expected = USums {
                coupling_old: dist2_to_product(&u_old, &p, &bias),
                coupling_new: dist2_to_product(&u, &p, &bias),
                link_old: scalar::dist2_relu(&v, &u_old),
                link_new: scalar::dist2_relu(&v, &u),
                step: scalar::dist2(&u, &u_old),
            };
            assert_usums_close(&format!("hidden_u_step_relu ({name})"), &case, expected, sums, || {
                describe(&[("u_old", &u_old), ("p", &p), ("bias", &bias), ("a", &v)])
            });
        }
    }
}

#[test]
fn activation_target_matches_scalar() {
    for_each_case(31, |case, rng| {
        let (q, v, q1, q2) = (
            Padded::random(rng, case),
            Padded::random(rng, case),
            Padded::random(rng, case),
            Padded::random(rng, case),
        );
        let (gamma, gamma_next) = (rng.random_range(0.1..3.0), rng.random_range(0.0..3.0));

        let mut expected = q.clone();
        let expected_sums =
            scalar::activation_target(expected.get_mut(), v.get(), q1.get(), q2.get(), gamma, gamma_next);
        let mut actual = q.clone();
        let actual_sums = case.arch.dispatch(ActivationTarget {
            q: actual.get_mut(),
            v: v.get(),
            q1: q1.get(),
            q2: q2.get(),
            gamma,
            gamma_next,
        });

        let slices = [("v", v.get()), ("q1", q1.get()), ("q2", q2.get())];
        assert_outside_unchanged("activation_target", case, &q, &actual);
        assert_entries_close("activation_target", case, expected.get(), actual.get(), |r| describe_entry(&slices, r));
        for (name, e, a) in
            [("link", expected_sums[0], actual_sums[0]), ("link_next", expected_sums[1], actual_sums[1])]
        {
            assert_sum_close("activation_target", name, case, e, a, || describe(&slices));
        }
    });
}

#[test]
fn activation_finish_matches_scalar() {
    for_each_case(32, |case, rng| {
        let v = Padded::random(rng, case);
        let inputs: Vec<Padded> = (0..5).map(|_| Padded::random(rng, case)).collect();
        let [out, q1, q2, q, r] = [&inputs[0], &inputs[1], &inputs[2], &inputs[3], &inputs[4]];

        let mut expected = v.clone();
        let expected_sums =
            scalar::activation_finish(expected.get_mut(), out.get(), q1.get(), q2.get(), q.get(), r.get());
        let mut actual = v.clone();
        let actual_sums = case.arch.dispatch(ActivationFinish {
            v: actual.get_mut(),
            out: out.get(),
            q1: q1.get(),
            q2: q2.get(),
            q: q.get(),
            r: r.get(),
        });

        let slices =
            [("v", v.get()), ("out", out.get()), ("q1", q1.get()), ("q2", q2.get()), ("q", q.get()), ("r", r.get())];
        assert_outside_unchanged("activation_finish", case, &v, &actual);
        assert_eq!(expected.get(), actual.get(), "activation_finish [{case}]: v must equal out");
        let names = ["step", "link", "link_next", "dot_q", "dot_r", "norm2"];
        // Products of signed values can cancel, so the tolerance scales with the sum of their
        // magnitudes rather than with the result.
        let magnitudes = [
            expected_sums[0],
            expected_sums[1],
            expected_sums[2],
            q.get().iter().zip(out.get()).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum(),
            r.get().iter().zip(out.get()).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum(),
            expected_sums[5],
        ];
        for k in 0..6 {
            let tolerance = sum_tolerance(case.len, magnitudes[k]);
            assert!(
                (actual_sums[k] - expected_sums[k]).abs() <= tolerance,
                "activation_finish [{case}] sum {}: SIMD {:e}, scalar {:e}; inputs {}",
                names[k],
                actual_sums[k],
                expected_sums[k],
                describe(&slices)
            );
        }
    });
}
