//! CPU kernels for training neural networks by block coordinate descent (BCD).
//!
//! The crate holds the numerical building blocks the trainer is made of:
//!
//! - [`matrix`]: a column-major dense matrix whose storage the trainer owns, viewed through faer.
//! - [`products`]: matrix products and Gram matrices through faer, with the parallelism chosen
//!   by problem size.
//! - [`spd`]: factorisation and solves of small symmetric positive definite systems (Cholesky),
//!   in f64, with all scratch allocated up front.
//! - [`elementwise`]: fused single-pass elementwise steps (bias broadcast, proximal updates,
//!   objective terms), with a scalar reference beside every SIMD version.
//! - [`activation`]: hidden activations, their forward kernels and their exact proximal
//!   pre-activation update, scalar and SIMD.
//! - [`tiling`]: splitting sample columns into tiles for rayon, with deterministic reductions.
//! - [`loss`]: the output activation update and loss values for every loss.
//! - [`regulariser`]: values and proximal operators of the weight and activation regularisers.
//! - [`fista`]: monotone FISTA for the blocks whose regulariser has no closed-form update.
//!
//! No kernel allocates: output and scratch come from the caller.

pub mod activation;
pub mod elementwise;
pub mod fista;
pub mod loss;
pub mod matrix;
pub mod model;
pub mod products;
pub mod real;
pub mod regulariser;
pub mod spd;
pub mod tiling;

pub use matrix::ColMatrix;
pub use real::Real;
