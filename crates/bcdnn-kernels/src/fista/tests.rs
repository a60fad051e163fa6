//! Tests of the FISTA solvers against the Cholesky solution, coordinate descent, projected
//! gradient and the optimality conditions of the `l1` problem.

use faer::{Mat, Par};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{estimate_lambda_max, fista_columns, fista_weights, FistaScratch, InnerSolve, WeightProblem};
use crate::model::{ActivationRegulariser, WeightRegulariser};
use crate::spd::SpdFactor;

const TIGHT: InnerSolve = InnerSolve { max_iterations: 20_000, tolerance: 1e-13 };

/// A weight-update problem built from random data: `G = Vt Vt^T`, `C = U Vt^T` with
/// `Vt = [V; 1^T]`, and a random `Wt_old`.
struct WeightData {
    d: usize,
    m1: usize,
    gram: Mat<f64>,
    cross: Mat<f64>,
    previous: Vec<f64>,
}

impl WeightData {
    fn new(seed: u64, d: usize, m: usize, n: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let m1 = m + 1;
        let vt = Mat::from_fn(m1, n, |i, _| if i == m { 1.0 } else { rng.random_range(-1.0..1.0) });
        let u = Mat::from_fn(d, n, |_, _| rng.random_range(-1.0..1.0));
        let gram = &vt * vt.transpose();
        let cross = &u * vt.transpose();
        let previous = (0..d * m1).map(|_| rng.random_range(-0.5..0.5)).collect();
        Self { d, m1, gram, cross, previous }
    }

    fn problem(&self, rho: f64, alpha: f64, reg: WeightRegulariser) -> WeightProblem<'_> {
        WeightProblem {
            gram: self.gram.as_ref(),
            cross: self.cross.as_ref(),
            previous: &self.previous,
            rho,
            alpha,
            reg,
        }
    }

    /// Computes the gradient of the smooth part, `rho (Wt G - C) + alpha (Wt - Wt_old)`, column-major.
    fn gradient(&self, wt: &[f64], rho: f64, alpha: f64) -> Vec<f64> {
        let w = Mat::from_fn(self.d, self.m1, |i, j| wt[j * self.d + i]);
        let product = &w * &self.gram;
        let mut out = vec![0.0; wt.len()];
        for j in 0..self.m1 {
            for i in 0..self.d {
                let k = j * self.d + i;
                out[k] = rho * (product[(i, j)] - self.cross[(i, j)]) + alpha * (wt[k] - self.previous[k]);
            }
        }
        out
    }
}

fn solve_weights(data: &WeightData, rho: f64, alpha: f64, reg: WeightRegulariser, solve: &InnerSolve) -> Vec<f64> {
    let mut scratch = FistaScratch::new(data.d, data.m1);
    let mut wt = vec![0.0; data.d * data.m1];
    let report = fista_weights(&mut wt, &data.problem(rho, alpha, reg), solve, &mut scratch);
    assert!(report.objective_after <= report.objective_before, "{reg:?}: {report:?}");
    wt
}

#[test]
fn weights_l2_matches_cholesky() {
    let data = WeightData::new(1, 4, 6, 30);
    let (rho, alpha, lambda) = (0.8, 0.3, 0.5);
    let wt = solve_weights(&data, rho, alpha, WeightRegulariser::L2 { lambda }, &TIGHT);

    // H Wt^T = (alpha Wt_old + rho C)^T with H = alpha I + rho G + lambda on the first m
    // diagonal entries.
    let (d, m1) = (data.d, data.m1);
    let mut factor = SpdFactor::new(m1, Par::Seq);
    let mut h = factor.matrix_mut(m1);
    for j in 0..m1 {
        for i in 0..m1 {
            let diagonal = if i == j { alpha + if i + 1 < m1 { lambda } else { 0.0 } } else { 0.0 };
            h[(i, j)] = rho * data.gram[(i, j)] + diagonal;
        }
    }
    factor.factor(Par::Seq).unwrap();
    let mut rhs = vec![0.0; m1 * d];
    for r in 0..d {
        for j in 0..m1 {
            rhs[r * m1 + j] = alpha * data.previous[j * d + r] + rho * data.cross[(r, j)];
        }
    }
    factor.solve_columns(&mut rhs, 1);
    for r in 0..d {
        for j in 0..m1 {
            let (got, want) = (wt[j * d + r], rhs[r * m1 + j]);
            assert!((got - want).abs() < 1e-8, "entry ({r}, {j}): FISTA {got}, Cholesky {want}");
        }
    }
}

