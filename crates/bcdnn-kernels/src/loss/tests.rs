//! Tests of the output activation updates against brute-force minimisation, naive formulas
//! and direct computation of their sums.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::reference::{self, hinge_prox, hinge_prox_regularised, target};
use super::{prox_linear_bound, LossKernels, OutputSums, OutputUpdate, OutputUpdateError};
use crate::model::{ActivationRegulariser, Loss};

const LOSSES: [Loss; 4] = [Loss::Squared, Loss::Hinge, Loss::CrossEntropy, Loss::Logistic];

fn regularisers() -> [ActivationRegulariser; 4] {
    [
        ActivationRegulariser::None,
        ActivationRegulariser::L1 { lambda: 0.3 },
        ActivationRegulariser::NonNegative,
        ActivationRegulariser::Box { lower: -0.4, upper: 0.7 },
    ]
}

/// Returns the minimiser of a strictly convex 1-D function, found by a grid search around
/// `center` refined four times (final spacing `2e-8`).
fn grid_minimiser(objective: impl Fn(f64) -> f64, center: f64) -> f64 {
    let (mut center, mut radius) = (center, 10.0);
    for _ in 0..4 {
        let points = 2000;
        let mut best = (f64::INFINITY, center);
        for k in 0..=points {
            let z = center - radius + 2.0 * radius * k as f64 / points as f64;
            let value = objective(z);
            if value < best.0 {
                best = (value, z);
            }
        }
        center = best.1;
        radius *= 0.01;
    }
    center
}

fn random_tile(rng: &mut StdRng, rows: usize, columns: usize, scale: f64) -> (Vec<f64>, Vec<f64>, Vec<u8>) {
    let v = (0..rows * columns).map(|_| rng.random_range(-scale..scale)).collect();
    let u = (0..rows * columns).map(|_| rng.random_range(-scale..scale)).collect();
    let labels = (0..columns).map(|_| rng.random_range(0..rows.max(1)) as u8).collect();
    (v, u, labels)
}

/// Checks each entry of a separable update against the grid minimiser of its objective
/// `w loss(v) + s(v) + gamma/2 (v - u)^2 + alpha/2 (v - v_old)^2`.
fn check_separable_against_grid(loss: Loss, entry_loss: impl Fn(f64, f64) -> f64) {
    let mut rng = StdRng::seed_from_u64(7);
    let (rows, columns) = (5, 8);
    for reg in regularisers() {
        for (weight, gamma, alpha) in [(1.0, 0.8, 0.3), (0.05, 1.5, 0.0), (2.0, 0.2, 0.6)] {
            let update = OutputUpdate { loss, weight, reg, gamma, alpha };
            let (old, u, labels) = random_tile(&mut rng, rows, columns, 2.0);
            let mut v = old.clone();
            f64::output_v_update(&update, &mut v, &u, &labels, rows);
            for (i, &got) in v.iter().enumerate() {
                let y = target(loss, i % rows, labels[i / rows] as usize);
                let objective = |z: f64| {
                    weight * entry_loss(z, y)
                        + reg.value(z)
                        + 0.5 * gamma * (z - u[i]).powi(2)
                        + 0.5 * alpha * (z - old[i]).powi(2)
                };
                let want = grid_minimiser(objective, u[i]);
                assert!(
                    (got - want).abs() < 1e-6,
                    "{loss:?} {update:?} entry {i}: update {got}, grid minimiser {want} (y {y}, u {}, v_old {})",
                    u[i],
                    old[i]
                );
            }
        }
    }
}

#[test]
fn squared_update_matches_grid() {
    check_separable_against_grid(Loss::Squared, |v, y| 0.5 * (v - y) * (v - y));
}

#[test]
fn hinge_update_matches_grid() {
    check_separable_against_grid(Loss::Hinge, |v, y| (1.0 - y * v).max(0.0));
}

#[test]
fn hinge_candidates_match_closed_form() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..2000 {
        let y = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let b = rng.random_range(-3.0..3.0);
        let weight = rng.random_range(0.01..3.0);
        let t = rng.random_range(0.05..3.0);
        let closed = hinge_prox(y, b, weight, t);
        let candidates = hinge_prox_regularised(y, b, weight, t, ActivationRegulariser::None);
        assert!(
            (closed - candidates).abs() < 1e-12,
            "y {y}, b {b}, w {weight}, t {t}: closed form {closed}, candidates {candidates}"
        );
    }
}

