//! The floating-point types the kernels run on.

use crate::activation::ActivationKernels;
use crate::elementwise::Elementwise;
use crate::loss::LossKernels;

/// A real floating-point type the trainer can run on: `f32` for speed, `f64` for tests that
/// check exactness against an oracle.
pub trait Real:
    faer::traits::RealField
    + num_traits::Float
    + Elementwise
    + LossKernels
    + ActivationKernels
    + Copy
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::fmt::Display
    + 'static
{
    /// Name of the type as it appears in run records (`"f32"` or `"f64"`).
    const NAME: &'static str;

    /// Converts from `f64`, rounding to nearest.
    fn from_f64(value: f64) -> Self;

    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;

    /// Reinterprets `f32` data as this type without copying: `Some` for `f32`, `None` for
    /// types that need a converted copy.
    fn borrow_f32(data: &[f32]) -> Option<&[Self]>;
}

impl Real for f32 {
    const NAME: &'static str = "f32";

    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value as f32
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }

    fn borrow_f32(data: &[f32]) -> Option<&[Self]> {
        Some(data)
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";

    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    fn borrow_f32(_data: &[f32]) -> Option<&[Self]> {
        None
    }
}
