//! The trainer: state, workspace and thread pool, and one BCD iteration per `step()`.

use crate::blocks;
pub use crate::config::Block;
use crate::config::{Config, ConfigError, LayerParams};
use crate::network::{evaluate_tiled, predict_tiled, Evaluation, Network};
use crate::objective::{evaluate_objective, ObjectiveTerms};
use crate::workspace::Workspace;
use bcdnn_data::DatasetView;
use bcdnn_kernels::matrix::{columns_view, slice_view_mut};
use bcdnn_kernels::products::matmul;
use bcdnn_kernels::spd::NotPositiveDefinite;
use bcdnn_kernels::tiling::{for_each_tile_mut, partial, Partial, TileGrid, PARTIAL_LEN};
use bcdnn_kernels::{ColMatrix, Real};
use faer::Par;
use serde::Serialize;
use std::time::Instant;

/// Error that stops training from starting or continuing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    #[error("{features} feature values do not form a {rows} x {columns} matrix (one column per prediction); pass {rows} values per sample")]
    PredictionShapeMismatch { features: usize, rows: usize, columns: usize },
    #[error("{block} block of layer {layer}: {source}; the block's system is too ill-conditioned in floating point, so bring gamma, rho and alpha of that layer closer to each other (a larger alpha relative to rho helps most)")]
    NotPositiveDefinite { block: &'static str, layer: usize, source: NotPositiveDefinite },
    #[error("the {block} block of layer {layer} became non-finite (NaN or infinity) in iteration {iteration}; reduce the parameters' scale or check the data")]
    NonFinite { block: &'static str, layer: usize, iteration: usize },
    #[error("could not start the thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
}

/// Report of one `step()`: times, step lengths and the previous objective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepReport {
    /// Iterations completed, this one included (the first `step()` reports 1).
    pub iteration: usize,
    /// Wall time of the block updates.
    pub update_seconds: f64,
    /// Wall time per block kind.
    pub seconds_w: f64,
    pub seconds_u: f64,
    pub seconds_v: f64,
    /// `||P^k - P^{k-1}||^2` split by block kind.
    pub step_w: f64,
    pub step_u: f64,
    pub step_v: f64,
    /// Largest increase of `Lbar` caused by any single block update of this step (0 when
    /// every block decreased it, as exact minimisation guarantees up to rounding).
    pub largest_block_increase: f64,
    /// The terms of `Lbar` at the iterate before this step, accumulated inside this step's
    /// elementwise passes at no extra cost (backward order only).
    pub previous_objective: Option<ObjectiveTerms>,
}

impl StepReport {
    /// `||P^k - P^{k-1}||^2` over all blocks.
    pub fn step_total(&self) -> f64 {
        self.step_w + self.step_u + self.step_v
    }
}

/// Trains a network on a fixed training set by three-splitting BCD.
///
/// All state (`U_i`, `V_i`, weights) and scratch is allocated in [`Trainer::new`]; each
/// [`Trainer::step`] performs one full sweep over the blocks in backward order. Work runs on a
/// rayon pool owned by the trainer, so several trainers can live in one process.
pub struct Trainer<'a, T: Real = f32> {
    config: Config,
    features: &'a [f32],
    labels: &'a [u8],
    /// `X` converted to `T` when `T` is not `f32`.
    converted_input: Option<ColMatrix<T>>,
    pool: rayon::ThreadPool,
    threads: usize,
    network: Network<T>,
    u: Vec<ColMatrix<T>>,
    v: Vec<ColMatrix<T>>,
    ws: Workspace<T>,
    schedule: Vec<Block>,
    iteration: usize,
    /// Loss and activation-coupling terms of the current iterate, from the last step.
    current_terms: ObjectiveTerms,
}