/// Computes the prox-linear update naively: softmax without a shift, then the formula.
fn naive_prox_linear(update: &OutputUpdate, old: &[f64], u: &[f64], label: usize) -> Vec<f64> {
    let t = update.gamma + update.alpha;
    let denominator: f64 = old.iter().map(|x| x.exp()).sum();
    (0..old.len())
        .map(|r| {
            let y = target(update.loss, r, label);
            let grad = match update.loss {
                Loss::CrossEntropy => old[r].exp() / denominator - y,
                Loss::Logistic => -y / (1.0 + (y * old[r]).exp()),
                _ => unreachable!(),
            };
            update.reg.prox((update.alpha * old[r] - update.weight * grad + update.gamma * u[r]) / t, 1.0 / t)
        })
        .collect()
}

#[test]
fn prox_linear_matches_naive_formula() {
    let mut rng = StdRng::seed_from_u64(13);
    let (rows, columns) = (7, 6);
    for loss in [Loss::CrossEntropy, Loss::Logistic] {
        for reg in regularisers() {
            let update = OutputUpdate { loss, weight: 0.5, reg, gamma: 0.4, alpha: 0.9 };
            let (old, u, labels) = random_tile(&mut rng, rows, columns, 3.0);
            let mut v = old.clone();
            f64::output_v_update(&update, &mut v, &u, &labels, rows);
            for (c, &label) in labels.iter().enumerate() {
                let range = c * rows..(c + 1) * rows;
                let want = naive_prox_linear(&update, &old[range.clone()], &u[range.clone()], label as usize);
                for (r, (&got, &want)) in v[range].iter().zip(&want).enumerate() {
                    assert!((got - want).abs() < 1e-12, "{loss:?} {reg:?} column {c} row {r}: {got}, naive {want}");
                }
            }
        }
    }
}

/// Computes `w R(V) + s(V) + gamma/2 ||V - U||^2`, the part of the block objective that the
/// prox-linear step must decrease.
fn block_objective(update: &OutputUpdate, v: &[f64], u: &[f64], labels: &[u8], rows: usize) -> f64 {
    let loss = f64::loss_value(update.loss, update.weight, v, labels, rows);
    let reg: f64 = v.iter().map(|&x| update.reg.value(x)).sum();
    let dist: f64 = v.iter().zip(u).map(|(v, u)| (v - u) * (v - u)).sum();
    loss + reg + 0.5 * update.gamma * dist
}

#[test]
fn prox_linear_step_descends() {
    let mut rng = StdRng::seed_from_u64(17);
    let (rows, columns) = (6, 10);
    for loss in [Loss::CrossEntropy, Loss::Logistic] {
        let lipschitz = loss.prox_linear_lipschitz().unwrap();
        for reg in regularisers() {
            for (weight, gamma) in [(1.0, 0.05), (4.0, 0.1), (0.01, 1.0)] {
                let bound = prox_linear_bound(loss, weight, gamma).unwrap();
                let alpha = bound + 1e-3;
                let update = OutputUpdate { loss, weight, reg, gamma, alpha };
                let (mut v, u, labels) = random_tile(&mut rng, rows, columns, 4.0);
                // Start from a feasible point so that s(V_old) is finite.
                for x in v.iter_mut() {
                    *x = reg.prox(*x, 0.0);
                }
                for _ in 0..5 {
                    let before = block_objective(&update, &v, &u, &labels, rows);
                    let sums = f64::output_v_update(&update, &mut v, &u, &labels, rows);
                    let after = block_objective(&update, &v, &u, &labels, rows);
                    // The descent lemma gives this decrease for alpha above the bound.
                    let guaranteed = 0.5 * (2.0 * alpha + gamma - weight * lipschitz) * sums.step;
                    assert!(
                        after + guaranteed <= before + 1e-10 * before.abs().max(1.0),
                        "{update:?}: objective {before} -> {after}, guaranteed decrease {guaranteed}"
                    );
                }
            }
        }
    }
}

