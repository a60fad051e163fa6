//! The SGD baseline: exact gradients, descent, configuration checks and reproducibility.

mod common;

use bcdnn::sgd::{SgdConfig, SgdConfigError, SgdError, SgdTrainer};
use bcdnn::Network;
use bcdnn_data::Dataset;
use bcdnn_kernels::ColMatrix;
use rand::{Rng, SeedableRng};

fn config(widths: &[usize], learning_rate: f64, batch_size: usize, seed: u64) -> SgdConfig {
    SgdConfig { widths: widths.to_vec(), learning_rate, batch_size, seed, threads: 2 }
}

/// `n` points uniform in `[0, 1)^features`, each labelled with the index of its largest
/// coordinate, so the classes are separated by hyperplanes through the diagonal.
fn argmax_dataset(n: usize, features: usize, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n * features).map(|_| rng.random::<f32>()).collect();
    let y: Vec<u8> = x
        .chunks_exact(features)
        .map(|sample| {
            let mut best = 0;
            for (i, &value) in sample.iter().enumerate() {
                if value > sample[best] {
                    best = i;
                }
            }
            best as u8
        })
        .collect();
    Dataset::from_vecs(x, y, features, features).expect("synthetic dataset is valid")
}

/// Error of a finite difference `approximate` against the backpropagated `exact`, relative
/// to `|exact|`, or absolute for `|exact| < 1e-3`.
fn gradient_error(exact: f64, approximate: f64) -> f64 {
    (exact - approximate).abs() / exact.abs().max(1e-3)
}

/// `(L(p + h) - L(p - h)) / 2h` for the one parameter `p` that `parameter` points to; leaves
/// `p` at its original value.
fn central_difference<F>(trainer: &mut SgdTrainer<'_, f64>, samples: &[usize], h: f64, parameter: F) -> f64
where
    F: for<'n> Fn(&'n mut Network<f64>) -> &'n mut f64,
{
    let original = *parameter(trainer.network_mut());
    *parameter(trainer.network_mut()) = original + h;
    let plus = trainer.gradients(samples).loss;
    *parameter(trainer.network_mut()) = original - h;
    let minus = trainer.gradients(samples).loss;
    *parameter(trainer.network_mut()) = original;
    (plus - minus) / (2.0 * h)
}

#[test]
fn gradients_match_central_differences() {
    let data = common::random_dataset(12, 5, 3, 21);
    let widths = [5, 7, 6, 3];
    let mut trainer: SgdTrainer<f64> = SgdTrainer::new(config(&widths, 0.1, 8, 4), data.view()).unwrap();
    // Weights of scale 0.5 rather than the 0.01 of the initialisation, so the first layers'
    // gradients are large enough for a finite difference to resolve them.
    *trainer.network_mut() = Network::init(&widths, 9, 0.5, 0.1);
    let samples = [0, 3, 4, 7, 9, 11];
    let h = 1e-6;

    let gradients = trainer.gradients(&samples);
    let weight_gradients: Vec<ColMatrix<f64>> = gradients.weights.to_vec();
    let bias_gradients: Vec<Vec<f64>> = gradients.biases.to_vec();
    let mut checked = 0;
    let mut worst = 0.0f64;

    for layer in 0..widths.len() - 1 {
        for (entry, &exact) in weight_gradients[layer].as_slice().iter().enumerate() {
            let approximate = central_difference(&mut trainer, &samples, h, |network| {
                &mut network.layer_mut(layer).0.as_mut_slice()[entry]
            });
            let error = gradient_error(exact, approximate);
            assert!(error <= 1e-6, "dL/dW_{layer}[{entry}]: backpropagation {exact:e}, relative error {error:e}");
            worst = worst.max(error);
            checked += 1;
        }
        for (entry, &exact) in bias_gradients[layer].iter().enumerate() {
            let approximate =
                central_difference(&mut trainer, &samples, h, |network| &mut network.layer_mut(layer).1[entry]);
            let error = gradient_error(exact, approximate);
            assert!(error <= 1e-6, "dL/db_{layer}[{entry}]: backpropagation {exact:e}, relative error {error:e}");
            worst = worst.max(error);
            checked += 1;
        }
    }
    assert_eq!(checked, 5 * 7 + 7 + 7 * 6 + 6 + 6 * 3 + 3);
    eprintln!("{checked} gradient entries checked, largest relative error {worst:e}");
}

#[test]
fn gradients_leave_weights_unchanged() {
    let data = common::random_dataset(10, 4, 3, 2);
    let mut trainer: SgdTrainer<f64> = SgdTrainer::new(config(&[4, 6, 3], 0.1, 10, 1), data.view()).unwrap();
    let before = trainer.network().clone();
    let loss = trainer.gradients(&[1, 2, 5]).loss;
    assert!(loss.is_finite(), "batch loss {loss}");
    assert!(loss > 0.0, "batch loss {loss}");
    assert_eq!(trainer.network(), &before);
}

