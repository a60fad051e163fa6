//! Validated training configuration.

use bcdnn_kernels::model::{Activation, ActivationRegulariser, Loss, LossScale, WeightRegulariser};
use bcdnn_kernels::tiling::DEFAULT_TILE_WIDTH;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Penalty and proximal weights of one layer.
///
/// `gamma` weighs the activation coupling `||V_i - sigma(U_i)||^2`, `rho` the pre-activation
/// coupling `||U_i - W_i V_{i-1} - b_i 1^T||^2`, and `alpha` the proximal terms added to the
/// blocks that are not strongly convex on their own (`W_i`, `U_i`, and the output `V_N`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerParams {
    pub gamma: f64,
    pub rho: f64,
    pub alpha: f64,
}

impl Default for LayerParams {
    fn default() -> Self {
        Self { gamma: 1.0, rho: 1.0, alpha: 1.0 }
    }
}

/// One block of BCD, with its 0-based layer index (`0` is the first hidden layer,
/// `depth - 1` the output layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Block {
    /// Activations `V_l` (the output `V_N` for the last layer).
    Activation(usize),
    /// Pre-activations `U_l` (three-splitting only).
    PreActivation(usize),
    /// Weights and bias `(W_l, b_l)`, updated jointly.
    Weights(usize),
}

impl Block {
    /// Short name of the block kind: `"V"`, `"U"` or `"W"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Block::Activation(_) => "V",
            Block::PreActivation(_) => "U",
            Block::Weights(_) => "W",
        }
    }

    /// 0-based layer index.
    pub fn layer(&self) -> usize {
        match *self {
            Block::Activation(l) | Block::PreActivation(l) | Block::Weights(l) => l,
        }
    }

    /// Parses the notation of [`Block`]'s `Display`: a kind letter and a 1-based layer
    /// number, such as `V3`, `U1` or `W10`.
    pub fn parse(text: &str) -> Option<Block> {
        let text = text.trim();
        let mut chars = text.chars();
        let kind = chars.next()?.to_ascii_uppercase();
        let layer: usize = chars.as_str().parse().ok()?;
        let index = layer.checked_sub(1)?;
        match kind {
            'V' => Some(Block::Activation(index)),
            'U' => Some(Block::PreActivation(index)),
            'W' => Some(Block::Weights(index)),
            _ => None,
        }
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind(), self.layer() + 1)
    }
}

/// Splitting of the training problem that BCD minimises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Variables `W_i, b_i, U_i, V_i`; every block is minimised exactly.
    #[default]
    ThreeSplitting,
    /// Variables `W_i, b_i, V_i` with couplings `||V_i - sigma(W_i V_{i-1} + b_i 1^T)||^2`; the
    /// hidden blocks are nonlinear least squares, solved by monotone inner iterations.
    TwoSplitting,
}

impl Algorithm {
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::ThreeSplitting => "three-splitting",
            Algorithm::TwoSplitting => "two-splitting",
        }
    }
}

/// Order of the blocks within one iteration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// From the output layer to the first: `V_N, U_N, W_N, V_{N-1}, ..., W_1`. Lets the
    /// trainer accumulate the objective inside the updates at no extra cost.
    #[default]
    Backward,
    /// From the first layer to the output: `W_1, U_1, V_1, ..., W_N, U_N, V_N`.
    Forward,
    /// Any fixed permutation of the blocks.
    Custom(Vec<Block>),
}

/// Bounds of the inner iterations of the blocks without a closed-form minimiser
/// (non-quadratic regularisers, two-splitting).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InnerSolve {
    /// Largest number of inner iterations per block update.
    pub max_iterations: usize,
    /// Stop when an iteration lowers the block objective by less than this fraction of its
    /// value.
    pub tolerance: f64,
}

impl InnerSolve {
    /// Converts these bounds into the kernels' form.
    pub fn kernels(&self) -> bcdnn_kernels::fista::InnerSolve {
        bcdnn_kernels::fista::InnerSolve { max_iterations: self.max_iterations, tolerance: self.tolerance }
    }
}

