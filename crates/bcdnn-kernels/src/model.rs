//! The model choices the kernels implement: hidden activations, output losses and the
//! regularisers on weights and activations.
//!
//! These are plain descriptions; the kernels that evaluate them and their proximal operators
//! live in [`crate::activation`], [`crate::loss`] and [`crate::regulariser`].

use serde::{Deserialize, Serialize};

/// Hidden-layer activation `sigma`. The output layer is always linear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Activation {
    /// `max(u, 0)`.
    #[default]
    Relu,
    /// `max(u, 0) + slope min(u, 0)`, with `0 <= slope < 1`.
    LeakyRelu { slope: f64 },
    /// `1 / (1 + exp(-u))`.
    Sigmoid,
    /// `tanh(u)`.
    Tanh,
    /// `log(1 + exp(u))`.
    Softplus,
    /// `u`.
    Linear,
}

impl Activation {
    /// Short name, as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky-relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softplus => "softplus",
            Activation::Linear => "linear",
        }
    }
}

/// Output loss `R(V_N; Y)`, summed over samples (or averaged, see [`LossScale`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// `1/2 ||V - Y||^2` with one-hot `Y`.
    #[default]
    Squared,
    /// One-vs-rest hinge `sum max(0, 1 - y v)` with `y` in `{-1, +1}`.
    Hinge,
    /// Softmax cross-entropy `sum_j (logsumexp(v_j) - v_{j, label_j})`.
    CrossEntropy,
    /// One-vs-rest logistic `sum log(1 + exp(-y v))` with `y` in `{-1, +1}`.
    Logistic,
}

impl Loss {
    /// Short name, as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::Squared => "squared",
            Loss::Hinge => "hinge",
            Loss::CrossEntropy => "cross-entropy",
            Loss::Logistic => "logistic",
        }
    }

    /// Lipschitz constant `L_R` of the gradient of the summed loss, for the smooth losses
    /// that are updated by a prox-linear step; `None` for the losses with a closed-form update.
    pub fn prox_linear_lipschitz(&self) -> Option<f64> {
        match self {
            Loss::Squared | Loss::Hinge => None,
            Loss::CrossEntropy => Some(0.5),
            Loss::Logistic => Some(0.25),
        }
    }

    /// Whether the targets are `+1` for the label's row and `-1` elsewhere (one-vs-rest
    /// losses) rather than one-hot.
    pub fn signed_targets(&self) -> bool {
        matches!(self, Loss::Hinge | Loss::Logistic)
    }
}

/// Whether the loss is summed over samples or averaged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossScale {
    /// Sum over samples (the paper's experiments).
    #[default]
    Sum,
    /// Mean over samples: the summed loss divided by `n`.
    Mean,
}

/// Regulariser `r_i(W_i)` on a layer's weights (never on its bias).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WeightRegulariser {
    #[default]
    None,
    /// `lambda/2 ||W||^2`.
    L2 { lambda: f64 },
    /// `lambda ||W||_1`.
    L1 { lambda: f64 },
    /// `l1 ||W||_1 + l2/2 ||W||^2`.
    ElasticNet { l1: f64, l2: f64 },
    /// Indicator of `W >= 0`.
    NonNegative,
    /// Indicator of `lower <= W <= upper`.
    Box { lower: f64, upper: f64 },
}

/// Regulariser `s_i(V_i)` on a layer's activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ActivationRegulariser {
    #[default]
    None,
    /// `lambda ||V||_1`.
    L1 { lambda: f64 },
    /// Indicator of `V >= 0`.
    NonNegative,
    /// Indicator of `lower <= V <= upper`.
    Box { lower: f64, upper: f64 },
}
