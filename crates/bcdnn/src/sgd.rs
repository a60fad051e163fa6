//! Minibatch stochastic gradient descent (SGD) with backpropagation: the baseline the BCD
//! trainer is compared against.
//!
//! The network is the one [`crate::Trainer`] trains: fully connected, ReLU hidden layers, a
//! linear output layer, initialised by [`Network::init`] with `W ~ 0.01 N(0, 1)` and `b = 0.1`.
//! Each step takes a batch `B` of `m` samples and follows the gradient of the mean squared loss
//!
//! ```text
//! L_B = 1/(2m) sum_{j in B} ||f(x_j) - y_j||^2
//! ```
//!
//! so the gradient is divided by the batch size and the learning rate does not have to shrink
//! when the batch grows. Every epoch visits the training samples in a fresh random order. When
//! `n mod batch_size` is not zero, the last batch of an epoch contains the remaining samples and
//! its gradient is divided by its own size.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bcdnn::sgd::{SgdConfig, SgdTrainer};
//! let mnist = bcdnn_data::load_mnist(&bcdnn_data::MnistOptions::default())?;
//! let config = SgdConfig { widths: vec![784, 1500, 10], learning_rate: 0.1, batch_size: 128, seed: 1, threads: 0 };
//! let mut trainer: SgdTrainer<f32> = SgdTrainer::new(config, mnist.train.view())?;
//! for _ in 0..5 {
//!     let report = trainer.epoch();
//!     let test = trainer.evaluate(mnist.test.view())?;
//!     println!("{} {:.3} {:.5} {:.4}", report.epoch, report.seconds, report.mean_batch_loss, test.accuracy);
//! }
//! # Ok(()) }
//! ```

use crate::network::{evaluate_tiled, forward_scratch_len, Evaluation, Network};
use bcdnn_data::DatasetView;
use bcdnn_kernels::matrix::{columns_view, slice_view_mut};
use bcdnn_kernels::products::{matmul, matmul_flops, par_for_flops};
use bcdnn_kernels::tiling::{Partial, ThreadScratch, DEFAULT_TILE_WIDTH, PARTIAL_LEN};
use bcdnn_kernels::{ColMatrix, Real};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Standard deviation of the initial weights, the same as the BCD trainer's default.
pub const INIT_WEIGHT_SCALE: f64 = 0.01;

/// Initial value of every bias entry, the same as the BCD trainer's default.
pub const INIT_BIAS: f64 = 0.1;

/// Settings of an SGD run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Widths `d_0, d_1, ..., d_N`: inputs, hidden layers, classes.
    pub widths: Vec<usize>,
    /// Step length `eta` of `W <- W - eta grad L_B`.
    pub learning_rate: f64,
    /// Samples per batch; a batch size above the training set size means full-batch gradient
    /// descent.
    pub batch_size: usize,
    /// Seed of the weight initialisation and of the per-epoch shuffle.
    pub seed: u64,
    /// Worker threads; `0` means one per available core.
    pub threads: usize,
}

/// An SGD setting that cannot be trained with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SgdConfigError {
    #[error("the network needs an input width and an output width, but {count} widths were given")]
    TooFewWidths { count: usize },
    #[error("width of layer {layer} is 0; every layer needs at least one unit")]
    ZeroWidth { layer: usize },
    #[error("learning rate is {value}; it must be a finite number greater than 0")]
    InvalidLearningRate { value: f64 },
    #[error("batch size is 0; use at least one sample per batch")]
    ZeroBatchSize,
}

/// An error that stops SGD training from starting, or that rejects an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum SgdError {
    #[error(transparent)]
    Config(#[from] SgdConfigError),
    #[error("the data has {found} features per sample but the network's input width is {expected}; set the first width to {found}")]
    InputWidthMismatch { expected: usize, found: usize },
    #[error(
        "the data has {found} classes but the network's output width is {expected}; set the last width to {found}"
    )]
    ClassCountMismatch { expected: usize, found: usize },
    #[error("the training set is empty; training needs at least one sample")]
    EmptyTrainingSet,
    #[error("the evaluation data has {found} features per sample but the network expects {expected}")]
    EvaluationWidthMismatch { expected: usize, found: usize },
    #[error("could not start the thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
}

