//! Each block update is the exact minimiser of its block problem.
//!
//! For a block `B` with proximal weight `alpha_B` (0 for hidden activations), the update
//! minimises `f(B) = Lbar(B) + alpha_B / 2 ||B - B^old||^2`. At the update, `f` must have a
//! zero directional derivative along random directions (central differences) and no random
//! perturbation may lower it. Everything runs in `f64`.

mod common;

use bcdnn::{Activation, Block, Config, Loss, Trainer};
use rand::{Rng, SeedableRng};

/// Copies the values of one block out of the trainer.
fn block_values(trainer: &mut Trainer<f64>, block: Block) -> Vec<f64> {
    let (network, u, v) = trainer.state_mut();
    match block {
        Block::Activation(l) => v[l].as_slice().to_vec(),
        Block::PreActivation(l) => u[l].as_slice().to_vec(),
        Block::Weights(l) => {
            let mut values = network.weights(l).as_slice().to_vec();
            values.extend_from_slice(network.bias(l));
            values
        }
    }
}

/// Overwrites the values of one block.
fn set_block_values(trainer: &mut Trainer<f64>, block: Block, values: &[f64]) {
    let (network, u, v) = trainer.state_mut();
    match block {
        Block::Activation(l) => v[l].as_mut_slice().copy_from_slice(values),
        Block::PreActivation(l) => u[l].as_mut_slice().copy_from_slice(values),
        Block::Weights(l) => {
            let (weights, bias) = network.layer_mut(l);
            let split = weights.as_slice().len();
            weights.as_mut_slice().copy_from_slice(&values[..split]);
            bias.copy_from_slice(&values[split..]);
        }
    }
}

/// Proximal weight of a block: `alpha` for weights, hidden pre-activations and the output
/// activations. Hidden activations and the output pre-activations have none, because they
/// are strongly convex on their own.
fn proximal_weight(config: &Config, block: Block) -> f64 {
    let output = block.layer() + 1 == config.depth();
    match block {
        Block::Activation(_) if !output => 0.0,
        Block::PreActivation(_) if output => 0.0,
        _ => config.layers[block.layer()].alpha,
    }
}

fn block_objective(trainer: &mut Trainer<f64>, block: Block, values: &[f64], old: &[f64], alpha: f64) -> f64 {
    set_block_values(trainer, block, values);
    let proximal: f64 = values.iter().zip(old).map(|(x, y)| (x - y) * (x - y)).sum();
    trainer.objective().total() + 0.5 * alpha * proximal
}

#[test]
fn every_block_update_is_exact_minimiser() {
    let data = common::random_dataset(40, 5, 3, 21);
    // 6 -> 9 takes the direct activation update, 9 -> 4 and 4 -> 3 the Woodbury form.
    let config = Config::builder(5, &[6, 9, 4], 3)
        .alpha(0.7)
        .gamma(1.3)
        .rho(0.9)
        .seed(4)
        .threads(2)
        .tile_width(16)
        .build()
        .unwrap();
    check_exact(config, &data, "relu / squared");
}

#[test]
fn exact_for_every_activation_loss_and_skip() {
    let data = common::random_dataset(30, 5, 3, 17);
    let activations = [
        Activation::Relu,
        Activation::LeakyRelu { slope: 0.2 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Softplus,
        Activation::Linear,
    ];
    for activation in activations {
        for loss in [Loss::Squared, Loss::Hinge] {
            for skip in [false, true] {
                // 6 -> 6 (direct form, may carry a skip), 6 -> 3 (Woodbury form).
                let mut builder = Config::builder(5, &[6, 6, 3], 3)
                    .activation(activation)
                    .loss(loss)
                    .alpha(0.8)
                    .gamma(1.2)
                    .rho(0.9)
                    .init_weight_scale(0.5)
                    .seed(6)
                    .threads(2)
                    .tile_width(8);
                if skip {
                    builder = builder.skip(2);
                }
                let case = format!("{} / {} / skip {skip}", activation.name(), loss.name());
                check_exact(builder.build().unwrap(), &data, &case);
            }
        }
    }
}

fn check_exact(config: Config, data: &bcdnn_data::Dataset, case: &str) {
    let smooth_activation = !matches!(config.activations[0], Activation::Relu | Activation::LeakyRelu { .. });
    let mut trainer: Trainer<f64> = Trainer::new(config.clone(), data.view()).unwrap();
    // Move away from the initial point so no block sits at a trivial optimum.
    for _ in 0..3 {
        trainer.step().unwrap();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let schedule = trainer.schedule().to_vec();
    for &block in &schedule {
        let old = block_values(&mut trainer, block);
        trainer.update_block(block).unwrap();
        let best = block_values(&mut trainer, block);
        let alpha = proximal_weight(&config, block);
        let f_best = block_objective(&mut trainer, block, &best, &old, alpha);

        for trial in 0..8 {
            let direction: Vec<f64> = (0..best.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
            let norm = direction.iter().map(|x| x * x).sum::<f64>().sqrt();
            let along = |t: f64| -> Vec<f64> { best.iter().zip(&direction).map(|(b, d)| b + t * d / norm).collect() };

            // Zero directional derivative, by central differences.
            let h = 1e-4;
            let plus = block_objective(&mut trainer, block, &along(h), &old, alpha);
            let minus = block_objective(&mut trainer, block, &along(-h), &old, alpha);
            let derivative = (plus - minus) / (2.0 * h);
            let scale = 1.0 + f_best.abs();
            // Non-smooth ReLU blocks can have a kink at the minimiser; there the one-sided
            // slopes are both >= 0 instead of the two-sided slope being 0.
            let smooth_tolerance = 1e-6 * scale;
            let output = block.layer() + 1 == config.depth();
            let at_kink = match block {
                Block::PreActivation(_) => !output && !smooth_activation,
                Block::Activation(_) => output && config.loss == Loss::Hinge,
                Block::Weights(_) => false,
            };
            if !at_kink {
                assert!(
                    derivative.abs() <= smooth_tolerance,
                    "{case}: block {block:?}, trial {trial}: directional derivative {derivative:e} at the update"
                );
            }

            // No perturbation lowers the block objective.
            for t in [1e-3, 1e-2, 1e-1, 1.0] {
                for sign in [1.0, -1.0] {
                    let value = block_objective(&mut trainer, block, &along(sign * t), &old, alpha);
                    assert!(
                        value >= f_best - 1e-9 * scale,
                        "{case}: block {block:?}, trial {trial}: step {} lowers f from {f_best:.12e} to {value:.12e}",
                        sign * t
                    );
                }
            }
        }
        set_block_values(&mut trainer, block, &best);
    }
}