impl<'a, T: Real> Trainer<'a, T> {
    /// Validates `config` against the data, allocates all state and scratch, initialises the
    /// weights from the seed and sets `U`, `V` by one forward pass.
    pub fn new(config: Config, train: DatasetView<'a>) -> Result<Self, TrainError> {
        config.validate()?;
        if train.n_features() != config.input_width() {
            return Err(TrainError::InputWidthMismatch { expected: config.input_width(), found: train.n_features() });
        }
        if train.n_classes() != config.classes() {
            return Err(TrainError::ClassCountMismatch { expected: config.classes(), found: train.n_classes() });
        }
        let n = train.n_samples();
        if n == 0 {
            return Err(TrainError::EmptyTrainingSet);
        }

        // A tile never needs more columns than there are samples; the clamp also bounds the
        // per-thread scratch, which is sized by the tile width.
        let mut config = config;
        config.tile_width = config.tile_width.min(n);
        let threads = config.resolved_threads();
        let pool =
            rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("bcdnn-{i}")).build()?;
        let widths = config.widths.clone();
        let features = train.features();
        let converted_input = match T::borrow_f32(features) {
            Some(_) => None,
            None => Some(ColMatrix::from_vec(features.iter().map(|&x| T::from_f64(x as f64)).collect(), widths[0], n)),
        };
        let network = Network::init(&widths, config.seed, config.init_weight_scale, config.init_bias);
        let u = widths[1..].iter().map(|&d| ColMatrix::zeros(d, n)).collect();
        let v = widths[1..].iter().map(|&d| ColMatrix::zeros(d, n)).collect();
        let ws = Workspace::new(&widths, n, config.tile_width, threads);
        let depth = config.depth();
        let mut schedule =
            vec![Block::Activation(depth - 1), Block::PreActivation(depth - 1), Block::Weights(depth - 1)];
        for l in (0..depth - 1).rev() {
            schedule.extend([Block::Activation(l), Block::PreActivation(l), Block::Weights(l)]);
        }

