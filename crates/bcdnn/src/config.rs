//! Validated training configuration.

use bcdnn_kernels::tiling::DEFAULT_TILE_WIDTH;
use serde::{Deserialize, Serialize};

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

/// A validated configuration; build it with [`Config::builder`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Widths `d_0, d_1, ..., d_N`: inputs, hidden layers, classes.
    pub widths: Vec<usize>,
    /// Parameters of layers `1..=N`, in order (`layers[0]` is layer 1).
    pub layers: Vec<LayerParams>,
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
    #[error("layer index {layer} is out of range; the network has layers 1..={layers}")]
    LayerOutOfRange { layer: usize, layers: usize },
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
        let layers = vec![LayerParams::default(); widths.len() - 1];
        ConfigBuilder {
            config: Config {
                widths,
                layers,
                seed: 0,
                threads: 0,
                tile_width: DEFAULT_TILE_WIDTH,
                init_weight_scale: 0.01,
                init_bias: 0.1,
            },
            layer_overrides: Vec::new(),
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

/// Builder for [`Config`]; [`ConfigBuilder::build`] validates.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
    layer_overrides: Vec<(usize, LayerParams)>,
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
        config.validate()?;
        Ok(config)
    }
}
