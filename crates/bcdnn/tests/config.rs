//! Every invalid configuration is rejected with its own error, before any allocation.

mod common;

use bcdnn::{Config, ConfigError, LayerParams, TrainError, Trainer};

#[test]
fn config_rejects_each_invalid_value() {
    let cases: Vec<(&str, Result<Config, ConfigError>, ConfigError)> = vec![
        ("zero hidden width", Config::builder(4, &[3, 0], 2).build(), ConfigError::ZeroWidth { layer: 2 }),
        ("zero input width", Config::builder(0, &[3], 2).build(), ConfigError::ZeroWidth { layer: 0 }),
        ("zero classes", Config::builder(4, &[3], 0).build(), ConfigError::ZeroWidth { layer: 2 }),
        (
            "gamma 0",
            Config::builder(4, &[3], 2).gamma(0.0).build(),
            ConfigError::InvalidParameter { name: "gamma", layer: 1, value: 0.0 },
        ),
        (
            "rho negative",
            Config::builder(4, &[3], 2).rho(-1.0).build(),
            ConfigError::InvalidParameter { name: "rho", layer: 1, value: -1.0 },
        ),
        (
            "alpha infinite",
            Config::builder(4, &[3], 2).alpha(f64::INFINITY).build(),
            ConfigError::InvalidParameter { name: "alpha", layer: 1, value: f64::INFINITY },
        ),
        (
            "layer 2 gamma negative",
            Config::builder(4, &[3], 2).layer(2, LayerParams { gamma: -2.0, rho: 1.0, alpha: 1.0 }).build(),
            ConfigError::InvalidParameter { name: "gamma", layer: 2, value: -2.0 },
        ),
        (
            "layer index 3 of 2",
            Config::builder(4, &[3], 2).layer(3, LayerParams::default()).build(),
            ConfigError::LayerOutOfRange { layer: 3, layers: 2 },
        ),
        (
            "layer index 0",
            Config::builder(4, &[3], 2).layer(0, LayerParams::default()).build(),
            ConfigError::LayerOutOfRange { layer: 0, layers: 2 },
        ),
        ("tile width 0", Config::builder(4, &[3], 2).tile_width(0).build(), ConfigError::ZeroTileWidth),
        (
            "init scale NaN",
            Config::builder(4, &[3], 2).init_weight_scale(f64::NAN).build(),
            ConfigError::InvalidInitScale { value: f64::NAN },
        ),
        (
            "init bias inf",
            Config::builder(4, &[3], 2).init_bias(f64::NEG_INFINITY).build(),
            ConfigError::InvalidInitBias { value: f64::NEG_INFINITY },
        ),
    ];
    for (case, result, expected) in cases {
        let error = result.expect_err(case);
        // NaN never equals itself, so compare the messages, which carry every field.
        assert_eq!(error.to_string(), expected.to_string(), "{case}");
    }
}

#[test]
fn gamma_nan_is_rejected() {
    let error = Config::builder(4, &[3], 2).gamma(f64::NAN).build().unwrap_err();
    assert!(
        matches!(error, ConfigError::InvalidParameter { name: "gamma", layer: 1, value } if value.is_nan()),
        "{error}"
    );
}

#[test]
fn trainer_rejects_data_that_does_not_fit() {
    let data = common::random_dataset(20, 5, 3, 1);
    let wrong_input = Config::builder(6, &[4], 3).build().unwrap();
    let error = Trainer::<f32>::new(wrong_input, data.view()).err().expect("input width 6 against 5 features");
    assert!(matches!(error, TrainError::InputWidthMismatch { expected: 6, found: 5 }), "{error}");

    let wrong_classes = Config::builder(5, &[4], 4).build().unwrap();
    let error = Trainer::<f32>::new(wrong_classes, data.view()).err().expect("4 outputs against 3 classes");
    assert!(matches!(error, TrainError::ClassCountMismatch { expected: 4, found: 3 }), "{error}");

    let empty = data.view().head(0);
    let config = Config::builder(5, &[4], 3).build().unwrap();
    let error = Trainer::<f32>::new(config, empty).err().expect("no samples");
    assert!(matches!(error, TrainError::EmptyTrainingSet), "{error}");
}

#[test]
fn predictions_match_evaluation_accuracy() {
    let data = common::random_dataset(64, 5, 3, 4);
    let config = Config::builder(5, &[8], 3).threads(2).tile_width(16).build().unwrap();
    let mut trainer: Trainer<f32> = Trainer::new(config, data.view()).unwrap();
    for _ in 0..3 {
        trainer.step().unwrap();
    }
    let mut predictions = vec![0u32; 64];
    trainer.predict_features(data.features(), &mut predictions).unwrap();
    let correct = predictions.iter().zip(data.labels()).filter(|(p, l)| **p == **l as u32).count();
    let evaluation = trainer.evaluate(data.view()).unwrap();
    assert_eq!(correct, evaluation.correct, "predictions and evaluate disagree");

    let error = trainer.predict_features(&data.features()[..7], &mut predictions[..2]).unwrap_err();
    assert!(matches!(error, TrainError::PredictionShapeMismatch { features: 7, rows: 5, columns: 2 }), "{error}");
}