#[test]
fn full_batch_epoch_steps_along_negative_gradient() {
    // With the batch as large as the training set, one epoch is one gradient step on all
    // samples, so it must land on W - eta grad L of the initial weights.
    let data = common::random_dataset(16, 4, 3, 5);
    let learning_rate = 0.3;
    let trainer_config = config(&[4, 8, 5, 3], learning_rate, 64, 7);
    let mut reference: SgdTrainer<f64> = SgdTrainer::new(trainer_config.clone(), data.view()).unwrap();
    let all: Vec<usize> = (0..16).collect();
    let mut expected = reference.network().clone();
    let gradients = reference.gradients(&all);
    let initial_loss = gradients.loss;
    for layer in 0..expected.depth() {
        let (weights, bias) = expected.layer_mut(layer);
        for (w, g) in weights.as_mut_slice().iter_mut().zip(gradients.weights[layer].as_slice()) {
            *w -= learning_rate * g;
        }
        for (b, g) in bias.iter_mut().zip(&gradients.biases[layer]) {
            *b -= learning_rate * g;
        }
    }

    let mut trainer: SgdTrainer<f64> = SgdTrainer::new(trainer_config, data.view()).unwrap();
    let report = trainer.epoch();
    assert_eq!(report.epoch, 1);
    assert!((report.mean_batch_loss - initial_loss).abs() <= 1e-12 * initial_loss, "{report:?} vs {initial_loss}");
    for layer in 0..expected.depth() {
        let pairs = trainer.network().weights(layer).as_slice().iter().zip(expected.weights(layer).as_slice());
        for (entry, (&actual, &wanted)) in pairs.enumerate() {
            assert!(
                (actual - wanted).abs() <= 1e-13,
                "W_{layer}[{entry}]: {actual} after the epoch, expected {wanted}"
            );
        }
        for (entry, (&actual, &wanted)) in trainer.network().bias(layer).iter().zip(expected.bias(layer)).enumerate() {
            assert!(
                (actual - wanted).abs() <= 1e-13,
                "b_{layer}[{entry}]: {actual} after the epoch, expected {wanted}"
            );
        }
    }
}

/// Trains on the argmax problem and returns the first and last epoch's mean batch loss and
/// the final training accuracy.
fn train_argmax<T: bcdnn_kernels::Real>(epochs: usize) -> (f64, f64, f64) {
    let data = argmax_dataset(300, 3, 17);
    let mut trainer: SgdTrainer<T> = SgdTrainer::new(config(&[3, 32, 3], 0.5, 10, 3), data.view()).unwrap();
    let first = trainer.epoch().mean_batch_loss;
    let mut last = first;
    for _ in 1..epochs {
        last = trainer.epoch().mean_batch_loss;
    }
    let accuracy = trainer.evaluate(data.view()).unwrap().accuracy;
    (first, last, accuracy)
}

#[test]
fn loss_decreases_on_separable_problem_f64() {
    let (first, last, accuracy) = train_argmax::<f64>(40);
    assert!(last < 0.5 * first, "mean batch loss went from {first} to {last}");
    assert!(accuracy >= 0.9, "training accuracy {accuracy} after 40 epochs");
}

#[test]
fn loss_decreases_on_separable_problem_f32() {
    let (first, last, accuracy) = train_argmax::<f32>(40);
    assert!(last < 0.5 * first, "mean batch loss went from {first} to {last}");
    assert!(accuracy >= 0.9, "training accuracy {accuracy} after 40 epochs");
}

#[test]
fn evaluation_matches_mean_batch_loss_definition() {
    // Evaluation reports the summed loss; L_B of the whole set is its mean.
    let data = common::random_dataset(20, 4, 3, 8);
    let mut trainer: SgdTrainer<f64> = SgdTrainer::new(config(&[4, 5, 3], 0.1, 20, 2), data.view()).unwrap();
    let all: Vec<usize> = (0..20).collect();
    let mean = trainer.gradients(&all).loss;
    let evaluation = trainer.evaluate(data.view()).unwrap();
    assert_eq!(evaluation.samples, 20);
    assert!((evaluation.squared_loss / 20.0 - mean).abs() <= 1e-12 * mean, "{evaluation:?} vs mean {mean}");
}

