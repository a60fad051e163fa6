//! Training neural networks by block coordinate descent (BCD).
//!
//! The network `d_0 -> d_1 -> ... -> d_N` (ReLU hidden layers, linear output, squared loss)
//! is split into blocks: weights and biases `(W_i, b_i)`, pre-activations `U_i` and
//! activations `V_i`. Each block is minimised exactly with the others fixed, so the
//! three-splitting objective
//!
//! ```text
//! Lbar = 1/2 ||V_N - Y||^2 + sum_{i<N} gamma/2 ||V_i - sigma(U_i)||^2 + gamma/2 ||V_N - U_N||^2
//!      + sum_i rho/2 ||U_i - W_i V_{i-1} - b_i 1^T||^2
//! ```
//!
//! never increases (Zeng, Lau, Lin, Yao: "Global Convergence of Block Coordinate Descent in
//! Deep Learning", ICML 2019).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bcdnn::{Config, Trainer};
//! let mnist = bcdnn_data::load_mnist(&bcdnn_data::MnistOptions::default())?;
//! let config = Config::builder(784, &[1500, 1500, 1500], 10).alpha(5.0).seed(1).build()?;
//! let mut trainer: Trainer<f32> = Trainer::new(config, mnist.train.view())?;
//! for _ in 0..5 {
//!     let report = trainer.step()?;
//!     let test = trainer.evaluate(mnist.test.view())?;
//!     println!("{} {:.3} {:.4}", report.iteration, report.update_seconds, test.accuracy);
//! }
//! # Ok(()) }
//! ```

mod blocks;
pub mod config;
pub mod floor;
pub mod network;
pub mod objective;
pub mod sgd;
pub mod trainer;
mod two_splitting;
mod workspace;

pub use bcdnn_kernels::model::{Activation, ActivationRegulariser, Loss, LossScale, WeightRegulariser};
pub use config::{Algorithm, Block, Config, ConfigBuilder, ConfigError, InnerSolve, LayerParams, UpdateOrder};
pub use network::{Evaluation, Network};
pub use objective::ObjectiveTerms;
pub use sgd::{SgdConfig, SgdConfigError, SgdEpochReport, SgdError, SgdTrainer};
pub use trainer::{BlockReport, StepReport, TrainError, Trainer};