impl Default for InnerSolve {
    fn default() -> Self {
        Self { max_iterations: 50, tolerance: 1e-6 }
    }
}

/// A validated configuration; build it with [`Config::builder`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Widths `d_0, d_1, ..., d_N`: inputs, hidden layers, classes.
    pub widths: Vec<usize>,
    /// Parameters of layers `1..=N`, in order (`layers[0]` is layer 1).
    pub layers: Vec<LayerParams>,
    /// Activation of hidden layers `1..N` (`activations[0]` is layer 1); the output layer is
    /// linear.
    pub activations: Vec<Activation>,
    /// Whether hidden layer `i` (`skips[i - 1]`) has an identity skip connection
    /// `V_i = sigma(U_i) + V_{i-1}`; needs `d_i = d_{i-1}`.
    pub skips: Vec<bool>,
    /// Regulariser on the weights of layers `1..=N`.
    pub weight_regularisers: Vec<WeightRegulariser>,
    /// Regulariser on the activations of layers `1..=N` (the last is on the output `V_N`).
    pub activation_regularisers: Vec<ActivationRegulariser>,
    /// Output loss.
    pub loss: Loss,
    /// Sum or mean of the loss over samples.
    pub loss_scale: LossScale,
    /// Three- or two-splitting.
    pub algorithm: Algorithm,
    /// Block order of one iteration.
    pub order: UpdateOrder,
    /// Bounds of the inner iterations.
    pub inner: InnerSolve,
    /// Seed of the weight initialisation.
    pub seed: u64,
    /// Worker threads; `0` means one per available core.
    pub threads: usize,
    /// Sample columns per tile of the parallel loops.
    pub tile_width: usize,
    /// Standard deviation of the initial weights, `W ~ init_weight_scale N(0, 1)`.
    pub init_weight_scale: f64,
    /// Initial value of every bias entry.
    pub init_bias: f64,
}