#[test]
fn weights_l1_satisfies_kkt() {
    let data = WeightData::new(2, 5, 7, 40);
    let (rho, alpha, lambda) = (1.0, 0.2, 3.0);
    let wt = solve_weights(&data, rho, alpha, WeightRegulariser::L1 { lambda }, &TIGHT);
    let gradient = data.gradient(&wt, rho, alpha);
    let bias_start = data.d * (data.m1 - 1);
    let zeros = wt[..bias_start].iter().filter(|&&x| x == 0.0).count();
    assert!(zeros > 0, "lambda {lambda} left no zero weight, so the test does not reach the zero case");
    for (k, (&w, &g)) in wt.iter().zip(&gradient).enumerate() {
        if k >= bias_start {
            assert!(g.abs() < 1e-7, "bias entry {k}: gradient {g} is not zero");
        } else if w == 0.0 {
            assert!(g.abs() <= lambda + 1e-7, "zero weight {k}: |gradient| {} exceeds lambda {lambda}", g.abs());
        } else {
            let residual = g + lambda * w.signum();
            assert!(residual.abs() < 1e-7, "weight {k} = {w}: gradient + lambda sign(w) = {residual}");
        }
    }
}

/// Runs 50000 proximal gradient steps with the exact Lipschitz constant.
fn proximal_gradient_weights(data: &WeightData, rho: f64, alpha: f64, reg: WeightRegulariser) -> Vec<f64> {
    let eigenvalues = data.gram.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
    let lipschitz = rho * eigenvalues.iter().cloned().fold(0.0, f64::max) + alpha;
    let bias_start = data.d * (data.m1 - 1);
    let mut wt = data.previous.clone();
    for _ in 0..50_000 {
        let gradient = data.gradient(&wt, rho, alpha);
        for (k, (w, g)) in wt.iter_mut().zip(&gradient).enumerate() {
            let z = *w - g / lipschitz;
            *w = if k >= bias_start { z } else { reg.prox(z, 1.0 / lipschitz) };
        }
    }
    wt
}

#[test]
fn weights_match_proximal_gradient() {
    let data = WeightData::new(3, 3, 4, 12);
    let (rho, alpha) = (0.5, 0.4);
    for reg in [
        WeightRegulariser::NonNegative,
        WeightRegulariser::Box { lower: -0.1, upper: 0.2 },
        WeightRegulariser::ElasticNet { l1: 0.3, l2: 0.6 },
        WeightRegulariser::L1 { lambda: 0.2 },
    ] {
        let got = solve_weights(&data, rho, alpha, reg, &TIGHT);
        let want = proximal_gradient_weights(&data, rho, alpha, reg);
        let bias_start = data.d * (data.m1 - 1);
        for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-7, "{reg:?} entry {k}: FISTA {g}, proximal gradient {w}");
            if k < bias_start {
                assert!(reg.value(g).is_finite(), "{reg:?} entry {k} = {g} is infeasible");
            }
        }
    }
}

