//! The trainer: state, workspace and thread pool, and one BCD iteration per `step()`.

use crate::blocks;
pub use crate::config::Block;
use crate::config::{Algorithm, Config, ConfigError, LayerParams, UpdateOrder};
use crate::network::{evaluate_tiled, predict_tiled, Evaluation, Network};
use crate::objective::{evaluate_terms, LayerTerms, ObjectiveTerms};
use crate::two_splitting;
use crate::workspace::Workspace;
use bcdnn_data::DatasetView;
use bcdnn_kernels::loss::OutputUpdate;
use bcdnn_kernels::matrix::{columns_view, slice_view_mut};
use bcdnn_kernels::model::Activation;
use bcdnn_kernels::products::matmul;
use bcdnn_kernels::spd::NotPositiveDefinite;
use bcdnn_kernels::tiling::{for_each_tile_mut, TileGrid, PARTIAL_LEN};
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
    #[error("the {block} block of layer {layer} became non-finite (NaN or infinity) in iteration {iteration}; check the data for non-finite values and gamma, rho and alpha of that layer for extreme values (far above or below 1)")]
    NonFinite { block: &'static str, layer: usize, iteration: usize },
    #[error("block {block} does not exist in the {algorithm} algorithm")]
    NoSuchBlock { block: Block, algorithm: &'static str },
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
    ///
    /// By default each block reports the terms it touches from its own passes: exact sums
    /// for `V_N` and `U`, and optimality identities for `W` and hidden `V`. In `f64` these
    /// agree with an explicit evaluation to within 1e-7 relative (tested). In `f32` the
    /// identities carry rounding of the order of `f32::EPSILON` times the largest terms they
    /// combine (such as `||U||^2`), so late in training the error can exceed `Lbar` itself. With
    /// [`Trainer::set_exact_block_check`] the value comes from an explicit evaluation of
    /// `Lbar` after every block instead.
    pub largest_block_increase: f64,
    /// Whether `largest_block_increase` comes from explicit evaluations.
    pub exact_block_check: bool,
    /// Inner iterations run by the blocks without a closed form.
    pub inner_iterations: usize,
    /// Terms of `Lbar` at the iterate before this step. In the backward order of three-splitting
    /// they are accumulated inside this step's elementwise passes at no extra cost. Other
    /// orders and two-splitting evaluate them explicitly at the end of the previous step.
    pub previous_objective: Option<ObjectiveTerms>,
}

impl StepReport {
    /// `||P^k - P^{k-1}||^2` over all blocks.
    pub fn step_total(&self) -> f64 {
        self.step_w + self.step_u + self.step_v
    }
}

/// Outcome of one block update: its squared step and the terms of `Lbar` that involve the
/// block, before and after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BlockReport {
    /// `||P_block^new - P_block^old||^2`.
    pub step: f64,
    /// Sum of the terms of `Lbar` involving the block, before and after the update. Their
    /// difference is the change of `Lbar`.
    pub local_before: f64,
    pub local_after: f64,
    /// Inner iterations (0 for closed-form updates).
    pub inner_iterations: usize,
}

impl BlockReport {
    /// Change of `Lbar` caused by the update (negative or zero for a descent step).
    pub fn change(&self) -> f64 {
        self.local_after - self.local_before
    }
}