#[test]
fn config_rejections() {
    let data = common::random_dataset(8, 4, 3, 1);
    let base = config(&[4, 5, 3], 0.1, 4, 0);
    let cases: Vec<(SgdConfig, SgdConfigError)> = vec![
        (SgdConfig { widths: vec![4], ..base.clone() }, SgdConfigError::TooFewWidths { count: 1 }),
        (SgdConfig { widths: vec![4, 0, 3], ..base.clone() }, SgdConfigError::ZeroWidth { layer: 1 }),
        (SgdConfig { learning_rate: 0.0, ..base.clone() }, SgdConfigError::InvalidLearningRate { value: 0.0 }),
        (SgdConfig { learning_rate: -0.1, ..base.clone() }, SgdConfigError::InvalidLearningRate { value: -0.1 }),
        (
            SgdConfig { learning_rate: f64::INFINITY, ..base.clone() },
            SgdConfigError::InvalidLearningRate { value: f64::INFINITY },
        ),
        (SgdConfig { batch_size: 0, ..base.clone() }, SgdConfigError::ZeroBatchSize),
    ];
    for (bad, expected) in cases {
        assert_eq!(bad.validate(), Err(expected.clone()), "{bad:?}");
        match SgdTrainer::<f64>::new(bad, data.view()) {
            Err(SgdError::Config(found)) => assert_eq!(found, expected),
            Err(other) => panic!("expected {expected:?}, got {other:?}"),
            Ok(_) => panic!("expected {expected:?}, got a trainer"),
        }
    }

    let nan = SgdConfig { learning_rate: f64::NAN, ..base.clone() };
    assert!(matches!(nan.validate(), Err(SgdConfigError::InvalidLearningRate { value }) if value.is_nan()));
    assert_eq!(base.validate(), Ok(()));
}

#[test]
fn data_mismatch_rejections() {
    let data = common::random_dataset(8, 4, 3, 1);
    let wrong_input = SgdTrainer::<f32>::new(config(&[5, 5, 3], 0.1, 4, 0), data.view());
    assert!(matches!(wrong_input, Err(SgdError::InputWidthMismatch { expected: 5, found: 4 })));
    let wrong_classes = SgdTrainer::<f32>::new(config(&[4, 5, 2], 0.1, 4, 0), data.view());
    assert!(matches!(wrong_classes, Err(SgdError::ClassCountMismatch { expected: 2, found: 3 })));

    let empty = Dataset::from_vecs(Vec::new(), Vec::new(), 4, 3).unwrap();
    let no_samples = SgdTrainer::<f32>::new(config(&[4, 5, 3], 0.1, 4, 0), empty.view());
    assert!(matches!(no_samples, Err(SgdError::EmptyTrainingSet)));

    let mut trainer = SgdTrainer::<f32>::new(config(&[4, 5, 3], 0.1, 4, 0), data.view()).unwrap();
    let other = common::random_dataset(8, 6, 3, 1);
    assert!(matches!(trainer.evaluate(other.view()), Err(SgdError::EvaluationWidthMismatch { expected: 4, found: 6 })));
}

#[test]
#[should_panic(expected = "outside the training set")]
fn gradients_reject_sample_outside_training_set() {
    let data = common::random_dataset(8, 4, 3, 1);
    let mut trainer = SgdTrainer::<f64>::new(config(&[4, 5, 3], 0.1, 4, 0), data.view()).unwrap();
    trainer.gradients(&[0, 8]);
}

#[test]
#[should_panic(expected = "does not fit")]
fn gradients_reject_batch_larger_than_buffers() {
    let data = common::random_dataset(8, 4, 3, 1);
    let mut trainer = SgdTrainer::<f64>::new(config(&[4, 5, 3], 0.1, 4, 0), data.view()).unwrap();
    trainer.gradients(&[0, 1, 2, 3, 4]);
}

#[test]
fn same_seed_gives_identical_weights() {
    let data = argmax_dataset(90, 3, 4);
    let run = |seed: u64| {
        let mut trainer: SgdTrainer<f32> = SgdTrainer::new(config(&[3, 12, 8, 3], 0.2, 7, seed), data.view()).unwrap();
        let losses: Vec<f64> = (0..3).map(|_| trainer.epoch().mean_batch_loss).collect();
        (trainer.network().clone(), losses)
    };
    let (first, first_losses) = run(11);
    let (second, second_losses) = run(11);
    assert_eq!(first, second);
    assert_eq!(first_losses, second_losses);

    let (other, _) = run(12);
    assert_ne!(first, other);
}

#[test]
fn different_seeds_shuffle_differently() {
    // Same initial weights (set by hand), different seeds: only the shuffle differs, and
    // it must change the result.
    let data = argmax_dataset(40, 3, 6);
    let run = |seed: u64| {
        let mut trainer: SgdTrainer<f64> = SgdTrainer::new(config(&[3, 6, 3], 0.2, 5, seed), data.view()).unwrap();
        *trainer.network_mut() = Network::init(&[3, 6, 3], 100, 0.3, 0.1);
        trainer.epoch();
        trainer.network().clone()
    };
    assert_ne!(run(1), run(2));
}