impl SgdConfig {
    /// Number of weight layers `N`.
    pub fn depth(&self) -> usize {
        self.widths.len() - 1
    }

    /// Thread count after resolving `0` to the number of available cores.
    pub fn resolved_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }

    /// Checks every value; returns the first problem found.
    pub fn validate(&self) -> Result<(), SgdConfigError> {
        if self.widths.len() < 2 {
            return Err(SgdConfigError::TooFewWidths { count: self.widths.len() });
        }
        if let Some(layer) = self.widths.iter().position(|&w| w == 0) {
            return Err(SgdConfigError::ZeroWidth { layer });
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(SgdConfigError::InvalidLearningRate { value: self.learning_rate });
        }
        if self.batch_size == 0 {
            return Err(SgdConfigError::ZeroBatchSize);
        }
        Ok(())
    }
}

/// Summary of one [`SgdTrainer::epoch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SgdEpochReport {
    /// Epochs completed, this one included (the first epoch reports 1).
    pub epoch: usize,
    /// Wall time of the epoch's forward passes, backpropagation and updates.
    pub seconds: f64,
    /// Mean over the epoch's batches of `L_B`, each evaluated at the weights before that
    /// batch's update. Not finite once the iteration has diverged.
    pub mean_batch_loss: f64,
}

/// The loss of one batch and its gradient, borrowed from the trainer's buffers.
#[derive(Clone, Copy, Debug)]
pub struct BatchGradients<'t, T> {
    /// `L_B = 1/(2m) sum_j ||f(x_j) - y_j||^2` over the `m` samples of the batch.
    pub loss: f64,
    /// `dL_B / dW_l` per layer (0-based), each shaped like the layer's weights.
    pub weights: &'t [ColMatrix<T>],
    /// `dL_B / db_l` per layer (0-based).
    pub biases: &'t [Vec<T>],
}

/// Buffers of one batch, sized for the largest batch and allocated once.
struct BatchBuffers<T> {
    /// `A_0 = X_B` and the layer outputs `A_1, ..., A_N`, each `d_l x capacity`. Hidden
    /// outputs are post-ReLU, so `A_l > 0` exactly where the ReLU derivative is 1.
    activations: Vec<ColMatrix<T>>,
    /// Labels of the batch's samples, in batch column order.
    labels: Vec<u8>,
    /// `dL_B / dA_l` of the layer being backpropagated and of the layer below it, each
    /// `max_width x capacity`.
    delta: [Vec<T>; 2],
    weight_gradients: Vec<ColMatrix<T>>,
    bias_gradients: Vec<Vec<T>>,
}

impl<T: Real> BatchBuffers<T> {
    fn new(widths: &[usize], capacity: usize) -> Self {
        let max_width = widths.iter().copied().max().unwrap_or(0);
        Self {
            activations: widths.iter().map(|&d| ColMatrix::zeros(d, capacity)).collect(),
            labels: vec![0; capacity],
            delta: [vec![T::zero(); max_width * capacity], vec![T::zero(); max_width * capacity]],
            weight_gradients: widths.windows(2).map(|pair| ColMatrix::zeros(pair[1], pair[0])).collect(),
            bias_gradients: widths[1..].iter().map(|&d| vec![T::zero(); d]).collect(),
        }
    }

    fn capacity(&self) -> usize {
        self.labels.len()
    }
}