#[test]
fn extreme_logits_stay_finite() {
    // Column 0 labelled 1 with logits 1000 and -1000; column 1 labelled 0.
    let old: [f32; 6] = [1000.0, -1000.0, 0.0, -1000.0, 1000.0, 1000.0];
    let u = [0.0f32; 6];
    let labels = [1u8, 0];

    let ce = f32::loss_value(Loss::CrossEntropy, 1.0, &old, &labels, 3);
    // Column 0: logsumexp = 1000, minus v_1 = -1000. Column 1: 1000 + ln 2, minus -1000.
    let want = 2000.0 + (2000.0 + std::f64::consts::LN_2);
    assert!((ce - want).abs() < 1e-9, "cross-entropy {ce}, expected {want}");

    let logistic = f32::loss_value(Loss::Logistic, 1.0, &old, &labels, 3);
    // softplus(-y v): column 0 gives 1000 + 1000 + ln 2, column 1 gives 1000 + 1000 + 1000.
    let want = 2000.0 + std::f64::consts::LN_2 + 3000.0;
    assert!((logistic - want).abs() < 1e-9, "logistic {logistic}, expected {want}");

    for loss in [Loss::CrossEntropy, Loss::Logistic] {
        let update = OutputUpdate { loss, weight: 1.0, reg: ActivationRegulariser::None, gamma: 1.0, alpha: 1.0 };
        let mut v = old;
        let sums = f32::output_v_update(&update, &mut v, &u, &labels, 3);
        assert!(v.iter().all(|x| x.is_finite()), "{loss:?}: update gave {v:?}");
        for (name, value) in [("loss_old", sums.loss_old), ("loss_new", sums.loss_new), ("step", sums.step)] {
            assert!(value.is_finite(), "{loss:?}: {name} = {value}");
        }
        // The gradient at these logits is exact in f64: each entry moves by -grad / 2.
        let mut reference = old.map(f64::from).to_vec();
        let naive_u = [0.0; 6];
        for (c, &label) in labels.iter().enumerate() {
            let range = c * 3..(c + 1) * 3;
            let grads: Vec<f64> = range
                .clone()
                .map(|i| {
                    let y = target(loss, i - c * 3, label as usize);
                    match loss {
                        Loss::CrossEntropy => {
                            let column = &reference[range.clone()];
                            let max = column.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let ties = column.iter().filter(|&&x| x == max).count() as f64;
                            if reference[i] == max {
                                1.0 / ties - y
                            } else {
                                -y
                            }
                        }
                        // sigmoid(-y v) is 1, 0 or 1/2 at these logits.
                        _ => {
                            let margin = -y * reference[i];
                            -y * if margin > 0.0 {
                                1.0
                            } else if margin < 0.0 {
                                0.0
                            } else {
                                0.5
                            }
                        }
                    }
                })
                .collect();
            for (k, i) in range.enumerate() {
                reference[i] = (reference[i] - grads[k] + naive_u[i]) / 2.0;
            }
        }
        for (i, (&got, &want)) in v.iter().zip(&reference).enumerate() {
            assert!((got as f64 - want).abs() < 1e-3, "{loss:?} entry {i}: {got}, expected {want}");
        }
    }
}

/// Recomputes the sums of an update from the tiles before and after it.
fn direct_sums<T: crate::Real>(
    update: &OutputUpdate,
    old: &[T],
    new: &[T],
    u: &[T],
    labels: &[u8],
    rows: usize,
) -> OutputSums {
    let f = |x: &[T]| x.iter().map(|&x| x.to_f64()).collect::<Vec<f64>>();
    let (old, new, u) = (f(old), f(new), f(u));
    let dist = |v: &[f64]| v.iter().zip(&u).map(|(v, u)| (v - u) * (v - u)).sum();
    OutputSums {
        loss_old: f64::loss_value(update.loss, update.weight, &old, labels, rows),
        loss_new: f64::loss_value(update.loss, update.weight, &new, labels, rows),
        dist_old: dist(&old),
        dist_new: dist(&new),
        reg_old: old.iter().map(|&x| update.reg.value(x)).sum(),
        reg_new: new.iter().map(|&x| update.reg.value(x)).sum(),
        step: old.iter().zip(&new).map(|(a, b)| (a - b) * (a - b)).sum(),
    }
}

fn assert_sums_close(got: OutputSums, want: OutputSums, tolerance: f64, context: &str) {
    let fields = [
        ("loss_old", got.loss_old, want.loss_old),
        ("loss_new", got.loss_new, want.loss_new),
        ("dist_old", got.dist_old, want.dist_old),
        ("dist_new", got.dist_new, want.dist_new),
        ("reg_old", got.reg_old, want.reg_old),
        ("reg_new", got.reg_new, want.reg_new),
        ("step", got.step, want.step),
    ];
    for (name, got, want) in fields {
        let close = got == want || (got - want).abs() <= tolerance * want.abs().max(1.0);
        assert!(close, "{context}: {name} = {got}, direct computation {want}");
    }
}