/// Trains a network on a fixed training set by BCD.
///
/// All state (`U_i`, `V_i`, weights) and scratch is allocated in [`Trainer::new`]; each
/// [`Trainer::step`] performs one sweep over the blocks in the configured order. Work runs
/// on a rayon pool owned by the trainer, so several trainers can live in one process.
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
    /// Every term of `Lbar` at the current iterate, kept current block by block.
    terms: LayerTerms,
    /// Objective at the current iterate, evaluated explicitly (orders other than backward).
    explicit_objective: Option<ObjectiveTerms>,
    /// Buffers of the explicit evaluations of the objective.
    spare_terms: LayerTerms,
    /// Whether each step evaluates `Lbar` explicitly after every block.
    exact_block_check: bool,
    /// `||U^old - W V - b||^2` summed by the last pre-activation update.
    last_coupling_old: f64,
    loss_weight: f64,
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
        config.check_prox_linear(n)?;

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
        let mut network = Network::<T>::init(&widths, config.seed, config.init_weight_scale, config.init_bias)
            .with_architecture(&config.activations, &config.skips);
        // Start inside every weight constraint, so that the initial objective is finite.
        for (layer, reg) in config.weight_regularisers.iter().enumerate() {
            if reg.closed_form_l2().is_none() {
                let (weights, _) = network.layer_mut(layer);
                for w in weights.as_mut_slice() {
                    if !reg.value(w.to_f64()).is_finite() {
                        *w = T::from_f64(reg.prox(w.to_f64(), 1.0));
                    }
                }
            }
        }
        let u = widths[1..].iter().map(|&d| ColMatrix::zeros(d, n)).collect();
        let v = widths[1..].iter().map(|&d| ColMatrix::zeros(d, n)).collect();
        let ws = Workspace::new(&config, n, threads);
        let schedule = config.schedule();
        let loss_weight = config.loss_weight(n);

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
            terms: LayerTerms::default(),
            explicit_objective: None,
            spare_terms: LayerTerms::default(),
            exact_block_check: false,
            last_coupling_old: 0.0,
            loss_weight,
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
        trainer.terms = trainer.evaluate_terms();
        trainer.explicit_objective = Some(trainer.terms.objective(&trainer.config));
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
    /// for tests that perturb the state. The trainer re-evaluates its objective terms when
    /// the borrow ends, at the next call of [`Trainer::step`] or [`Trainer::update_block`].
    pub fn state_mut(&mut self) -> (&mut Network<T>, &mut [ColMatrix<T>], &mut [ColMatrix<T>]) {
        self.explicit_objective = None;
        self.terms = LayerTerms::default();
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

    /// Re-evaluates the tracked terms after [`Trainer::state_mut`].
    fn refresh_terms(&mut self) {
        if self.terms.link.is_empty() {
            self.terms = self.evaluate_terms();
            self.explicit_objective = Some(self.terms.objective(&self.config));
        }
    }

    /// Performs one BCD iteration: every block of [`Trainer::schedule`] once.
    pub fn step(&mut self) -> Result<StepReport, TrainError> {
        self.refresh_terms();
        let start = Instant::now();
        let mut report = StepReport { iteration: self.iteration + 1, ..StepReport::default() };
        let backward = self.config.order == UpdateOrder::Backward;
        // Backward order: the loss, activation-coupling and regularisation terms at the start
        // of the step are exact in-pass values. The pre-activation couplings of the previous
        // iterate are summed by this step's U updates.
        let start_terms = self.terms.objective(&self.config);
        let mut previous = ObjectiveTerms { preactivation_coupling: 0.0, ..start_terms };

        report.exact_block_check = self.exact_block_check;
        let mut explicit_before = if self.exact_block_check { self.explicit_total() } else { 0.0 };
        for index in 0..self.schedule.len() {
            let block = self.schedule[index];
            let block_start = Instant::now();
            let outcome = self.update_block(block)?;
            let seconds = block_start.elapsed().as_secs_f64();
            let change = if self.exact_block_check {
                let after = self.explicit_total();
                let change = after - explicit_before;
                explicit_before = after;
                change
            } else {
                outcome.change()
            };
            report.largest_block_increase = report.largest_block_increase.max(change);
            report.inner_iterations += outcome.inner_iterations;
            match block {
                Block::Activation(_) => {
                    report.seconds_v += seconds;
                    report.step_v += outcome.step;
                }
                Block::PreActivation(layer) => {
                    report.seconds_u += seconds;
                    report.step_u += outcome.step;
                    // The U pass sums ||U^old - W V - b||^2 explicitly: the coupling of P^{k-1}.
                    previous.preactivation_coupling += 0.5 * self.config.layers[layer].rho * self.last_coupling_old;
                }
                Block::Weights(_) => {
                    report.seconds_w += seconds;
                    report.step_w += outcome.step;
                }
            }
        }

        self.iteration += 1;
        report.update_seconds = start.elapsed().as_secs_f64();
        if backward && self.config.algorithm == Algorithm::ThreeSplitting {
            report.previous_objective = Some(previous);
        } else {
            report.previous_objective = self.explicit_objective;
            // The spare terms keep their capacity between steps, so this allocates nothing.
            let mut terms = std::mem::take(&mut self.spare_terms);
            self.evaluate_terms_into(&mut terms);
            self.explicit_objective = Some(terms.objective(&self.config));
            self.spare_terms = terms;
        }
        Ok(report)
    }

    /// Makes every [`Trainer::step`] evaluate `Lbar` explicitly after each block, so that
    /// [`StepReport::largest_block_increase`] is exact at the cost of one pass over the
    /// training set per block. Off by default. Timings in the report include the checks.
    pub fn set_exact_block_check(&mut self, on: bool) {
        self.exact_block_check = on;
    }

    /// `Lbar` at the current iterate, evaluated explicitly into the spare buffers.
    fn explicit_total(&mut self) -> f64 {
        let mut terms = std::mem::take(&mut self.spare_terms);
        self.evaluate_terms_into(&mut terms);
        let total = terms.objective(&self.config).total();
        self.spare_terms = terms;
        total
    }

    /// Minimises `Lbar` over one block with all others fixed. Exposed so that tests and
    /// custom schedules can check the objective after every block.
    pub fn update_block(&mut self, block: Block) -> Result<BlockReport, TrainError> {
        self.refresh_terms();
        let depth = self.network.depth();
        let layer = block.layer();
        assert!(layer < depth, "block {block} is outside a network of {depth} layers");
        let outcome = match self.config.algorithm {
            Algorithm::ThreeSplitting => self.update_three_splitting(block)?,
            Algorithm::TwoSplitting => self.update_two_splitting(block)?,
        };
        let finite = outcome.step.is_finite() && outcome.local_after.is_finite();
        if !finite {
            return Err(TrainError::NonFinite { block: block.kind(), layer: layer + 1, iteration: self.iteration + 1 });
        }
        Ok(outcome)
    }

    fn update_three_splitting(&mut self, block: Block) -> Result<BlockReport, TrainError> {
        let depth = self.network.depth();
        let n = self.labels.len();
        let grid = TileGrid::new(n, self.config.tile_width);
        let threads = self.threads;
        let input = input_matrix(self.features, self.converted_input.as_ref());
        let layer = block.layer();
        let config = &self.config;
        let params: LayerParams = config.layers[layer];
        let output_layer = layer + 1 == depth;
        let widths = &config.widths;
        let ws = &mut self.ws;
        let network = &mut self.network;
        let u = &mut self.u;
        let terms = &mut self.terms;
        let last_coupling_old = &mut self.last_coupling_old;
        let (v_before, v_rest) = self.v.split_at_mut(layer);
        let prev: &[T] = if layer == 0 { input } else { v_before[layer - 1].as_slice() };
        let (v_layer, v_after) = v_rest.split_first_mut().expect("the layer exists");
        let labels = self.labels;
        let loss_weight = self.loss_weight;

        self.pool.install(|| -> Result<BlockReport, TrainError> {
            let wrap = |source| TrainError::NotPositiveDefinite { block: block.kind(), layer: layer + 1, source };
            let (gamma, rho, alpha) = (params.gamma, params.rho, params.alpha);
            Ok(match block {
                Block::Activation(_) if output_layer => {
                    let update = OutputUpdate {
                        loss: config.loss,
                        weight: loss_weight,
                        reg: config.activation_regularisers[layer],
                        gamma,
                        alpha,
                    };
                    let s = blocks::output_activation(&update, labels, &u[layer], v_layer, grid, ws);
                    terms.loss = s.loss_new;
                    terms.link[layer] = s.dist_new;
                    terms.activation_reg[layer] = s.reg_new;
                    BlockReport {
                        step: s.step,
                        local_before: s.loss_old + 0.5 * gamma * s.dist_old + s.reg_old,
                        local_after: s.loss_new + 0.5 * gamma * s.dist_new + s.reg_new,
                        inner_iterations: 0,
                    }
                }
                Block::Activation(_) => {
                    let next = config.layers[layer + 1];
                    let hidden = blocks::HiddenActivation {
                        gamma,
                        gamma_next: next.gamma,
                        rho: next.rho,
                        activation: config.activation(layer),
                        activation_next: config.activation(layer + 1),
                        reg: config.activation_regularisers[layer],
                        inner: config.inner,
                        w_next: &network.weights[layer + 1],
                        b_next: &network.biases[layer + 1],
                        u_next: &u[layer + 1],
                        u: &u[layer],
                        skip_input: config.has_skip(layer).then_some(prev),
                        skip_output: config.has_skip(layer + 1).then(|| &v_after[0]),
                    };
                    let s = blocks::hidden_activation(&hidden, v_layer, grid, ws, threads).map_err(wrap)?;
                    let skip_next = config.has_skip(layer + 1);
                    let next_weight = if skip_next { 0.5 * next.gamma } else { 0.0 };
                    let local_before = 0.5 * gamma * s.link_old
                        + next_weight * s.link_next_old
                        + 0.5 * next.rho * terms.coupling[layer + 1]
                        + s.reg_old;
                    let local_after = 0.5 * gamma * s.link_new
                        + next_weight * s.link_next_new
                        + 0.5 * next.rho * s.coupling_next_new
                        + s.reg_new;
                    terms.link[layer] = s.link_new;
                    if skip_next {
                        terms.link[layer + 1] = s.link_next_new;
                    }
                    terms.coupling[layer + 1] = s.coupling_next_new;
                    terms.activation_reg[layer] = s.reg_new;
                    BlockReport { step: s.step, local_before, local_after, inner_iterations: s.inner_iterations }
                }
                Block::PreActivation(_) => {
                    let activation = (!output_layer).then(|| config.activation(layer));
                    let s = blocks::preactivation(
                        (gamma, rho, alpha),
                        activation,
                        config.has_skip(layer).then_some(prev),
                        &network.weights[layer],
                        &network.biases[layer],
                        prev,
                        v_layer,
                        &mut u[layer],
                        grid,
                        ws,
                    );
                    terms.coupling[layer] = s.u.coupling_new;
                    terms.link[layer] = s.u.link_new;
                    *last_coupling_old = s.u.coupling_old;
                    terms.u_norm2[layer] = s.norm2;
                    BlockReport {
                        step: s.u.step,
                        local_before: 0.5 * rho * s.u.coupling_old + 0.5 * gamma * s.u.link_old,
                        local_after: 0.5 * rho * s.u.coupling_new + 0.5 * gamma * s.u.link_new,
                        inner_iterations: 0,
                    }
                }
                Block::Weights(_) => {
                    let prev_view = columns_view(prev, widths[layer], 0..n);
                    let (weights, bias) = network.layer_mut(layer);
                    let update = blocks::WeightUpdate {
                        rho,
                        alpha,
                        reg: config.weight_regularisers[layer],
                        inner: config.inner,
                        target_norm2: terms.u_norm2[layer],
                    };
                    let s = blocks::weights(update, prev_view, &u[layer], weights, bias, layer == 0, ws, threads)
                        .map_err(wrap)?;
                    let local_before = 0.5 * rho * terms.coupling[layer] + s.reg_old;
                    let local_after = 0.5 * rho * s.coupling_new + s.reg_new;
                    terms.coupling[layer] = s.coupling_new;
                    terms.weight_reg[layer] = s.reg_new;
                    BlockReport { step: s.step, local_before, local_after, inner_iterations: s.inner_iterations }
                }
            })
        })
    }

    fn update_two_splitting(&mut self, block: Block) -> Result<BlockReport, TrainError> {
        let depth = self.network.depth();
        let layer = block.layer();
        let output_layer = layer + 1 == depth;
        if let Block::Activation(_) = block {
            if output_layer {
                // `U_N` holds `Z_N`, so the three-splitting output update is the same block.
                return self.update_three_splitting(block);
            }
        }
        let n = self.labels.len();
        let grid = TileGrid::new(n, self.config.tile_width);
        let threads = self.threads;
        let input = input_matrix(self.features, self.converted_input.as_ref());
        let config = &self.config;
        let params: LayerParams = config.layers[layer];
        let (gamma, alpha) = (params.gamma, params.alpha);
        let widths = &config.widths;
        let ws = &mut self.ws;
        let network = &mut self.network;
        let u = &mut self.u;
        let terms = &mut self.terms;
        let (v_before, v_rest) = self.v.split_at_mut(layer);
        let prev: &[T] = if layer == 0 { input } else { v_before[layer - 1].as_slice() };
        let (v_layer, v_after) = v_rest.split_first_mut().expect("the layer exists");
        let algorithm = config.algorithm.name();

        self.pool.install(|| -> Result<BlockReport, TrainError> {
            let wrap = |source| TrainError::NotPositiveDefinite { block: block.kind(), layer: layer + 1, source };
            Ok(match block {
                Block::PreActivation(_) => return Err(TrainError::NoSuchBlock { block, algorithm }),
                Block::Weights(_) if output_layer => {
                    // The output is linear: the joint least-squares update with V_N as target.
                    let target_norm2: f64 = v_layer.as_slice().iter().map(|&x| x.to_f64().powi(2)).sum();
                    let prev_view = columns_view(prev, widths[layer], 0..n);
                    let (weights, bias) = network.layer_mut(layer);
                    let update = blocks::WeightUpdate {
                        rho: gamma,
                        alpha,
                        reg: config.weight_regularisers[layer],
                        inner: config.inner,
                        target_norm2,
                    };
                    let s = blocks::weights(update, prev_view, v_layer, weights, bias, layer == 0, ws, threads)
                        .map_err(wrap)?;
                    two_splitting::forward_layer(
                        &network.weights[layer],
                        &network.biases[layer],
                        prev,
                        Activation::Linear,
                        None,
                        &mut u[layer],
                        grid,
                        &mut ws.partials,
                        &ws.scratch,
                    );
                    let link_new =
                        two_splitting::link_of_layer(&u[layer], v_layer, grid, &mut ws.partials, &ws.scratch);
                    let local_before = 0.5 * gamma * terms.link[layer] + s.reg_old;
                    let local_after = 0.5 * gamma * link_new + s.reg_new;
                    terms.link[layer] = link_new;
                    terms.weight_reg[layer] = s.reg_new;
                    BlockReport { step: s.step, local_before, local_after, inner_iterations: s.inner_iterations }
                }
                Block::Weights(_) => {
                    let hidden = two_splitting::HiddenWeights {
                        gamma,
                        alpha,
                        activation: config.activation(layer),
                        reg: config.weight_regularisers[layer],
                        inner: config.inner,
                        prev,
                        v: v_layer.as_slice(),
                        skip_input: config.has_skip(layer).then_some(prev),
                    };
                    let buffers = ws.two_splitting.as_mut().expect("two-splitting buffers exist for this algorithm");
                    let (weights, bias) = network.layer_mut(layer);
                    let s = two_splitting::hidden_weights(
                        &hidden,
                        layer,
                        weights,
                        bias,
                        &mut u[layer],
                        buffers,
                        grid,
                        &mut ws.partials,
                        &ws.scratch,
                    );
                    terms.link[layer] = s.link_new;
                    terms.weight_reg[layer] = s.reg_new;
                    BlockReport {
                        step: s.step,
                        local_before: 0.5 * gamma * s.link_old + s.reg_old,
                        local_after: 0.5 * gamma * s.link_new + s.reg_new,
                        inner_iterations: s.iterations,
                    }
                }
                Block::Activation(_) => {
                    let next = config.layers[layer + 1];
                    let skip_next = config.has_skip(layer + 1);
                    let w_next = &network.weights[layer + 1];
                    let frobenius: f64 = w_next.as_slice().iter().map(|&x| x.to_f64().powi(2)).sum();
                    let lipschitz = gamma + alpha + next.gamma * (frobenius + if skip_next { 1.0 } else { 0.0 }) * 2.0;
                    let (u_layer, u_next) = u.split_at_mut(layer + 1);
                    let hidden = two_splitting::HiddenActivation {
                        gamma,
                        gamma_next: next.gamma,
                        alpha,
                        activation: config.activation(layer),
                        activation_next: config.activation(layer + 1),
                        reg: config.activation_regularisers[layer],
                        inner: config.inner,
                        z: u_layer[layer].as_slice(),
                        skip_input: config.has_skip(layer).then_some(prev),
                        w_next,
                        b_next: &network.biases[layer + 1],
                        v_next: v_after[0].as_slice(),
                        skip_next,
                        lipschitz,
                    };
                    let s = two_splitting::hidden_activation(
                        &hidden,
                        v_layer,
                        &mut u_next[0],
                        grid,
                        &mut ws.partials,
                        &ws.scratch,
                    );
                    terms.link[layer] = s.link_new;
                    terms.link[layer + 1] = s.link_next_new;
                    terms.activation_reg[layer] = s.reg_new;
                    BlockReport {
                        step: s.step,
                        local_before: 0.5 * gamma * s.link_old + 0.5 * next.gamma * s.link_next_old + s.reg_old,
                        local_after: 0.5 * gamma * s.link_new + 0.5 * next.gamma * s.link_next_new + s.reg_new,
                        inner_iterations: s.iterations,
                    }
                }
            })
        })
    }

    /// Evaluates every term of `Lbar` at the current iterate explicitly (one product per
    /// layer over the training set).
    pub fn objective(&mut self) -> ObjectiveTerms {
        self.evaluate_terms().objective(&self.config)
    }

    fn evaluate_terms(&mut self) -> LayerTerms {
        let mut terms = LayerTerms::default();
        self.evaluate_terms_into(&mut terms);
        terms
    }

    fn evaluate_terms_into(&mut self, terms: &mut LayerTerms) {
        let input = input_matrix(self.features, self.converted_input.as_ref());
        let (config, network, labels, u, v) = (&self.config, &self.network, self.labels, &self.u, &self.v);
        let ws = &mut self.ws;
        self.pool.install(|| evaluate_terms(config, network, input, labels, u, v, &ws.scratch, &mut ws.partials, terms))
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

/// `U_l = W_l V_{l-1} + b_l 1^T`, `V_l = sigma_l(U_l) + S_l V_{l-1}` (linear on the output
/// layer), and the Gram matrix of the fixed input.
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