/// Trains a network on a fixed training set by minibatch SGD.
///
/// All batch buffers are allocated in [`SgdTrainer::new`]. Work runs on a rayon pool owned by
/// the trainer: a product runs in parallel on that pool when it has at least
/// [`bcdnn_kernels::products::PARALLEL_FLOP_THRESHOLD`] flops and sequentially otherwise.
/// Evaluation runs the BCD trainer's tiled forward pass.
pub struct SgdTrainer<'a, T: Real = f32> {
    config: SgdConfig,
    features: &'a [f32],
    labels: &'a [u8],
    pool: rayon::ThreadPool,
    threads: usize,
    network: Network<T>,
    /// Generator of the per-epoch shuffles.
    rng: ChaCha8Rng,
    /// Sample order of the current epoch.
    order: Vec<usize>,
    buffers: BatchBuffers<T>,
    eval_scratch: ThreadScratch<T>,
    eval_partials: Vec<Partial>,
    epochs: usize,
}

impl<'a, T: Real> SgdTrainer<'a, T> {
    /// Validates `config` against the data, initialises the weights from the seed and
    /// allocates all buffers.
    pub fn new(config: SgdConfig, train: DatasetView<'a>) -> Result<Self, SgdError> {
        config.validate()?;
        let input_width = config.widths[0];
        let classes = *config.widths.last().expect("validated widths are not empty");
        if train.n_features() != input_width {
            return Err(SgdError::InputWidthMismatch { expected: input_width, found: train.n_features() });
        }
        if train.n_classes() != classes {
            return Err(SgdError::ClassCountMismatch { expected: classes, found: train.n_classes() });
        }
        let n = train.n_samples();
        if n == 0 {
            return Err(SgdError::EmptyTrainingSet);
        }

        let threads = config.resolved_threads();
        let pool =
            rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("bcdnn-sgd-{i}")).build()?;
        let network = Network::init(&config.widths, config.seed, INIT_WEIGHT_SCALE, INIT_BIAS);
        // Stream 1 of the seed's generator, so the shuffles do not reuse the numbers that
        // `Network::init` drew from stream 0 of the same seed.
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(1);
        let capacity = config.batch_size.min(n);
        let buffers = BatchBuffers::new(&config.widths, capacity);
        let eval_scratch = ThreadScratch::new(threads, forward_scratch_len(&config.widths, DEFAULT_TILE_WIDTH));
        let eval_partials = vec![[0.0; PARTIAL_LEN]; n.div_ceil(DEFAULT_TILE_WIDTH)];