#[test]
fn weights_objective_never_increases() {
    let data = WeightData::new(4, 4, 5, 20);
    let reg = WeightRegulariser::ElasticNet { l1: 0.5, l2: 0.1 };
    let mut scratch = FistaScratch::new(data.d, data.m1);
    let mut last = f64::INFINITY;
    for iterations in 1..40 {
        let solve = InnerSolve { max_iterations: iterations, tolerance: 0.0 };
        let mut wt = vec![0.0; data.d * data.m1];
        let report = fista_weights(&mut wt, &data.problem(1.0, 0.1, reg), &solve, &mut scratch);
        assert!(report.objective_after <= report.objective_before, "{iterations} iterations: {report:?}");
        assert!(report.objective_after <= last, "{iterations} iterations: {} after {last}", report.objective_after);
        last = report.objective_after;
    }
}

/// Returns a random symmetric positive definite `rows x rows` matrix `B B^T + shift I`.
fn random_spd(rng: &mut StdRng, rows: usize, shift: f64) -> Mat<f64> {
    let b = Mat::from_fn(rows, rows, |_, _| rng.random_range(-1.0..1.0));
    let mut a = &b * b.transpose();
    for i in 0..rows {
        a[(i, i)] += shift;
    }
    a
}

/// Applies `a` to each column of a block.
fn apply_columns<T: crate::Real>(a: &Mat<f64>, x: &[T], y: &mut [T]) {
    let rows = a.nrows();
    for (x, y) in x.chunks_exact(rows).zip(y.chunks_exact_mut(rows)) {
        for i in 0..rows {
            let sum: f64 = (0..rows).map(|j| a[(i, j)] * x[j].to_f64()).sum();
            y[i] = T::from_f64(sum);
        }
    }
}

/// Runs exact cyclic coordinate minimisation of `1/2 <x, A x> - <r, x> + s(x)` per column, run to
/// convergence.
fn coordinate_descent(a: &Mat<f64>, r: &[f64], reg: ActivationRegulariser) -> Vec<f64> {
    let rows = a.nrows();
    let mut x = vec![0.0; r.len()];
    for (x, r) in x.chunks_exact_mut(rows).zip(r.chunks_exact(rows)) {
        for _ in 0..20_000 {
            for i in 0..rows {
                let off_diagonal: f64 = (0..rows).filter(|&j| j != i).map(|j| a[(i, j)] * x[j]).sum();
                x[i] = reg.prox((r[i] - off_diagonal) / a[(i, i)], 1.0 / a[(i, i)]);
            }
        }
    }
    x
}

fn lambda_max(a: &Mat<f64>) -> f64 {
    a.self_adjoint_eigenvalues(faer::Side::Lower).unwrap().iter().cloned().fold(0.0, f64::max)
}

#[test]
fn columns_match_coordinate_descent() {
    let mut rng = StdRng::seed_from_u64(5);
    let (rows, width) = (6, 4);
    let a = random_spd(&mut rng, rows, 0.5);
    let lipschitz = lambda_max(&a);
    let r: Vec<f64> = (0..rows * width).map(|_| rng.random_range(-2.0..2.0)).collect();
    let mut scratch = FistaScratch::new(rows, width);
    for reg in [
        ActivationRegulariser::None,
        ActivationRegulariser::L1 { lambda: 0.7 },
        ActivationRegulariser::NonNegative,
        ActivationRegulariser::Box { lower: -0.3, upper: 0.4 },
    ] {
        let mut v = vec![0.0; rows * width];
        let report = fista_columns(&mut v, &r, |x, y| apply_columns(&a, x, y), lipschitz, reg, &TIGHT, &mut scratch);
        assert!(report.objective_after <= report.objective_before, "{reg:?}: {report:?}");
        let want = coordinate_descent(&a, &r, reg);
        for (k, (&got, &want)) in v.iter().zip(&want).enumerate() {
            assert!((got - want).abs() < 1e-7, "{reg:?} entry {k}: FISTA {got}, coordinate descent {want}");
            assert!(reg.value(got).is_finite(), "{reg:?} entry {k} = {got} is infeasible");
        }
    }
}