        let mut trainer = Self {
            config,
            features,
            labels: train.labels(),
            converted_input,
            pool,
            threads,
            network,
            u,
            v,
            ws,
            schedule,
            iteration: 0,
            current_terms: ObjectiveTerms::default(),
        };
        let Self { pool, config, features, converted_input, network, u, v, ws, threads, labels, .. } = &mut trainer;
        pool.install(|| {
            initialise_state_and_input_gram(
                config,
                features,
                labels.len(),
                converted_input.as_ref(),
                network,
                u,
                v,
                ws,
                *threads,
            )
        });
        trainer.current_terms = trainer.objective();
        Ok(trainer)
    }

    /// Returns the configuration the trainer was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Worker threads of the trainer's pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Iterations completed.
    pub fn iteration(&self) -> usize {
        self.iteration
    }

    /// Current weights and biases.
    pub fn network(&self) -> &Network<T> {
        &self.network
    }

    /// Pre-activations `U_l` (0-based layer).
    pub fn preactivations(&self, layer: usize) -> &ColMatrix<T> {
        &self.u[layer]
    }

    /// Activations `V_l` (0-based layer).
    pub fn activations(&self, layer: usize) -> &ColMatrix<T> {
        &self.v[layer]
    }

    /// Mutable access to the weights, pre-activations and activations, for warm starts and
    /// for tests that perturb the state. Changing them makes the next step's
    /// `previous_objective` describe a mix of old and new values; call
    /// [`Trainer::objective`] for an exact value.
    pub fn state_mut(&mut self) -> (&mut Network<T>, &mut [ColMatrix<T>], &mut [ColMatrix<T>]) {
        (&mut self.network, &mut self.u, &mut self.v)
    }

    /// Returns the block order of one iteration.
    pub fn schedule(&self) -> &[Block] {
        &self.schedule
    }

    /// Bytes held by the state (`U`, `V`, weights) and by the workspace.
    pub fn memory_bytes(&self) -> (usize, usize) {
        let state: usize = self.u.iter().chain(&self.v).map(|m| m.size_bytes()).sum::<usize>()
            + self.network.weights.iter().map(|w| w.size_bytes()).sum::<usize>()
            + self.network.biases.iter().map(|b| b.len() * std::mem::size_of::<T>()).sum::<usize>();
        let workspace = self.ws.size_bytes() + self.converted_input.as_ref().map_or(0, |m| m.size_bytes());
        (state, workspace)
    }

    /// Performs one BCD iteration: every block of [`Trainer::schedule`] once.
    pub fn step(&mut self) -> Result<StepReport, TrainError> {
        let start = Instant::now();
        let mut report = StepReport { iteration: self.iteration + 1, ..StepReport::default() };
        let mut previous = ObjectiveTerms {
            loss: self.current_terms.loss,
            activation_coupling: self.current_terms.activation_coupling,
            preactivation_coupling: 0.0,
        };
        let mut current = ObjectiveTerms::default();

        for index in 0..self.schedule.len() {
            let block = self.schedule[index];
            let block_start = Instant::now();
            let sums = self.update_block(block)?;
            let seconds = block_start.elapsed().as_secs_f64();
            let layer = block.layer();
            let params = self.config.layers[layer];
            let output_layer = layer + 1 == self.network.depth();
            match block {
                Block::Activation(_) => {
                    report.seconds_v += seconds;
                    if output_layer {
                        current.loss = 0.5 * sums[0];
                        report.step_v += sums[1];
                    } else {
                        report.step_v += sums[0];
                    }
                }
                Block::PreActivation(_) => {
                    report.seconds_u += seconds;
                    previous.preactivation_coupling += 0.5 * params.rho * sums[0];
                    current.activation_coupling += 0.5 * params.gamma * sums[1];
                    report.step_u += sums[2];
                }
                Block::Weights(_) => {
                    report.seconds_w += seconds;
                    report.step_w += sums[0];
                }
            }
        }

        self.iteration += 1;
        self.current_terms = current;
        report.previous_objective = Some(previous);
        report.update_seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Minimises `Lbar` over one block with all others fixed and returns the block's partial
    /// sums (see the functions in `blocks`). Exposed so that tests and custom schedules can
    /// check the objective after every block.
    pub fn update_block(&mut self, block: Block) -> Result<Partial, TrainError> {
        let depth = self.network.depth();
        let n = self.labels.len();
        let grid = TileGrid::new(n, self.config.tile_width);
        let threads = self.threads;
        let input = input_matrix(self.features, self.converted_input.as_ref());
        let layer = block.layer();
        assert!(layer < depth, "block {block:?} is outside a network of {depth} layers");
        let params: LayerParams = self.config.layers[layer];
        let output_layer = layer + 1 == depth;
        let widths = &self.config.widths;
        let ws = &mut self.ws;
        let network = &mut self.network;
        let u = &mut self.u;
        let (v_before, v_rest) = self.v.split_at_mut(layer);
        let prev: &[T] = if layer == 0 { input } else { v_before[layer - 1].as_slice() };
        let v_layer = &mut v_rest[0];
        let labels = self.labels;

        let sums = self.pool.install(|| -> Result<Partial, TrainError> {
            let wrap = |source| TrainError::NotPositiveDefinite { block: block.kind(), layer: layer + 1, source };
            Ok(match block {
                Block::Activation(_) if output_layer => {
                    blocks::output_activation(params, labels, &u[layer], v_layer, grid, ws)
                }
                Block::Activation(_) => {
                    let next = self.config.layers[layer + 1];
                    let step = blocks::hidden_activation(
                        params.gamma,
                        next.rho,
                        &network.weights[layer + 1],
                        &network.biases[layer + 1],
                        &u[layer + 1],
                        &u[layer],
                        v_layer,
                        grid,
                        ws,
                        threads,
                    )
                    .map_err(wrap)?;
                    partial(&[step])
                }
                Block::PreActivation(_) => blocks::preactivation(
                    params,
                    output_layer,
                    &network.weights[layer],
                    &network.biases[layer],
                    prev,
                    v_layer,
                    &mut u[layer],
                    grid,
                    ws,
                ),
                Block::Weights(_) => {
                    let prev_view = columns_view(prev, widths[layer], 0..n);
                    let (weights, bias) = network.layer_mut(layer);
                    let step = blocks::weights(params, prev_view, &u[layer], weights, bias, layer == 0, ws, threads)
                        .map_err(wrap)?;
                    partial(&[step])
                }
            })
        })?;
        if sums.iter().any(|s| !s.is_finite()) {
            return Err(TrainError::NonFinite { block: block.kind(), layer: layer + 1, iteration: self.iteration + 1 });
        }
        Ok(sums)
    }

    /// Evaluates every term of `Lbar` at the current iterate explicitly (one product per
    /// layer over the training set).
    pub fn objective(&mut self) -> ObjectiveTerms {
        let input = input_matrix(self.features, self.converted_input.as_ref());
        let (network, params, labels, u, v) = (&self.network, &self.config.layers, self.labels, &self.u, &self.v);
        let tile_width = self.config.tile_width;
        let ws = &mut self.ws;
        self.pool.install(|| {
            evaluate_objective(network, params, input, labels, u, v, tile_width, &ws.scratch, &mut ws.partials)
        })
    }

    /// Accuracy and squared loss of the plain forward pass of the current weights on `data`.
    pub fn evaluate(&mut self, data: DatasetView<'_>) -> Result<Evaluation, TrainError> {
        if data.n_features() != self.config.input_width() {
            return Err(TrainError::EvaluationWidthMismatch {
                expected: self.config.input_width(),
                found: data.n_features(),
            });
        }
        let tiles = data.n_samples().div_ceil(self.config.tile_width);
        if self.ws.partials.len() < tiles {
            self.ws.partials.resize(tiles, [0.0; PARTIAL_LEN]);
        }
        let (network, tile_width, ws) = (&self.network, self.config.tile_width, &mut self.ws);
        Ok(self.pool.install(|| {
            evaluate_tiled(network, data.features(), data.labels(), tile_width, &ws.scratch, &mut ws.partials)
        }))
    }

    /// Predicted class of every sample of `data`, written into `out` (length `n_samples`).
    pub fn predict(&self, data: DatasetView<'_>, out: &mut [u32]) -> Result<(), TrainError> {
        self.predict_features(data.features(), out)
    }

    /// Predicted class of every column of the column-major `d_0 x out.len()` matrix
    /// `features`, written into `out`. Needs no labels.
    pub fn predict_features(&self, features: &[f32], out: &mut [u32]) -> Result<(), TrainError> {
        let d0 = self.config.input_width();
        if features.len() != d0 * out.len() {
            return Err(TrainError::PredictionShapeMismatch { features: features.len(), rows: d0, columns: out.len() });
        }
        let (network, tile_width, scratch) = (&self.network, self.config.tile_width, &self.ws.scratch);
        self.pool.install(|| predict_tiled(network, features, out, tile_width, scratch));
        Ok(())
    }
}