        Ok(Self {
            config,
            features: train.features(),
            labels: train.labels(),
            pool,
            threads,
            network,
            rng,
            order: (0..n).collect(),
            buffers,
            eval_scratch,
            eval_partials,
            epochs: 0,
        })
    }

    /// Returns the configuration the trainer was built with.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Worker threads of the trainer's pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Epochs completed.
    pub fn epochs_completed(&self) -> usize {
        self.epochs
    }

    /// Current weights and biases.
    pub fn network(&self) -> &Network<T> {
        &self.network
    }

    /// Mutable access to the weights and biases, for warm starts and for tests.
    pub fn network_mut(&mut self) -> &mut Network<T> {
        &mut self.network
    }

    /// Performs one epoch: shuffles the training samples, then takes one gradient step per
    /// batch of `batch_size` consecutive samples of that order.
    pub fn epoch(&mut self) -> SgdEpochReport {
        let start = Instant::now();
        self.order.shuffle(&mut self.rng);

        let Self { config, features, labels, pool, threads, network, order, buffers, .. } = self;
        let learning_rate = T::from_f64(config.learning_rate);
        let capacity = buffers.capacity();
        let (loss_sum, batches) = pool.install(|| {
            let mut loss_sum = 0.0;
            let mut batches = 0usize;
            for batch in order.chunks(capacity) {
                loss_sum += batch_gradients(network, buffers, features, labels, batch, *threads);
                apply_gradients(network, buffers, learning_rate);
                batches += 1;
            }
            (loss_sum, batches)
        });

        self.epochs += 1;
        SgdEpochReport {
            epoch: self.epochs,
            seconds: start.elapsed().as_secs_f64(),
            mean_batch_loss: loss_sum / batches as f64,
        }
    }

    /// Computes `L_B` and its gradient at the current weights for the batch made of the
    /// training samples `samples` (indices into the training set), without changing the
    /// weights. [`SgdTrainer::epoch`] takes its steps along exactly this gradient.
    ///
    /// # Panics
    ///
    /// If `samples` is empty, longer than the batch size (or the training set, when that is
    /// smaller), or contains an index outside the training set.
    pub fn gradients(&mut self, samples: &[usize]) -> BatchGradients<'_, T> {
        let n = self.labels.len();
        let capacity = self.buffers.capacity();
        assert!(
            !samples.is_empty() && samples.len() <= capacity,
            "a batch of {} samples does not fit the trainer's batch buffers of 1..={capacity} columns",
            samples.len()
        );
        if let Some(&bad) = samples.iter().find(|&&s| s >= n) {
            panic!("sample index {bad} is outside the training set of {n} samples");
        }

        let Self { features, labels, pool, threads, network, buffers, .. } = self;
        let loss = pool.install(|| batch_gradients(network, buffers, features, labels, samples, *threads));
        BatchGradients { loss, weights: &self.buffers.weight_gradients, biases: &self.buffers.bias_gradients }
    }

    /// Accuracy and squared loss of the plain forward pass of the current weights on `data`.
    pub fn evaluate(&mut self, data: DatasetView<'_>) -> Result<Evaluation, SgdError> {
        let input_width = self.config.widths[0];
        if data.n_features() != input_width {
            return Err(SgdError::EvaluationWidthMismatch { expected: input_width, found: data.n_features() });
        }
        let tiles = data.n_samples().div_ceil(DEFAULT_TILE_WIDTH);
        if self.eval_partials.len() < tiles {
            self.eval_partials.resize(tiles, [0.0; PARTIAL_LEN]);
        }
        let (network, scratch, partials) = (&self.network, &self.eval_scratch, &mut self.eval_partials);
        Ok(self
            .pool
            .install(|| evaluate_tiled(network, data.features(), data.labels(), DEFAULT_TILE_WIDTH, scratch, partials)))
    }
}

/// Runs the forward pass and backpropagation of the batch `samples`, leaving the gradient of
/// `L_B` in `buffers`, and returns `L_B`.
fn batch_gradients<T: Real>(
    network: &Network<T>,
    buffers: &mut BatchBuffers<T>,
    features: &[f32],
    labels: &[u8],
    samples: &[usize],
    threads: usize,
) -> f64 {
    gather_batch(buffers, features, labels, samples, network.widths()[0]);
    forward(network, buffers, samples.len(), threads);
    let loss = output_delta(buffers, samples.len());
    backward(network, buffers, samples.len(), threads);
    loss
}

/// Copies the batch's feature columns into `A_0`, converted to `T`, and its labels.
fn gather_batch<T: Real>(buffers: &mut BatchBuffers<T>, features: &[f32], labels: &[u8], samples: &[usize], d0: usize) {
    let input = &mut buffers.activations[0];
    for (column, &sample) in samples.iter().enumerate() {
        let source = &features[sample * d0..(sample + 1) * d0];
        for (target, &value) in input.col_mut(column).iter_mut().zip(source) {
            *target = T::from_f64(value as f64);
        }
        buffers.labels[column] = labels[sample];
    }
}

/// `A_l = relu(W_l A_{l-1} + b_l 1^T)` for hidden layers and `A_N = W_N A_{N-1} + b_N 1^T`,
/// on the first `m` columns.
fn forward<T: Real>(network: &Network<T>, buffers: &mut BatchBuffers<T>, m: usize, threads: usize) {
    let widths = network.widths();
    let depth = network.depth();
    for layer in 0..depth {
        let (rows, cols) = (widths[layer + 1], widths[layer]);
        let (below, above) = buffers.activations.split_at_mut(layer + 1);
        let input = columns_view(below[layer].as_slice(), cols, 0..m);
        let output = &mut above[0].as_mut_slice()[..rows * m];
        let par = par_for_flops(matmul_flops(rows, cols, m), threads);
        matmul(slice_view_mut(output, rows), false, network.weights(layer).view(), input, T::one(), par);

        let bias = network.bias(layer);
        let hidden = layer + 1 < depth;
        for column in output.chunks_exact_mut(rows) {
            if hidden {
                T::add_bias_relu(column, bias);
            } else {
                T::add_bias(column, bias);
            }
        }
    }
}

