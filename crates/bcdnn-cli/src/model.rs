//! The two trainers behind `bcdnn train`, BCD and SGD, behind one interface for the training
//! loop: one step, an evaluation, and the objective where the method has one.

use anyhow::{Context, Result};
use bcdnn::sgd::{INIT_BIAS, INIT_WEIGHT_SCALE};
use bcdnn::{Evaluation, ObjectiveTerms, SgdConfig, SgdTrainer, StepReport, Trainer};
use bcdnn_data::DatasetView;
use serde_json::Value;

/// A trainer of either method, in `f32`.
// One value per run, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Model<'a> {
    Bcd(Trainer<'a, f32>),
    Sgd(SgdTrainer<'a, f32>),
}

/// Report of one step of either method.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// Wall time of the step's updates.
    pub update_seconds: f64,
    /// The BCD step's report; `None` for SGD.
    pub bcd: Option<StepReport>,
    /// Mean of the SGD batch losses over the epoch; `None` for BCD.
    pub mean_batch_loss: Option<f64>,
}

impl Model<'_> {
    /// Performs one BCD iteration or one SGD epoch.
    pub fn step(&mut self) -> Result<StepOutcome> {
        match self {
            Model::Bcd(trainer) => {
                let report = trainer.step()?;
                Ok(StepOutcome { update_seconds: report.update_seconds, bcd: Some(report), mean_batch_loss: None })
            }
            Model::Sgd(trainer) => {
                let report = trainer.epoch();
                Ok(StepOutcome {
                    update_seconds: report.seconds,
                    bcd: None,
                    mean_batch_loss: Some(report.mean_batch_loss),
                })
            }
        }
    }

    /// Accuracy, squared loss and majority fraction of the plain forward pass on `data`;
    /// `set` names the data in the error message.
    pub fn evaluate(&mut self, data: DatasetView<'_>, set: &str) -> Result<Evaluation> {
        let evaluation = match self {
            Model::Bcd(trainer) => trainer.evaluate(data).map_err(anyhow::Error::from),
            Model::Sgd(trainer) => trainer.evaluate(data).map_err(anyhow::Error::from),
        };
        evaluation.with_context(|| format!("failed to evaluate the {set} set"))
    }

    /// Evaluates `Lbar` at the current iterate explicitly; SGD has no such objective.
    pub fn objective(&mut self) -> Option<ObjectiveTerms> {
        match self {
            Model::Bcd(trainer) => Some(trainer.objective()),
            Model::Sgd(_) => None,
        }
    }

    pub fn threads(&self) -> usize {
        match self {
            Model::Bcd(trainer) => trainer.threads(),
            Model::Sgd(trainer) => trainer.threads(),
        }
    }

    pub fn widths(&self) -> &[usize] {
        match self {
            Model::Bcd(trainer) => &trainer.config().widths,
            Model::Sgd(trainer) => &trainer.config().widths,
        }
    }

    /// Returns the trainer's configuration as the record's `config` field. The SGD configuration gets
    /// the initialisation constants added, so both records state how the weights started.
    pub fn config_json(&self) -> Result<Value> {
        let value = match self {
            Model::Bcd(trainer) => serde_json::to_value(trainer.config()),
            Model::Sgd(trainer) => serde_json::to_value(SgdRecordConfig {
                config: trainer.config(),
                init_weight_scale: INIT_WEIGHT_SCALE,
                init_bias: INIT_BIAS,
            }),
        };
        value.context("failed to serialise the training configuration")
    }

    /// Bytes of the trainer's state and workspace. SGD reports its weights as state and has
    /// no workspace figure.
    pub fn memory_bytes(&self) -> (usize, Option<usize>) {
        match self {
            Model::Bcd(trainer) => {
                let (state, workspace) = trainer.memory_bytes();
                (state, Some(workspace))
            }
            Model::Sgd(trainer) => {
                let network = trainer.network();
                let weights: usize = (0..network.depth())
                    .map(|layer| network.weights(layer).size_bytes() + std::mem::size_of_val(network.bias(layer)))
                    .sum();
                (weights, None)
            }
        }
    }
}

#[derive(serde::Serialize)]
struct SgdRecordConfig<'c> {
    #[serde(flatten)]
    config: &'c SgdConfig,
    init_weight_scale: f64,
    init_bias: f64,
}