/// `U_l = W_l V_{l-1} + b_l 1^T`, `V_l = relu(U_l)` (linear on the output layer), and the
/// Gram matrix of the fixed input.
#[allow(clippy::too_many_arguments)]
fn initialise_state_and_input_gram<T: Real>(
    config: &Config,
    features: &[f32],
    n: usize,
    converted_input: Option<&ColMatrix<T>>,
    network: &Network<T>,
    u: &mut [ColMatrix<T>],
    v: &mut [ColMatrix<T>],
    ws: &mut Workspace<T>,
    threads: usize,
) {
    let grid = TileGrid::new(n, config.tile_width);
    let depth = network.depth();
    let input = input_matrix(features, converted_input);
    for layer in 0..depth {
        let rows = config.widths[layer + 1];
        let cols = config.widths[layer];
        let (before, rest) = v.split_at_mut(layer);
        let prev: &[T] = if layer == 0 { input } else { before[layer - 1].as_slice() };
        let weights = &network.weights[layer];
        let bias = &network.biases[layer];
        for_each_tile_mut(grid, u[layer].as_mut_slice(), rows, &mut ws.partials, &ws.scratch, |columns, tile, _| {
            matmul(
                slice_view_mut(tile, rows),
                false,
                weights.view(),
                columns_view(prev, cols, columns),
                T::one(),
                Par::Seq,
            );
            for column in tile.chunks_exact_mut(rows) {
                T::add_bias(column, bias);
            }
            [0.0; PARTIAL_LEN]
        });
        let hidden = layer + 1 < depth;
        let u_l = &u[layer];
        for_each_tile_mut(grid, rest[0].as_mut_slice(), rows, &mut ws.partials, &ws.scratch, |columns, tile, _| {
            let source = &u_l.as_slice()[columns.start * rows..columns.end * rows];
            if hidden {
                T::relu(tile, source);
            } else {
                tile.copy_from_slice(source);
            }
            [0.0; PARTIAL_LEN]
        });
    }
    let x = columns_view(input, config.widths[0], 0..n);
    blocks::augmented_gram(&mut ws.input_gram, x, &ws.ones, &mut ws.chunk_scratch, threads);
}

/// Returns `X` as `T`: the converted copy when there is one, else the `f32` features borrowed
/// (the trainer makes a copy exactly when `T` cannot borrow `f32` data).
fn input_matrix<'x, T: Real>(features: &'x [f32], converted: Option<&'x ColMatrix<T>>) -> &'x [T] {
    match converted {
        Some(matrix) => matrix.as_slice(),
        None => T::borrow_f32(features).expect("the trainer converts the input whenever T is not f32"),
    }
}