/// Writes `dL_B / dA_N = (A_N - Y) / m` into `delta[0]` and returns `L_B`.
fn output_delta<T: Real>(buffers: &mut BatchBuffers<T>, m: usize) -> f64 {
    let output = buffers.activations.last().expect("a network has an output layer");
    let classes = output.rows();
    let scale = T::from_f64(1.0 / m as f64);
    let mut squared_sum = 0.0;
    let delta = &mut buffers.delta[0][..classes * m];
    for (column, target) in delta.chunks_exact_mut(classes).enumerate() {
        let label = buffers.labels[column] as usize;
        for (class, (d, &a)) in target.iter_mut().zip(output.col(column)).enumerate() {
            let y = if class == label { T::one() } else { T::zero() };
            let residual = a - y;
            squared_sum += residual.to_f64() * residual.to_f64();
            *d = residual * scale;
        }
    }
    0.5 * squared_sum / m as f64
}

/// Backpropagates `delta[0] = dL_B / dA_N` through the layers, writing
/// `dL_B / dW_l = delta_l A_{l-1}^T` and `dL_B / db_l = delta_l 1` for every layer.
fn backward<T: Real>(network: &Network<T>, buffers: &mut BatchBuffers<T>, m: usize, threads: usize) {
    let widths = network.widths();
    let BatchBuffers { activations, delta, weight_gradients, bias_gradients, .. } = buffers;
    let [first, second] = delta;
    let (mut current, mut below) = (first.as_mut_slice(), second.as_mut_slice());

    for layer in (0..network.depth()).rev() {
        let (rows, cols) = (widths[layer + 1], widths[layer]);
        let delta_layer = &current[..rows * m];
        let input = columns_view(activations[layer].as_slice(), cols, 0..m);

        let par = par_for_flops(matmul_flops(rows, m, cols), threads);
        let delta_view = columns_view(delta_layer, rows, 0..m);
        matmul(weight_gradients[layer].view_mut(), false, delta_view, input.transpose(), T::one(), par);

        let bias_gradient = &mut bias_gradients[layer];
        bias_gradient.fill(T::zero());
        for column in delta_layer.chunks_exact(rows) {
            for (g, &d) in bias_gradient.iter_mut().zip(column) {
                *g += d;
            }
        }

        if layer > 0 {
            // dL/dA_{l-1} = W_l^T delta_l, times the ReLU derivative of hidden layer l - 1.
            let target = &mut below[..cols * m];
            let par = par_for_flops(matmul_flops(cols, rows, m), threads);
            matmul(
                slice_view_mut(target, cols),
                false,
                network.weights(layer).view().transpose(),
                delta_view,
                T::one(),
                par,
            );
            let activation = &activations[layer].as_slice()[..cols * m];
            for (d, &a) in target.iter_mut().zip(activation) {
                if a <= T::zero() {
                    *d = T::zero();
                }
            }
            std::mem::swap(&mut current, &mut below);
        }
    }
}

/// `W_l <- W_l - eta dL_B/dW_l` and `b_l <- b_l - eta dL_B/db_l` for every layer.
fn apply_gradients<T: Real>(network: &mut Network<T>, buffers: &BatchBuffers<T>, learning_rate: T) {
    for layer in 0..network.depth() {
        let (weights, bias) = network.layer_mut(layer);
        for (w, &g) in weights.as_mut_slice().iter_mut().zip(buffers.weight_gradients[layer].as_slice()) {
            *w -= learning_rate * g;
        }
        for (b, &g) in bias.iter_mut().zip(&buffers.bias_gradients[layer]) {
            *b -= learning_rate * g;
        }
    }
}
