//! The majority fraction of an evaluation against predictions counted one by one.

mod common;

use bcdnn::{Config, Trainer};

/// Returns the largest number of samples predicted as one class, divided by the sample count.
fn majority_of(predictions: &[u32], classes: usize) -> f64 {
    let mut counts = vec![0usize; classes];
    for &p in predictions {
        counts[p as usize] += 1;
    }
    *counts.iter().max().unwrap() as f64 / predictions.len() as f64
}

#[test]
fn majority_fraction_matches_predictions() {
    let data = common::random_dataset(203, 5, 4, 11);
    for threads in [1, 2] {
        let config = Config::builder(5, &[8], 4).threads(threads).tile_width(16).build().unwrap();
        let mut trainer: Trainer<f32> = Trainer::new(config, data.view()).unwrap();
        for step in 0..3 {
            let mut predictions = vec![0u32; 203];
            trainer.predict_features(data.features(), &mut predictions).unwrap();
            let expected = majority_of(&predictions, 4);
            let evaluation = trainer.evaluate(data.view()).unwrap();
            assert_eq!(evaluation.majority_fraction, expected, "{threads} threads, after {step} steps");
            trainer.step().unwrap();
        }
    }
}

#[test]
fn majority_fraction_flags_one_class() {
    let data = common::random_dataset(100, 5, 3, 12);
    let config = Config::builder(5, &[6], 3).threads(2).tile_width(16).build().unwrap();
    let mut trainer: Trainer<f32> = Trainer::new(config, data.view()).unwrap();

    // Zero output weights and a bias that favours class 2: every sample is predicted as 2.
    let (network, _, _) = trainer.state_mut();
    let (weights, bias) = network.layer_mut(1);
    weights.as_mut_slice().fill(0.0);
    bias.copy_from_slice(&[0.0, 0.0, 1.0]);

    let evaluation = trainer.evaluate(data.view()).unwrap();
    assert_eq!(evaluation.majority_fraction, 1.0);
    let twos = data.labels().iter().filter(|&&label| label == 2).count();
    assert_eq!(evaluation.correct, twos, "every sample labelled 2 is correct");
}
