//! The objective never increases: after every block update, over many iterations.

mod common;

use bcdnn::{Config, Trainer};

/// Relative slack for rounding in an `f64` evaluation of `Lbar`.
const F64_SLACK: f64 = 1e-11;

#[test]
fn objective_never_increases_after_any_block() {
    let data = common::random_dataset(90, 6, 3, 7);
    // Widths force both forms of the activation update: 8 -> 12 is direct, 12 -> 5 and
    // 5 -> 3 use Woodbury.
    let config = Config::builder(6, &[8, 12, 5], 3).seed(3).threads(2).tile_width(16).build().unwrap();
    let mut trainer: Trainer<f64> = Trainer::new(config, data.view()).unwrap();
    let schedule = trainer.schedule().to_vec();
    let mut last = trainer.objective().total();
    for iteration in 1..=30 {
        for &block in &schedule {
            trainer.update_block(block).unwrap();
            let value = trainer.objective().total();
            assert!(
                value <= last * (1.0 + F64_SLACK),
                "iteration {iteration}, block {block:?}: Lbar rose from {last:.15e} to {value:.15e}"
            );
            last = value;
        }
    }
}

#[test]
fn objective_decrease_is_sufficient_per_iteration() {
    // Lbar(P^{k-1}) - Lbar(P^k) >= a ||P^k - P^{k-1}||^2 with a = min(alpha, gamma) / 2.
    let data = common::random_dataset(70, 5, 4, 11);
    let config =
        Config::builder(5, &[9, 9, 6], 4).alpha(2.0).gamma(1.5).seed(5).threads(1).tile_width(32).build().unwrap();
    let a = 0.5 * 1.5f64.min(2.0);
    let mut trainer: Trainer<f64> = Trainer::new(config, data.view()).unwrap();
    let mut last = trainer.objective().total();
    for _ in 0..30 {
        let report = trainer.step().unwrap();
        let value = trainer.objective().total();
        let decrease = last - value;
        let bound = a * report.step_total();
        assert!(
            decrease >= bound * (1.0 - 1e-9) - last * F64_SLACK,
            "iteration {}: decrease {decrease:e} below a ||P^k - P^(k-1)||^2 = {bound:e}",
            report.iteration
        );
        last = value;
    }
}

#[test]
fn accumulated_objective_matches_explicit_evaluation() {
    let data = common::random_dataset(50, 4, 3, 2);
    let config = Config::builder(4, &[7, 6], 3).alpha(3.0).seed(9).threads(2).tile_width(8).build().unwrap();
    let mut trainer: Trainer<f64> = Trainer::new(config, data.view()).unwrap();
    let mut explicit = trainer.objective();
    for _ in 0..10 {
        let report = trainer.step().unwrap();
        let accumulated = report.previous_objective.expect("backward order accumulates the objective");
        for (name, got, want) in [
            ("loss", accumulated.loss, explicit.loss),
            ("activation coupling", accumulated.activation_coupling, explicit.activation_coupling),
            ("pre-activation coupling", accumulated.preactivation_coupling, explicit.preactivation_coupling),
        ] {
            assert!(
                (got - want).abs() <= 1e-10 * explicit.total(),
                "iteration {}: accumulated {name} {got:e} differs from explicit {want:e}",
                report.iteration
            );
        }
        explicit = trainer.objective();
    }
}

#[test]
fn f32_objective_decreases_over_iterations() {
    let data = common::random_dataset(300, 10, 4, 1);
    let config = Config::builder(10, &[32, 32, 16], 4).seed(1).threads(2).tile_width(64).build().unwrap();
    let mut trainer: Trainer<f32> = Trainer::new(config, data.view()).unwrap();
    let mut last = trainer.objective().total();
    let first = last;
    for iteration in 1..=20 {
        trainer.step().unwrap();
        let value = trainer.objective().total();
        // f32 products over 300 samples carry relative errors near 1e-5.
        assert!(value <= last * (1.0 + 1e-4), "iteration {iteration}: Lbar rose from {last} to {value}");
        last = value;
    }
    assert!(last < 0.9 * first, "20 iterations lowered Lbar only from {first} to {last}");
}