/// A configuration value that cannot be trained with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("the network needs an input width and an output width, but {count} widths were given")]
    TooFewWidths { count: usize },
    #[error("width of layer {layer} is 0; every layer needs at least one unit")]
    ZeroWidth { layer: usize },
    #[error("{name} of layer {layer} is {value}; it must be a finite number greater than 0")]
    InvalidParameter { name: &'static str, layer: usize, value: f64 },
    #[error("{count} layer parameter sets were given for a network of {layers} layers")]
    LayerCountMismatch { count: usize, layers: usize },
    #[error("layer {layer} does not exist for this setting; it takes layers 1 to {layers}")]
    LayerOutOfRange { layer: usize, layers: usize },
    #[error("layer {layer} has a skip connection but its width {width} differs from its input width {input}; skips need equal widths")]
    SkipWidthMismatch { layer: usize, width: usize, input: usize },
    #[error("layer {layer} is the output layer, which cannot have a skip connection; skips go on hidden layers 1..={hidden}")]
    SkipOnOutputLayer { layer: usize, hidden: usize },
    #[error("leaky ReLU slope of layer {layer} is {value}; it must be at least 0 and below 1")]
    InvalidSlope { layer: usize, value: f64 },
    #[error("{name} of the {target} regulariser of layer {layer} is {value}; it must be a finite number at least 0")]
    InvalidRegularisation { target: &'static str, name: &'static str, layer: usize, value: f64 },
    #[error("box bounds of the {target} regulariser of layer {layer} are [{lower}, {upper}]; the lower bound must be finite or -inf, not above the upper bound")]
    InvalidBox { target: &'static str, layer: usize, lower: f64, upper: f64 },
    #[error("the {loss} loss is updated by a prox-linear step that needs alpha of the output layer above {bound}, but it is {alpha}; raise alpha or gamma of layer {layer}")]
    ProxLinearAlpha { loss: &'static str, layer: usize, alpha: f64, bound: f64 },
    #[error("the update order names block {block}, which the {algorithm} algorithm on {layers} layers does not have")]
    OrderUnknownBlock { block: Block, algorithm: &'static str, layers: usize },
    #[error("the update order names block {block} twice; each block appears exactly once")]
    OrderDuplicateBlock { block: Block },
    #[error("the update order leaves out block {block}; each block appears exactly once")]
    OrderMissingBlock { block: Block },
    #[error("inner iterations are 0; the blocks without a closed form need at least 1")]
    ZeroInnerIterations,
    #[error("inner tolerance is {value}; it must be a finite number at least 0")]
    InvalidInnerTolerance { value: f64 },
    #[error("tile width is 0; use a positive number of sample columns per tile")]
    ZeroTileWidth,
    #[error("initial weight scale is {value}; it must be finite and not negative")]
    InvalidInitScale { value: f64 },
    #[error("initial bias is {value}; it must be finite")]
    InvalidInitBias { value: f64 },
}

impl Config {
    /// Starts a configuration for `input` features, the given hidden widths and `classes`
    /// outputs, with every layer at `gamma = rho = alpha = 1`.
    pub fn builder(input: usize, hidden: &[usize], classes: usize) -> ConfigBuilder {
        let mut widths = Vec::with_capacity(hidden.len() + 2);
        widths.push(input);
        widths.extend_from_slice(hidden);
        widths.push(classes);
        let depth = widths.len().saturating_sub(1);
        let hidden = depth.saturating_sub(1);
        let layers = vec![LayerParams::default(); depth];
        ConfigBuilder {
            config: Config {
                widths,
                layers,
                activations: vec![Activation::Relu; hidden],
                skips: vec![false; hidden],
                weight_regularisers: vec![WeightRegulariser::None; depth],
                activation_regularisers: vec![ActivationRegulariser::None; depth],
                loss: Loss::Squared,
                loss_scale: LossScale::Sum,
                algorithm: Algorithm::ThreeSplitting,
                order: UpdateOrder::Backward,
                inner: InnerSolve::default(),
                seed: 0,
                threads: 0,
                tile_width: DEFAULT_TILE_WIDTH,
                init_weight_scale: 0.01,
                init_bias: 0.1,
            },
            layer_overrides: Vec::new(),
            skip_layers: Vec::new(),
            layer_activations: Vec::new(),
            layer_weight_regularisers: Vec::new(),
            layer_activation_regularisers: Vec::new(),
        }
    }

    /// Number of weight layers `N`.
    pub fn depth(&self) -> usize {
        self.widths.len() - 1
    }

    pub fn input_width(&self) -> usize {
        self.widths[0]
    }

    pub fn classes(&self) -> usize {
        *self.widths.last().expect("validated widths are not empty")
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
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.widths.len() < 2 {
            return Err(ConfigError::TooFewWidths { count: self.widths.len() });
        }
        if let Some(layer) = self.widths.iter().position(|&w| w == 0) {
            return Err(ConfigError::ZeroWidth { layer });
        }
        if self.layers.len() != self.depth() {
            return Err(ConfigError::LayerCountMismatch { count: self.layers.len(), layers: self.depth() });
        }
        for (index, params) in self.layers.iter().enumerate() {
            let layer = index + 1;
            for (name, value) in [("gamma", params.gamma), ("rho", params.rho), ("alpha", params.alpha)] {
                if !(value.is_finite() && value > 0.0) {
                    return Err(ConfigError::InvalidParameter { name, layer, value });
                }
            }
        }
        self.validate_model()?;
        if self.tile_width == 0 {
            return Err(ConfigError::ZeroTileWidth);
        }
        if !(self.init_weight_scale.is_finite() && self.init_weight_scale >= 0.0) {
            return Err(ConfigError::InvalidInitScale { value: self.init_weight_scale });
        }
        if !self.init_bias.is_finite() {
            return Err(ConfigError::InvalidInitBias { value: self.init_bias });
        }
        Ok(())
    }
}

impl Config {
    /// Number of hidden layers `N - 1`.
    pub fn hidden_layers(&self) -> usize {
        self.depth() - 1
    }

    /// Returns whether layer `layer` (0-based) has a skip connection.
    pub fn has_skip(&self, layer: usize) -> bool {
        self.skips.get(layer).copied().unwrap_or(false)
    }

    /// Activation of layer `layer` (0-based); the output layer is linear.
    pub fn activation(&self, layer: usize) -> Activation {
        self.activations.get(layer).copied().unwrap_or(Activation::Linear)
    }

    /// Weight of the loss: 1 for the summed loss, `1 / samples` for the mean.
    pub fn loss_weight(&self, samples: usize) -> f64 {
        match self.loss_scale {
            LossScale::Sum => 1.0,
            LossScale::Mean => 1.0 / samples.max(1) as f64,
        }
    }

    /// Returns the blocks of one iteration in the configured order.
    pub fn schedule(&self) -> Vec<Block> {
        let depth = self.depth();
        let three = self.algorithm == Algorithm::ThreeSplitting;
        let layer_blocks = |l: usize, backward: bool| -> Vec<Block> {
            let mut blocks = vec![Block::Activation(l)];
            if three {
                blocks.push(Block::PreActivation(l));
            }
            blocks.push(Block::Weights(l));
            if !backward {
                blocks.reverse();
            }
            blocks
        };
        match &self.order {
            UpdateOrder::Backward => (0..depth).rev().flat_map(|l| layer_blocks(l, true)).collect(),
            UpdateOrder::Forward => (0..depth).flat_map(|l| layer_blocks(l, false)).collect(),
            UpdateOrder::Custom(blocks) => blocks.clone(),
        }
    }

    fn validate_model(&self) -> Result<(), ConfigError> {
        let depth = self.depth();
        let hidden = depth - 1;
        let sized = |count: usize, expected: usize| {
            if count == expected {
                Ok(())
            } else {
                Err(ConfigError::LayerCountMismatch { count, layers: expected })
            }
        };

        sized(self.activations.len(), hidden)?;
        sized(self.skips.len(), hidden)?;
        sized(self.weight_regularisers.len(), depth)?;
        sized(self.activation_regularisers.len(), depth)?;

        for (index, activation) in self.activations.iter().enumerate() {
            if let Activation::LeakyRelu { slope } = *activation {
                if !(0.0..1.0).contains(&slope) {
                    return Err(ConfigError::InvalidSlope { layer: index + 1, value: slope });
                }
            }
        }

        for (index, &skip) in self.skips.iter().enumerate() {
            let (width, input) = (self.widths[index + 1], self.widths[index]);
            if skip && width != input {
                return Err(ConfigError::SkipWidthMismatch { layer: index + 1, width, input });
            }
        }

        for (index, reg) in self.weight_regularisers.iter().enumerate() {
            let layer = index + 1;
            let check = |name, value: f64| non_negative("weight", name, layer, value);
            match *reg {
                WeightRegulariser::None | WeightRegulariser::NonNegative => {}
                WeightRegulariser::L2 { lambda } | WeightRegulariser::L1 { lambda } => check("lambda", lambda)?,
                WeightRegulariser::ElasticNet { l1, l2 } => {
                    check("l1", l1)?;
                    check("l2", l2)?;
                }
                WeightRegulariser::Box { lower, upper } => valid_box("weight", layer, lower, upper)?,
            }
        }

        for (index, reg) in self.activation_regularisers.iter().enumerate() {
            let layer = index + 1;
            match *reg {
                ActivationRegulariser::None | ActivationRegulariser::NonNegative => {}
                ActivationRegulariser::L1 { lambda } => non_negative("activation", "lambda", layer, lambda)?,
                ActivationRegulariser::Box { lower, upper } => valid_box("activation", layer, lower, upper)?,
            }
        }

        // The mean loss's weight depends on the sample count; the trainer checks it.
        if self.loss_scale == LossScale::Sum {
            self.check_prox_linear(1)?;
        }

        if let UpdateOrder::Custom(blocks) = &self.order {
            let algorithm = self.algorithm.name();
            let three = self.algorithm == Algorithm::ThreeSplitting;
            let mut seen = std::collections::HashSet::new();
            for &block in blocks {
                let known = block.layer() < depth && (three || !matches!(block, Block::PreActivation(_)));
                if !known {
                    return Err(ConfigError::OrderUnknownBlock { block, algorithm, layers: depth });
                }
                if !seen.insert(block) {
                    return Err(ConfigError::OrderDuplicateBlock { block });
                }
            }
            let all = Config { order: UpdateOrder::Backward, ..self.clone() }.schedule();
            if let Some(&block) = all.iter().find(|b| !seen.contains(b)) {
                return Err(ConfigError::OrderMissingBlock { block });
            }
        }

        if self.inner.max_iterations == 0 {
            return Err(ConfigError::ZeroInnerIterations);
        }
        if !(self.inner.tolerance.is_finite() && self.inner.tolerance >= 0.0) {
            return Err(ConfigError::InvalidInnerTolerance { value: self.inner.tolerance });
        }
        Ok(())
    }

    /// Checks the output layer's `alpha` against [`Config::prox_linear_bound`] for training
    /// on `samples` samples.
    pub fn check_prox_linear(&self, samples: usize) -> Result<(), ConfigError> {
        if let Some(bound) = self.prox_linear_bound(self.loss_weight(samples)) {
            let depth = self.depth();
            let alpha = self.layers[depth - 1].alpha;
            if alpha <= bound {
                return Err(ConfigError::ProxLinearAlpha { loss: self.loss.name(), layer: depth, alpha, bound });
            }
        }
        Ok(())
    }

    /// Lower bound `max(0, (w L_R - gamma) / 2)` that the output layer's `alpha` must exceed
    /// for a prox-linear loss with loss weight `w`; `None` for losses with a closed-form
    /// update.
    pub fn prox_linear_bound(&self, weight: f64) -> Option<f64> {
        let lipschitz = self.loss.prox_linear_lipschitz()?;
        let gamma = self.layers[self.depth() - 1].gamma;
        Some((0.5 * (weight * lipschitz - gamma)).max(0.0))
    }
}

fn non_negative(target: &'static str, name: &'static str, layer: usize, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ConfigError::InvalidRegularisation { target, name, layer, value })
    }
}

fn valid_box(target: &'static str, layer: usize, lower: f64, upper: f64) -> Result<(), ConfigError> {
    if lower.is_nan() || upper.is_nan() || lower > upper || lower == f64::INFINITY || upper == f64::NEG_INFINITY {
        Err(ConfigError::InvalidBox { target, layer, lower, upper })
    } else {
        Ok(())
    }
}

/// Builder for [`Config`]; [`ConfigBuilder::build`] validates.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
    layer_overrides: Vec<(usize, LayerParams)>,
    skip_layers: Vec<usize>,
    layer_activations: Vec<(usize, Activation)>,
    layer_weight_regularisers: Vec<(usize, WeightRegulariser)>,
    layer_activation_regularisers: Vec<(usize, ActivationRegulariser)>,
}