#[test]
fn sums_match_direct_computation() {
    let mut rng = StdRng::seed_from_u64(19);
    for loss in LOSSES {
        for reg in regularisers() {
            for rows in [3, 10, 21] {
                let update = OutputUpdate { loss, weight: 0.25, reg, gamma: 0.7, alpha: 0.6 };
                let (old, u, labels) = random_tile(&mut rng, rows, 9, 1.5);
                let mut new = old.clone();
                let got = f64::output_v_update(&update, &mut new, &u, &labels, rows);
                let want = direct_sums(&update, &old, &new, &u, &labels, rows);
                assert_sums_close(got, want, 1e-12, &format!("f64 {update:?} rows {rows}"));

                let old32: Vec<f32> = old.iter().map(|&x| x as f32).collect();
                let u32: Vec<f32> = u.iter().map(|&x| x as f32).collect();
                let mut new32 = old32.clone();
                let got = f32::output_v_update(&update, &mut new32, &u32, &labels, rows);
                let want = direct_sums(&update, &old32, &new32, &u32, &labels, rows);
                assert_sums_close(got, want, 1e-5, &format!("f32 {update:?} rows {rows}"));
            }
        }
    }
}

#[test]
fn squared_simd_matches_scalar() {
    let mut rng = StdRng::seed_from_u64(23);
    for rows in 0..=53 {
        for weight in [1.0, 0.125] {
            let columns = 5;
            let update =
                OutputUpdate { loss: Loss::Squared, weight, reg: ActivationRegulariser::None, gamma: 0.7, alpha: 0.2 };
            let (old, u, labels) = random_tile(&mut rng, rows, columns, 2.0);
            let old: Vec<f32> = old.iter().map(|&x| x as f32).collect();
            let u: Vec<f32> = u.iter().map(|&x| x as f32).collect();

            let mut fused = old.clone();
            let got = f32::output_v_update(&update, &mut fused, &u, &labels, rows);
            let mut scalar = old.clone();
            let want = reference::update_tile(&update, &mut scalar, &u, &labels, rows);

            for (i, (&a, &b)) in fused.iter().zip(&scalar).enumerate() {
                let tolerance = 4.0 * f32::EPSILON * (1.0 + b.abs());
                assert!((a - b).abs() <= tolerance, "rows {rows}, weight {weight}, entry {i}: fused {a}, scalar {b}");
            }
            assert_sums_close(got, want, 1e-5, &format!("rows {rows}, weight {weight}"));
        }
    }
}

#[test]
fn loss_value_matches_naive() {
    let mut rng = StdRng::seed_from_u64(29);
    let rows = 4;
    let (v, _, labels) = random_tile(&mut rng, rows, 6, 3.0);
    for loss in LOSSES {
        let mut want = 0.0;
        for (c, column) in v.chunks(rows).enumerate() {
            let label = labels[c] as usize;
            for (r, &x) in column.iter().enumerate() {
                let y = target(loss, r, label);
                want += match loss {
                    Loss::Squared => 0.5 * (x - y) * (x - y),
                    Loss::Hinge => (1.0 - y * x).max(0.0),
                    Loss::Logistic => (1.0 + (-y * x).exp()).ln(),
                    Loss::CrossEntropy => -y * (x.exp() / column.iter().map(|z| z.exp()).sum::<f64>()).ln(),
                };
            }
        }
        let got = f64::loss_value(loss, 0.5, &v, &labels, rows);
        assert!((got - 0.5 * want).abs() < 1e-12 * want.abs().max(1.0), "{loss:?}: {got}, naive {}", 0.5 * want);
    }
}

#[test]
fn bound_only_for_prox_linear_losses() {
    assert_eq!(prox_linear_bound(Loss::Squared, 1.0, 0.1), None);
    assert_eq!(prox_linear_bound(Loss::Hinge, 1.0, 0.1), None);
    assert_eq!(prox_linear_bound(Loss::CrossEntropy, 1.0, 0.1), Some(0.2));
    assert_eq!(prox_linear_bound(Loss::Logistic, 2.0, 0.1), Some(0.2));
    assert_eq!(prox_linear_bound(Loss::CrossEntropy, 1.0, 5.0), Some(0.0));
}

#[test]
fn validate_rejects_small_alpha() {
    let update = OutputUpdate {
        loss: Loss::CrossEntropy,
        weight: 1.0,
        reg: ActivationRegulariser::None,
        gamma: 0.1,
        alpha: 0.2,
    };
    let error = update.validate().unwrap_err();
    assert!(matches!(error, OutputUpdateError::AlphaBelowBound { .. }), "{error:?}");
    assert!(error.to_string().contains("0.2"), "message does not name the bound: {error}");
    assert_eq!(OutputUpdate { alpha: 0.2001, ..update }.validate(), Ok(()));
    assert!(OutputUpdate { weight: 0.0, ..update }.validate().is_err());
    assert!(OutputUpdate { gamma: f64::NAN, ..update }.validate().is_err());
    assert!(OutputUpdate { loss: Loss::Squared, alpha: 0.0, ..update }.validate().is_ok());
}