#[test]
fn rejects_invalid_model_choices() {
    use bcdnn::{Activation, ActivationRegulariser, Block, Loss, UpdateOrder, WeightRegulariser};
    let base = || Config::builder(4, &[4, 3], 2);
    let cases: Vec<(&str, Result<Config, ConfigError>, ConfigError)> = vec![
        (
            "skip across different widths",
            base().skip(2).build(),
            ConfigError::SkipWidthMismatch { layer: 2, width: 3, input: 4 },
        ),
        ("skip on the output layer", base().skip(3).build(), ConfigError::SkipOnOutputLayer { layer: 3, hidden: 2 }),
        ("skip on layer 0", base().skip(0).build(), ConfigError::LayerOutOfRange { layer: 0, layers: 2 }),
        (
            "leaky slope 1",
            base().activation(Activation::LeakyRelu { slope: 1.0 }).build(),
            ConfigError::InvalidSlope { layer: 1, value: 1.0 },
        ),
        (
            "negative l2 weight",
            base().weight_regulariser(WeightRegulariser::L2 { lambda: -1e-4 }).build(),
            ConfigError::InvalidRegularisation { target: "weight", name: "lambda", layer: 1, value: -1e-4 },
        ),
        (
            "NaN elastic-net l2",
            base().layer_weight_regulariser(2, WeightRegulariser::ElasticNet { l1: 0.1, l2: f64::NAN }).build(),
            ConfigError::InvalidRegularisation { target: "weight", name: "l2", layer: 2, value: f64::NAN },
        ),
        (
            "weight box lower above upper",
            base().weight_regulariser(WeightRegulariser::Box { lower: 1.0, upper: -1.0 }).build(),
            ConfigError::InvalidBox { target: "weight", layer: 1, lower: 1.0, upper: -1.0 },
        ),
        (
            "activation box lower above upper",
            base().layer_activation_regulariser(2, ActivationRegulariser::Box { lower: 2.0, upper: 1.0 }).build(),
            ConfigError::InvalidBox { target: "activation", layer: 2, lower: 2.0, upper: 1.0 },
        ),
        (
            "negative activation l1",
            base().activation_regulariser(ActivationRegulariser::L1 { lambda: -2.0 }).build(),
            ConfigError::InvalidRegularisation { target: "activation", name: "lambda", layer: 1, value: -2.0 },
        ),
        (
            "cross-entropy with alpha below the prox-linear bound",
            base().loss(Loss::CrossEntropy).gamma(0.1).alpha(0.1).build(),
            ConfigError::ProxLinearAlpha { loss: "cross-entropy", layer: 3, alpha: 0.1, bound: 0.2 },
        ),
        (
            "order naming a block twice",
            base()
                .order(UpdateOrder::Custom(vec![
                    Block::Activation(2),
                    Block::Activation(2),
                    Block::PreActivation(2),
                    Block::Weights(2),
                ]))
                .build(),
            ConfigError::OrderDuplicateBlock { block: Block::Activation(2) },
        ),
        (
            "order leaving a block out",
            base().order(UpdateOrder::Custom(vec![Block::Activation(2)])).build(),
            ConfigError::OrderMissingBlock { block: Block::PreActivation(2) },
        ),
        (
            "order naming a layer that does not exist",
            base().order(UpdateOrder::Custom(vec![Block::Weights(7)])).build(),
            ConfigError::OrderUnknownBlock { block: Block::Weights(7), algorithm: "three-splitting", layers: 3 },
        ),
        (
            "U block in two-splitting",
            base()
                .algorithm(bcdnn::Algorithm::TwoSplitting)
                .order(UpdateOrder::Custom(vec![Block::PreActivation(0)]))
                .build(),
            ConfigError::OrderUnknownBlock { block: Block::PreActivation(0), algorithm: "two-splitting", layers: 3 },
        ),
        (
            "zero inner iterations",
            base().inner(bcdnn::InnerSolve { max_iterations: 0, tolerance: 1e-6 }).build(),
            ConfigError::ZeroInnerIterations,
        ),
        (
            "negative inner tolerance",
            base().inner(bcdnn::InnerSolve { max_iterations: 5, tolerance: -1.0 }).build(),
            ConfigError::InvalidInnerTolerance { value: -1.0 },
        ),
    ];
    for (case, result, expected) in cases {
        let error = result.expect_err(case);
        assert_eq!(error.to_string(), expected.to_string(), "{case}");
    }
}

#[test]
fn prox_linear_bound_checks() {
    use bcdnn::{Loss, LossScale};
    let error = Config::builder(4, &[3], 2).loss(Loss::Logistic).gamma(0.05).alpha(0.05).build().unwrap_err();
    // (L_R - gamma) / 2 = (0.25 - 0.05) / 2 = 0.1
    assert!(error.to_string().contains("above 0.1"), "{error}");
    // With the mean scale the bound uses 1/n and the trainer checks it; alpha 0.05 is fine
    // for 10 samples, since (0.025 - 0.05) / 2 < 0.
    let data = common::random_dataset(10, 4, 2, 1);
    let config = Config::builder(4, &[3], 2)
        .loss(Loss::Logistic)
        .loss_scale(LossScale::Mean)
        .gamma(0.05)
        .alpha(0.05)
        .build()
        .unwrap();
    Trainer::<f64>::new(config, data.view()).unwrap();
}
