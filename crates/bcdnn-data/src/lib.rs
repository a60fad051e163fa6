//! Datasets for bcdnn: an IDX parser for the MNIST files, a binary store that contains
//! the features as a column-major f32 matrix and is opened by memory mapping, and the
//! [`Dataset`]/[`DatasetView`] types the trainer reads.
//!
//! Features are an `n_features x n_samples` column-major f32 matrix (one sample per column),
//! labels are one u8 class index per sample. [`load_mnist`] converts the IDX files once into
//! stores in a cache directory and opens those stores on later calls.
//!
//! ```no_run
//! let mnist = bcdnn_data::load_mnist(&bcdnn_data::MnistOptions::default())?;
//! let x = mnist.train.view().matrix(); // 784 x 60000, pixels in [0, 1]
//! assert_eq!(x.nrows(), 784);
//! # Ok::<(), bcdnn_data::DataError>(())
//! ```

mod dataset;
mod error;
pub mod idx;
mod mnist;
pub mod store;

pub use dataset::{Dataset, DatasetView};
pub use error::DataError;
pub use idx::IdxError;
pub use mnist::{default_cache_dir, default_source_dir, load_mnist, Mnist, MnistOptions, MNIST_CLASSES};
pub use store::StoreError;
