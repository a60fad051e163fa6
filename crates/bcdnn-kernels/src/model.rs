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

    /// Evaluates `sigma(u)`.
    ///
    /// Sigmoid and softplus are written so that no intermediate overflows: both evaluate
    /// `exp(-|u|)`, which lies in `[0, 1]`. Every activation maps `-inf` and `+inf` to its limits.
    pub fn value(&self, u: f64) -> f64 {
        match *self {
            Activation::Relu => u.max(0.0),
            Activation::LeakyRelu { slope } => {
                if u >= 0.0 {
                    u
                } else {
                    slope * u
                }
            }
            Activation::Sigmoid => sigmoid(u),
            Activation::Tanh => u.tanh(),
            Activation::Softplus => u.max(0.0) + (-u.abs()).exp().ln_1p(),
            Activation::Linear => u,
        }
    }

    /// Evaluates `sigma'(u)`.
    ///
    /// ReLU and leaky ReLU have no derivative at `u = 0`. There this returns the left derivative
    /// (`0` for ReLU, `slope` for leaky ReLU).
    pub fn derivative(&self, u: f64) -> f64 {
        match *self {
            Activation::Relu => {
                if u > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu { slope } => {
                if u > 0.0 {
                    1.0
                } else {
                    slope
                }
            }
            Activation::Sigmoid => sigmoid_derivative(u),
            Activation::Tanh => sech_squared(u),
            Activation::Softplus => sigmoid(u),
            Activation::Linear => 1.0,
        }
    }

    /// Evaluates `sigma''(u)`. It is `0` for the piecewise-linear activations, also at the
    /// kink `u = 0`, where it does not exist.
    pub fn second_derivative(&self, u: f64) -> f64 {
        match *self {
            Activation::Relu | Activation::LeakyRelu { .. } | Activation::Linear => 0.0,
            // sigma'' = sigma' (1 - 2 sigma), with 1 - 2 sigma(u) = -tanh(u / 2).
            Activation::Sigmoid => -sigmoid_derivative(u) * (0.5 * u).tanh(),
            Activation::Tanh => -2.0 * u.tanh() * sech_squared(u),
            Activation::Softplus => sigmoid_derivative(u),
        }
    }
}

/// `1 / (1 + exp(-u))`, through `exp(-|u|)` so that no intermediate overflows.
fn sigmoid(u: f64) -> f64 {
    let e = (-u.abs()).exp();
    if u >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// `sigmoid(u) (1 - sigmoid(u)) = e / (1 + e)^2` with `e = exp(-|u|)`, accurate also where
/// `sigmoid(u)` rounds to 1.
fn sigmoid_derivative(u: f64) -> f64 {
    let e = (-u.abs()).exp();
    e / ((1.0 + e) * (1.0 + e))
}

/// `1 - tanh(u)^2 = 4 e / (1 + e)^2` with `e = exp(-2 |u|)`, accurate also where `tanh(u)`
/// rounds to `+-1`.
fn sech_squared(u: f64) -> f64 {
    let e = (-2.0 * u.abs()).exp();
    4.0 * e / ((1.0 + e) * (1.0 + e))
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

    /// Returns the Lipschitz constant `L_R` of the gradient of the summed loss for the smooth
    /// losses, which are updated by a prox-linear step, and `None` for the closed-form ones.
    pub fn prox_linear_lipschitz(&self) -> Option<f64> {
        match self {
            Loss::Squared | Loss::Hinge => None,
            Loss::CrossEntropy => Some(0.5),
            Loss::Logistic => Some(0.25),
        }
    }

    /// Returns whether the targets are `+1` for the label's row and `-1` elsewhere (one-vs-rest
    /// losses) rather than one-hot.
    pub fn signed_targets(&self) -> bool {
        matches!(self, Loss::Hinge | Loss::Logistic)
    }
}

/// Whether the loss is summed over samples or averaged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossScale {
    /// Sum over samples, the scale the published BCD hyperparameters assume.
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
