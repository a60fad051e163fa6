//! Every model of the class trains by descent: each combination of activation, loss,
//! regulariser, skip connection, algorithm and block order, on small random networks in
//! `f64`, with the objective evaluated explicitly after every block.

mod common;

use bcdnn::{
    Activation, ActivationRegulariser, Algorithm, Block, Config, InnerSolve, Loss, TrainError, Trainer, UpdateOrder,
    WeightRegulariser,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;

const ACTIVATIONS: [Activation; 6] = [
    Activation::Relu,
    Activation::LeakyRelu { slope: 0.1 },
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Softplus,
    Activation::Linear,
];

const LOSSES: [Loss; 4] = [Loss::Squared, Loss::Hinge, Loss::CrossEntropy, Loss::Logistic];

/// One regulariser at a time, on the weights or on the hidden activations.
#[derive(Clone, Copy, Debug)]
enum Regulariser {
    Weights(WeightRegulariser),
    Activations(ActivationRegulariser),
}

const REGULARISERS: [Regulariser; 9] = [
    Regulariser::Weights(WeightRegulariser::None),
    Regulariser::Weights(WeightRegulariser::L2 { lambda: 0.05 }),
    Regulariser::Weights(WeightRegulariser::L1 { lambda: 0.02 }),
    Regulariser::Weights(WeightRegulariser::ElasticNet { l1: 0.02, l2: 0.05 }),
    Regulariser::Weights(WeightRegulariser::NonNegative),
    Regulariser::Weights(WeightRegulariser::Box { lower: -0.3, upper: 0.3 }),
    Regulariser::Activations(ActivationRegulariser::L1 { lambda: 0.02 }),
    Regulariser::Activations(ActivationRegulariser::NonNegative),
    Regulariser::Activations(ActivationRegulariser::Box { lower: -0.5, upper: 1.5 }),
];

#[derive(Clone, Copy, Debug)]
enum Order {
    Backward,
    Forward,
    Shuffled,
}

/// Relative slack for rounding in an `f64` evaluation of `Lbar`.
const SLACK: f64 = 1e-9;

#[allow(clippy::too_many_arguments)]
fn config(
    activation: Activation,
    loss: Loss,
    reg: Regulariser,
    skip: bool,
    algorithm: Algorithm,
    order: Order,
    seed: u64,
) -> Config {
    // 5 -> 6 -> 6 -> 4 -> 3: layer 2 can carry a skip; 6 -> 6 takes the direct activation
    // update, 6 -> 4 and 4 -> 3 the Woodbury form.
    let mut builder = Config::builder(5, &[6, 6, 4], 3)
        .activation(activation)
        .loss(loss)
        .algorithm(algorithm)
        .alpha(1.0)
        .gamma(1.0)
        .rho(1.0)
        .init_weight_scale(0.5)
        .inner(InnerSolve { max_iterations: 30, tolerance: 1e-10 })
        .seed(seed)
        .threads(2)
        .tile_width(8);
    builder = match reg {
        Regulariser::Weights(r) => builder.weight_regulariser(r),
        Regulariser::Activations(r) => builder.activation_regulariser(r),
    };
    if skip {
        builder = builder.skip(2);
    }
    let base = builder.clone().build().expect("the base configuration is valid");
    let order = match order {
        Order::Backward => UpdateOrder::Backward,
        Order::Forward => UpdateOrder::Forward,
        Order::Shuffled => {
            let mut blocks = base.schedule();
            blocks.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            UpdateOrder::Custom(blocks)
        }
    };
    builder.order(order).build().expect("the configuration is valid")
}

#[test]
fn every_combination_descends() {
    let data = common::random_dataset(24, 5, 3, 5);
    let mut runs = 0;
    for (a, &activation) in ACTIVATIONS.iter().enumerate() {
        for &loss in &LOSSES {
            for (r, &reg) in REGULARISERS.iter().enumerate() {
                for skip in [false, true] {
                    for algorithm in [Algorithm::ThreeSplitting, Algorithm::TwoSplitting] {
                        for order in [Order::Backward, Order::Forward, Order::Shuffled] {
                            let seed = (a * 31 + r * 7 + runs) as u64;
                            let config = config(activation, loss, reg, skip, algorithm, order, seed);
                            let case = format!(
                                "{} / {} / {reg:?} / skip {skip} / {} / {order:?}",
                                activation.name(),
                                loss.name(),
                                algorithm.name()
                            );
                            check_descent(&config, &data, &case);
                            runs += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(runs, 6 * 4 * 9 * 2 * 2 * 3);
}

fn check_descent(config: &Config, data: &bcdnn_data::Dataset, case: &str) {
    let mut trainer: Trainer<f64> = Trainer::new(config.clone(), data.view()).unwrap();
    let schedule = trainer.schedule().to_vec();
    let mut last = trainer.objective().total();
    for iteration in 1..=20 {
        for &block in &schedule {
            let report = trainer.update_block(block).unwrap_or_else(|e| panic!("{case}: {block}: {e}"));
            let value = trainer.objective().total();
            let scale = if last.is_finite() { last.abs().max(1.0) } else { value.abs().max(1.0) };
            assert!(
                value <= last + SLACK * scale,
                "{case}: iteration {iteration}, block {block}: Lbar rose from {last:.15e} to {value:.15e}"
            );
            // The block's own account of the change agrees with the explicit evaluation.
            if last.is_finite() {
                let explicit = value - last;
                assert!(
                    (report.change() - explicit).abs() <= 1e-7 * scale,
                    "{case}: iteration {iteration}, block {block}: reported change {:e}, explicit {explicit:e}",
                    report.change()
                );
            }
            last = value;
        }
    }
}

#[test]
fn step_reports_no_block_increase() {
    let data = common::random_dataset(60, 5, 3, 8);
    for activation in ACTIVATIONS {
        let config = config(
            activation,
            Loss::Squared,
            Regulariser::Weights(WeightRegulariser::None),
            true,
            Algorithm::ThreeSplitting,
            Order::Backward,
            3,
        );
        let mut trainer: Trainer<f64> = Trainer::new(config, data.view()).unwrap();
        for _ in 0..10 {
            let report = trainer.step().unwrap();
            let scale = report.previous_objective.unwrap().total();
            assert!(
                report.largest_block_increase <= 1e-9 * scale,
                "{}: largest block increase {:e} on Lbar {scale:e}",
                activation.name(),
                report.largest_block_increase
            );
        }
    }
}

#[test]
fn accumulated_objective_matches_explicit() {
    let data = common::random_dataset(40, 5, 3, 4);
    for activation in ACTIVATIONS {
        for loss in LOSSES {
            let config = config(
                activation,
                loss,
                Regulariser::Activations(ActivationRegulariser::L1 { lambda: 0.01 }),
                true,
                Algorithm::ThreeSplitting,
                Order::Backward,
                9,
            );
            let mut trainer: Trainer<f64> = Trainer::new(config, data.view()).unwrap();
            let mut explicit = trainer.objective();
            for _ in 0..5 {
                let report = trainer.step().unwrap();
                let accumulated = report.previous_objective.unwrap();
                assert!(
                    (accumulated.total() - explicit.total()).abs() <= 1e-10 * explicit.total(),
                    "{} / {}: accumulated {accumulated:?}, explicit {explicit:?}",
                    activation.name(),
                    loss.name()
                );
                explicit = trainer.objective();
            }
        }
    }
}

#[test]
fn non_finite_state_stops_training() {
    let data = common::random_dataset(30, 5, 3, 2);
    for (layer, block) in [(2usize, Block::Activation(2)), (1, Block::PreActivation(1)), (0, Block::Weights(0))] {
        let config = Config::builder(5, &[6, 6, 4], 3).seed(1).threads(1).build().unwrap();
        let mut trainer: Trainer<f64> = Trainer::new(config, data.view()).unwrap();
        {
            let (network, u, v) = trainer.state_mut();
            match block {
                Block::Activation(l) => v[l].as_mut_slice()[3] = f64::NAN,
                Block::PreActivation(l) => u[l].as_mut_slice()[5] = f64::INFINITY,
                Block::Weights(l) => network.layer_mut(l).0.as_mut_slice()[0] = f64::NAN,
            }
        }
        let error = (0..3)
            .find_map(|_| trainer.step().err())
            .unwrap_or_else(|| panic!("{block}: three steps ran on a non-finite state without an error"));
        match error {
            TrainError::NonFinite { layer: reported, .. } => {
                assert!((1..=4).contains(&reported), "{block}: layer {reported}");
            }
            other => panic!("{block} (layer {layer}): expected a non-finite error, got {other}"),
        }
        assert!(error.to_string().contains("non-finite"), "{error}");
    }
}

/// Predicts classes by the plain forward pass `V_i = sigma_i(W_i V_{i-1} + b_i) + S_i V_{i-1}`,
/// written naively.
fn naive_predictions(trainer: &Trainer<f64>, config: &Config, features: &[f32], samples: usize) -> Vec<u32> {
    let network = trainer.network();
    let widths = &config.widths;
    (0..samples)
        .map(|j| {
            let mut a: Vec<f64> = features[j * widths[0]..(j + 1) * widths[0]].iter().map(|&x| x as f64).collect();
            for layer in 0..network.depth() {
                let w = network.weights(layer).view();
                let b = network.bias(layer);
                let next: Vec<f64> = (0..widths[layer + 1])
                    .map(|r| {
                        let z = b[r] + (0..widths[layer]).map(|c| w[(r, c)] * a[c]).sum::<f64>();
                        let skip = if config.has_skip(layer) { a[r] } else { 0.0 };
                        config.activation(layer).value(z) + skip
                    })
                    .collect();
                a = next;
            }
            let best = (0..a.len()).fold(0, |best, k| if a[k] > a[best] { k } else { best });
            best as u32
        })
        .collect()
}

#[test]
fn prediction_uses_trained_activations() {
    let data = common::random_dataset(50, 5, 3, 12);
    for activation in ACTIVATIONS {
        let config = config(
            activation,
            Loss::CrossEntropy,
            Regulariser::Weights(WeightRegulariser::None),
            true,
            Algorithm::ThreeSplitting,
            Order::Backward,
            2,
        );
        let mut trainer: Trainer<f64> = Trainer::new(config.clone(), data.view()).unwrap();
        for _ in 0..3 {
            trainer.step().unwrap();
        }
        let mut predicted = vec![0u32; 50];
        trainer.predict(data.view(), &mut predicted).unwrap();
        let expected = naive_predictions(&trainer, &config, data.view().features(), 50);
        assert_eq!(predicted, expected, "{}", activation.name());
        let correct = expected.iter().zip(data.view().labels()).filter(|(&p, &l)| p == l as u32).count();
        let evaluation = trainer.evaluate(data.view()).unwrap();
        assert_eq!(evaluation.correct, correct, "{}", activation.name());
    }
}

#[test]
fn exact_block_check_agrees() {
    let data = common::random_dataset(40, 5, 3, 6);
    for activation in [Activation::Tanh, Activation::Relu] {
        let config = config(
            activation,
            Loss::Logistic,
            Regulariser::Weights(WeightRegulariser::L2 { lambda: 0.01 }),
            true,
            Algorithm::ThreeSplitting,
            Order::Backward,
            4,
        );
        let mut accounted: Trainer<f64> = Trainer::new(config.clone(), data.view()).unwrap();
        let mut checked: Trainer<f64> = Trainer::new(config, data.view()).unwrap();
        checked.set_exact_block_check(true);
        for _ in 0..5 {
            let a = accounted.step().unwrap();
            let c = checked.step().unwrap();
            assert!(!a.exact_block_check);
            assert!(c.exact_block_check);
            // The check only observes: both trainers follow the same iterates.
            assert_eq!(a.step_total(), c.step_total(), "{}", activation.name());
            let scale = a.previous_objective.unwrap().total();
            for increase in [a.largest_block_increase, c.largest_block_increase] {
                assert!(increase <= 1e-9 * scale, "{}: block increase {increase:e}", activation.name());
            }
        }
    }
}

#[test]
fn f32_accumulated_objective_smooth_activations() {
    // In f32 the W and V blocks' own coupling values carry rounding far above Lbar late in
    // training, so the accumulated objective must come from the U passes' explicit sums.
    let data = common::random_dataset(1500, 40, 10, 3);
    for activation in [Activation::Softplus, Activation::Tanh] {
        let config =
            Config::builder(40, &[64; 4], 10).activation(activation).threads(2).tile_width(128).build().unwrap();
        let mut trainer: Trainer<f32> = Trainer::new(config, data.view()).unwrap();
        let mut explicit = trainer.objective();
        for _ in 0..25 {
            let report = trainer.step().unwrap();
            let accumulated = report.previous_objective.unwrap();
            let scale = explicit.total();
            assert!(
                (accumulated.preactivation_coupling - explicit.preactivation_coupling).abs() <= 1e-4 * scale,
                "{} iteration {}: accumulated {accumulated:?}, explicit {explicit:?}",
                activation.name(),
                report.iteration
            );
            explicit = trainer.objective();
        }
    }
}