#[test]
fn columns_recover_from_small_lipschitz() {
    let mut rng = StdRng::seed_from_u64(6);
    let (rows, width) = (5, 3);
    let a = random_spd(&mut rng, rows, 0.2);
    let r: Vec<f64> = (0..rows * width).map(|_| rng.random_range(-1.0..1.0)).collect();
    let reg = ActivationRegulariser::L1 { lambda: 0.1 };
    let mut scratch = FistaScratch::new(rows, width);

    // A bound 100 times too small forces rejected steps and backtracking.
    let lipschitz = 0.01 * lambda_max(&a);
    let mut last = f64::INFINITY;
    for iterations in 1..30 {
        let mut v = vec![0.5; rows * width];
        let solve = InnerSolve { max_iterations: iterations, tolerance: 0.0 };
        let report = fista_columns(&mut v, &r, |x, y| apply_columns(&a, x, y), lipschitz, reg, &solve, &mut scratch);
        assert!(report.objective_after <= report.objective_before, "{iterations} iterations: {report:?}");
        assert!(report.objective_after <= last, "{iterations} iterations: {} after {last}", report.objective_after);
        last = report.objective_after;
    }

    let mut v = vec![0.5; rows * width];
    fista_columns(&mut v, &r, |x, y| apply_columns(&a, x, y), lipschitz, reg, &TIGHT, &mut scratch);
    let want = coordinate_descent(&a, &r, reg);
    for (k, (&got, &want)) in v.iter().zip(&want).enumerate() {
        assert!((got - want).abs() < 1e-7, "entry {k}: FISTA {got}, coordinate descent {want}");
    }
}

#[test]
fn columns_f32_close_to_f64() {
    let mut rng = StdRng::seed_from_u64(8);
    let (rows, width) = (8, 5);
    let a = random_spd(&mut rng, rows, 1.0);
    let lipschitz = lambda_max(&a);
    let r: Vec<f64> = (0..rows * width).map(|_| rng.random_range(-2.0..2.0)).collect();
    let r32: Vec<f32> = r.iter().map(|&x| x as f32).collect();
    let reg = ActivationRegulariser::NonNegative;
    let solve = InnerSolve { max_iterations: 2000, tolerance: 1e-6 };

    let mut v = vec![0.0f64; rows * width];
    fista_columns(
        &mut v,
        &r,
        |x, y| apply_columns(&a, x, y),
        lipschitz,
        reg,
        &TIGHT,
        &mut FistaScratch::new(rows, width),
    );
    let mut v32 = vec![0.0f32; rows * width];
    let report = fista_columns(
        &mut v32,
        &r32,
        |x, y| apply_columns(&a, x, y),
        lipschitz,
        reg,
        &solve,
        &mut FistaScratch::new(rows, width),
    );
    assert!(report.objective_after <= report.objective_before, "{report:?}");
    for (k, (&got, &want)) in v32.iter().zip(&v).enumerate() {
        assert!(got >= 0.0, "entry {k} = {got} is negative");
        // The objective is evaluated from an f32 `A x`, so it resolves the minimiser only to
        // about sqrt(f32::EPSILON) relative.
        assert!((got as f64 - want).abs() < 1e-3, "entry {k}: f32 {got}, f64 {want}");
    }
}

#[test]
fn lambda_max_estimate_brackets_eigenvalue() {
    let mut rng = StdRng::seed_from_u64(9);
    for rows in [1, 2, 7, 20] {
        let a = random_spd(&mut rng, rows, 0.1);
        let exact = lambda_max(&a);
        let mut work = vec![0.0; 2 * rows];
        let estimate = estimate_lambda_max(a.as_ref(), &mut work);
        assert!(estimate >= exact * (1.0 - 1e-9), "rows {rows}: estimate {estimate} below lambda_max {exact}");
        assert!(
            estimate <= 1.1 * exact * (1.0 + 1e-9),
            "rows {rows}: estimate {estimate} above 1.1 lambda_max {exact}"
        );
    }
}