impl ConfigBuilder {
    /// Sets `gamma` on every layer.
    pub fn gamma(mut self, gamma: f64) -> Self {
        self.config.layers.iter_mut().for_each(|l| l.gamma = gamma);
        self
    }

    /// Sets `rho` on every layer.
    pub fn rho(mut self, rho: f64) -> Self {
        self.config.layers.iter_mut().for_each(|l| l.rho = rho);
        self
    }

    /// Sets `alpha` on every layer.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.config.layers.iter_mut().for_each(|l| l.alpha = alpha);
        self
    }

    /// Sets the parameters of one layer, numbered from 1 (the first hidden layer) to `N`
    /// (the output layer). Applied after the all-layer setters.
    pub fn layer(mut self, layer: usize, params: LayerParams) -> Self {
        self.layer_overrides.push((layer, params));
        self
    }

    /// Sets the activation of every hidden layer.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.config.activations.iter_mut().for_each(|a| *a = activation);
        self
    }

    /// Sets the activation of hidden layer `layer` (1-based). Applied after
    /// [`ConfigBuilder::activation`].
    pub fn layer_activation(mut self, layer: usize, activation: Activation) -> Self {
        self.layer_activations.push((layer, activation));
        self
    }

    /// Adds an identity skip connection to hidden layer `layer` (1-based).
    pub fn skip(mut self, layer: usize) -> Self {
        self.skip_layers.push(layer);
        self
    }

    /// Sets the weight regulariser of every layer.
    pub fn weight_regulariser(mut self, reg: WeightRegulariser) -> Self {
        self.config.weight_regularisers.iter_mut().for_each(|r| *r = reg);
        self
    }

    /// Sets the weight regulariser of layer `layer` (1-based).
    pub fn layer_weight_regulariser(mut self, layer: usize, reg: WeightRegulariser) -> Self {
        self.layer_weight_regularisers.push((layer, reg));
        self
    }

    /// Sets the activation regulariser of every hidden layer (not the output).
    pub fn activation_regulariser(mut self, reg: ActivationRegulariser) -> Self {
        let hidden = self.config.activations.len();
        self.config.activation_regularisers.iter_mut().take(hidden).for_each(|r| *r = reg);
        self
    }

    /// Sets the activation regulariser of layer `layer` (1-based; `N` is the output).
    pub fn layer_activation_regulariser(mut self, layer: usize, reg: ActivationRegulariser) -> Self {
        self.layer_activation_regularisers.push((layer, reg));
        self
    }

    pub fn loss(mut self, loss: Loss) -> Self {
        self.config.loss = loss;
        self
    }

    pub fn loss_scale(mut self, scale: LossScale) -> Self {
        self.config.loss_scale = scale;
        self
    }

    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.config.algorithm = algorithm;
        self
    }

    pub fn order(mut self, order: UpdateOrder) -> Self {
        self.config.order = order;
        self
    }

    pub fn inner(mut self, inner: InnerSolve) -> Self {
        self.config.inner = inner;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Worker threads; `0` means one per available core.
    pub fn threads(mut self, threads: usize) -> Self {
        self.config.threads = threads;
        self
    }

    pub fn tile_width(mut self, tile_width: usize) -> Self {
        self.config.tile_width = tile_width;
        self
    }

    pub fn init_weight_scale(mut self, scale: f64) -> Self {
        self.config.init_weight_scale = scale;
        self
    }

    pub fn init_bias(mut self, bias: f64) -> Self {
        self.config.init_bias = bias;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let mut config = self.config;
        let layers = config.layers.len();
        for (layer, params) in self.layer_overrides {
            if layer == 0 || layer > layers {
                return Err(ConfigError::LayerOutOfRange { layer, layers });
            }
            config.layers[layer - 1] = params;
        }
        let hidden = config.activations.len();
        for (layer, activation) in self.layer_activations {
            if layer == 0 || layer > hidden {
                return Err(ConfigError::LayerOutOfRange { layer, layers: hidden });
            }
            config.activations[layer - 1] = activation;
        }
        for layer in self.skip_layers {
            if layer == hidden + 1 {
                return Err(ConfigError::SkipOnOutputLayer { layer, hidden });
            }
            if layer == 0 || layer > hidden {
                return Err(ConfigError::LayerOutOfRange { layer, layers: hidden });
            }
            config.skips[layer - 1] = true;
        }
        for (layer, reg) in self.layer_weight_regularisers {
            if layer == 0 || layer > layers {
                return Err(ConfigError::LayerOutOfRange { layer, layers });
            }
            config.weight_regularisers[layer - 1] = reg;
        }
        for (layer, reg) in self.layer_activation_regularisers {
            if layer == 0 || layer > layers {
                return Err(ConfigError::LayerOutOfRange { layer, layers });
            }
            config.activation_regularisers[layer - 1] = reg;
        }
        config.validate()?;
        Ok(config)
    }
}
