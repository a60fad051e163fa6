//! Command-line arguments of `bcdnn` and their resolution, with the preset, into one
//! training setup.

use std::path::PathBuf;

use bcdnn_kernels::tiling::DEFAULT_TILE_WIDTH;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "bcdnn",
    version,
    about = "Train fully connected networks on MNIST by block coordinate descent (BCD)",
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// One value per process, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a network on MNIST and report the objective and accuracy per iteration.
    Train(TrainArgs),
    /// Measure the update time per iteration against the GEMM floor, thread scaling and peak
    /// memory, on MNIST.
    Bench(crate::bench::BenchArgs),
    /// Draw accuracy, objective and step-length curves of one or more run records into an SVG
    /// or PNG figure.
    Plot(crate::plot::PlotArgs),
    /// Run a fixed comparison of several training runs and draw its figure.
    #[command(subcommand)]
    Experiment(crate::experiment::ExperimentCommand),
    /// Print the version, CPU, SIMD level and the MNIST data and cache directories.
    Info,
}

/// Options of `bcdnn train`. Options marked `[default: from --preset]` take their value from
/// the preset unless given.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Starting configuration; every option given explicitly overrides the preset's value.
    #[arg(long, value_enum, value_name = "NAME", default_value_t = Preset::Quick)]
    pub preset: Preset,

    /// Training method: bcd (block coordinate descent; see --splitting) or sgd (minibatch SGD
    /// with backpropagation on the mean squared loss, from the same initial weights). With sgd,
    /// one iteration is one epoch.
    #[arg(long, value_enum, value_name = "NAME", default_value_t = Algorithm::Bcd)]
    pub algorithm: Algorithm,

    /// SGD step length eta of W <- W - eta grad L_B; required with --algorithm sgd
    #[arg(long, value_name = "ETA")]
    pub learning_rate: Option<f64>,

    /// Samples per SGD batch; only with --algorithm sgd [default: 512]
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub batch_size: Option<usize>,

    /// Hidden layer widths, comma-separated; WxC repeats width W C times, so 600x10 is ten
    /// layers of 600 and 1000,500x2 is 1000,500,500 [default: from --preset]
    #[arg(long, value_name = "WIDTHS", value_parser = parse_hidden)]
    pub hidden: Option<HiddenWidths>,

    /// Iterations to run; one iteration updates every block once on the whole training set
    /// (one full-batch epoch) [default: from --preset]
    #[arg(long, value_name = "K", value_parser = parse_positive)]
    pub epochs: Option<usize>,

    /// Weight gamma of the activation coupling ||V_i - S_i V_{i-1} - sigma(U_i)||^2, on every layer
    /// [default: from --preset]
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub gamma: Option<f64>,

    /// Weight rho of the pre-activation coupling ||U_i - W_i V_{i-1} - b_i||^2, on every layer
    /// [default: from --preset]
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub rho: Option<f64>,

    /// Weight alpha of the proximal terms of the W, U and output V blocks, on every layer
    /// [default: from --preset]
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub alpha: Option<f64>,

    /// Seed of the weight initialisation
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Worker threads; 0 means one per available core
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,

    /// Train on the first N samples of the MNIST training set [default: all 60000]
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub train_limit: Option<usize>,

    /// Evaluate on the first N samples of the MNIST test set [default: all 10000]
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub test_limit: Option<usize>,

    /// Hold out the last N samples of the training set (after --train-limit) as a validation
    /// split: they are not trained on, are evaluated with the other sets, and select the best
    /// iteration of the summary [default: no validation split]
    #[arg(long, value_name = "N", value_parser = parse_validation)]
    pub validation: Option<usize>,

    /// Evaluate training, validation and test accuracy every K iterations and always after the
    /// last one
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = parse_positive)]
    pub eval_every: usize,

    /// Sample columns per tile of the parallel loops
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TILE_WIDTH)]
    pub tile_width: usize,

    /// Directory with the four MNIST IDX files (gzip-compressed or raw) [default:
    /// $BCDNN_DATA_DIR, else ./datasets/mnist, else the datasets/mnist directory of the
    /// source checkout]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Directory for the converted dataset stores, created if missing [default:
    /// $BCDNN_CACHE_DIR, else $XDG_CACHE_HOME/bcdnn, else $HOME/.cache/bcdnn]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Read the dataset stores into memory instead of memory-mapping them
    #[arg(long)]
    pub no_mmap: bool,

    /// Write the run description, one JSON object per iteration and a summary to FILE as
    /// JSON lines
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Replace the --record file if it already exists
    #[arg(long, requires = "record")]
    pub overwrite: bool,

    /// Legend name of the run, stored in the record's run line and used by `bcdnn plot`
    /// [default: the record's file name]
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,

    /// Model: activations, loss, regularisers, skips, splitting and block order
    #[command(flatten)]
    pub model: crate::spec::ModelArgs,

    /// Read options from a TOML file whose keys are the long option names (hidden = "600x10",
    /// activation = "tanh", epochs = 20); options on the command line override it
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,

    /// Print only the final summary and errors
    #[arg(long, short)]
    pub quiet: bool,
}

/// Training methods of `bcdnn train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Three-splitting block coordinate descent on the full batch.
    #[value(name = "bcd")]
    Bcd,
    /// Minibatch stochastic gradient descent with backpropagation.
    #[value(name = "sgd")]
    Sgd,
}

impl Algorithm {
    /// Returns the name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Bcd => "bcd",
            Algorithm::Sgd => "sgd",
        }
    }
}

/// Samples per SGD batch when `--batch-size` is not given, the batch size of the SGD
/// comparison in Zeng, Lau, Lin, Yao (ICML 2019).
pub const DEFAULT_BATCH_SIZE: usize = 512;

/// Named starting configurations of `bcdnn train`. Every preset trains on the whole training
/// set unless `--train-limit` is given.
///
/// The `paper-*` presets use the network shapes, parameters and iteration counts of the
/// MNIST experiments in Zeng, Lau, Lin, Yao, "Global Convergence of Block Coordinate Descent
/// in Deep Learning" (ICML 2019).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 784-2000-10, gamma = rho = alpha = 1, 10 iterations: one wide hidden layer, the
    /// shortest of the presets
    #[value(name = "quick")]
    Quick,
    /// 784-1500-1500-1500-10, alpha = 5, gamma = rho = 1, 50 iterations
    #[value(name = "paper-3layer")]
    Paper3Layer,
    /// 784-600x10-10 (ten hidden layers of 600), gamma = rho = alpha = 1, 300 iterations
    #[value(name = "paper-deep")]
    PaperDeep,
}

/// The values a preset supplies for the options the user did not give.
#[derive(Clone, Debug, PartialEq)]
pub struct PresetValues {
    pub hidden: Vec<usize>,
    pub epochs: usize,
    pub gamma: f64,
    pub rho: f64,
    pub alpha: f64,
}

impl Preset {
    /// Returns the name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Quick => "quick",
            Preset::Paper3Layer => "paper-3layer",
            Preset::PaperDeep => "paper-deep",
        }
    }

    pub fn values(self) -> PresetValues {
        match self {
            Preset::Quick => PresetValues { hidden: vec![2000], epochs: 10, gamma: 1.0, rho: 1.0, alpha: 1.0 },
            Preset::Paper3Layer => PresetValues { hidden: vec![1500; 3], epochs: 50, gamma: 1.0, rho: 1.0, alpha: 5.0 },
            Preset::PaperDeep => PresetValues { hidden: vec![600; 10], epochs: 300, gamma: 1.0, rho: 1.0, alpha: 1.0 },
        }
    }
}

/// Hidden layer widths parsed from `--hidden`, in order from the input side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HiddenWidths(pub Vec<usize>);

/// Parses `--hidden`: comma-separated items, each a width `W` or `WxC` for `C` layers of
/// width `W`. Positions in messages count items from 1.
pub fn parse_hidden(text: &str) -> Result<HiddenWidths, String> {
    if text.trim().is_empty() {
        return Err("--hidden is empty; give at least one width, such as 1500,1500,1500 or 600x10".to_string());
    }
    let mut widths = Vec::new();
    for (index, item) in text.split(',').enumerate() {
        let position = index + 1;
        let item = item.trim();
        let (width_text, count_text) = match item.split_once(['x', 'X']) {
            Some((width, count)) => (width.trim(), Some(count.trim())),
            None => (item, None),
        };
        let width: usize = width_text.parse().map_err(|_| {
            format!(
                "'{item}' at position {position} of --hidden is not a width; use positive integers such as 1500, \
                 or WxC such as 600x10 for C layers of width W"
            )
        })?;
        if width == 0 {
            return Err(format!(
                "width 0 at position {position} of --hidden is invalid; widths must be positive integers"
            ));
        }
        let count = match count_text {
            None => 1,
            Some(count_text) => {
                let count: usize = count_text.parse().map_err(|_| {
                    format!(
                        "repeat count '{count_text}' in '{item}' at position {position} of --hidden is not a number; \
                         write WxC with a positive integer C, such as 600x10"
                    )
                })?;
                if count == 0 {
                    return Err(format!(
                        "repeat count 0 in '{item}' at position {position} of --hidden is invalid; the count after x \
                         must be at least 1"
                    ));
                }
                count
            }
        };
        if widths.len() + count > MAX_HIDDEN_LAYERS {
            return Err(format!(
                "--hidden gives more than {MAX_HIDDEN_LAYERS} hidden layers; use at most {MAX_HIDDEN_LAYERS}"
            ));
        }
        widths.extend(std::iter::repeat_n(width, count));
    }
    Ok(HiddenWidths(widths))
}

/// Upper bound on the number of hidden layers, so that a typo such as `600x1000000` fails
/// here instead of in the allocator.
const MAX_HIDDEN_LAYERS: usize = 10_000;

/// Parses an integer of at least 1.
fn parse_positive(text: &str) -> Result<usize, String> {
    let value: usize =
        text.trim().parse().map_err(|_| format!("'{text}' is not a whole number; give a positive integer"))?;
    if value == 0 {
        return Err("0 is invalid here; give a positive integer".to_string());
    }
    Ok(value)
}

/// Parses `--validation`: a sample count of at least 1.
fn parse_validation(text: &str) -> Result<usize, String> {
    let value: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a sample count; give the number of training samples to hold out"))?;
    if value == 0 {
        return Err("a validation split of 0 samples is invalid; give at least 1, or leave out --validation to \
                    train on every sample without a validation split"
            .to_string());
    }
    Ok(value)
}

/// A `bcdnn train` invocation with the preset applied.
#[derive(Clone, Debug)]
pub struct TrainSetup {
    pub preset: Preset,
    pub algorithm: Algorithm,
    /// SGD step length; `Some` exactly when `algorithm` is SGD.
    pub learning_rate: Option<f64>,
    pub batch_size: usize,
    pub validation: Option<usize>,
    pub label: Option<String>,
    pub hidden: Vec<usize>,
    pub epochs: usize,
    pub gamma: f64,
    pub rho: f64,
    pub alpha: f64,
    pub seed: u64,
    pub threads: usize,
    pub tile_width: usize,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub eval_every: usize,
    pub data_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub use_mmap: bool,
    pub record: Option<PathBuf>,
    pub overwrite: bool,
    pub quiet: bool,
    pub model: crate::spec::ModelArgs,
}

impl TrainArgs {
    /// Fills every option the user did not give from the preset, and rejects options that do
    /// not apply to the chosen algorithm.
    pub fn resolve(self) -> anyhow::Result<TrainSetup> {
        self.check_algorithm_options()?;
        let preset = self.preset.values();
        Ok(TrainSetup {
            preset: self.preset,
            algorithm: self.algorithm,
            learning_rate: self.learning_rate,
            batch_size: self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            validation: self.validation,
            label: self.label,
            hidden: self.hidden.map_or(preset.hidden, |h| h.0),
            epochs: self.epochs.unwrap_or(preset.epochs),
            gamma: self.gamma.unwrap_or(preset.gamma),
            rho: self.rho.unwrap_or(preset.rho),
            alpha: self.alpha.unwrap_or(preset.alpha),
            seed: self.seed,
            threads: self.threads,
            tile_width: self.tile_width,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            eval_every: self.eval_every,
            data_dir: self.data_dir,
            cache_dir: self.cache_dir,
            use_mmap: !self.no_mmap,
            record: self.record,
            overwrite: self.overwrite,
            quiet: self.quiet,
            model: self.model,
        })
    }

    fn check_algorithm_options(&self) -> anyhow::Result<()> {
        match self.algorithm {
            Algorithm::Bcd => {
                let sgd_only =
                    [("--learning-rate", self.learning_rate.is_some()), ("--batch-size", self.batch_size.is_some())];
                if let Some((option, _)) = sgd_only.iter().find(|(_, given)| *given) {
                    anyhow::bail!("{option} applies to --algorithm sgd only; add --algorithm sgd or remove {option}");
                }
            }
            Algorithm::Sgd => {
                let bcd_only = [
                    ("--gamma", self.gamma.is_some()),
                    ("--rho", self.rho.is_some()),
                    ("--alpha", self.alpha.is_some()),
                ];
                if let Some((option, _)) = bcd_only.iter().find(|(_, given)| *given) {
                    anyhow::bail!("{option} is a BCD parameter and does not apply to --algorithm sgd; remove {option}");
                }
                if !self.model.is_default() {
                    anyhow::bail!(
                        "the model options (--activation, --loss, --loss-scale, --skip, --weight-reg, --activation-reg, --splitting, --order, --inner-iterations, --inner-tolerance, --exact-block-check) apply to --algorithm bcd only; the SGD baseline trains ReLU networks on the mean squared loss, so remove them"
                    );
                }
                match self.learning_rate {
                    None => anyhow::bail!("--algorithm sgd needs --learning-rate; give a step length such as 0.01"),
                    Some(rate) if !(rate.is_finite() && rate > 0.0) => anyhow::bail!(
                        "--learning-rate {rate} is invalid; give a finite number greater than 0, such as 0.01"
                    ),
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_list_and_repeats() {
        assert_eq!(parse_hidden("1500,1500,1500").unwrap().0, vec![1500, 1500, 1500]);
        assert_eq!(parse_hidden("600x10").unwrap().0, vec![600; 10]);
        assert_eq!(parse_hidden("1000, 500x2").unwrap().0, vec![1000, 500, 500]);
        assert_eq!(parse_hidden("64").unwrap().0, vec![64]);
    }

    #[test]
    fn hidden_rejects_bad_items() {
        let cases = [
            ("0,5", "width 0 at position 1 of --hidden is invalid"),
            ("5,0", "width 0 at position 2 of --hidden is invalid"),
            ("", "--hidden is empty"),
            ("5,,5", "'' at position 2 of --hidden is not a width"),
            ("abc", "'abc' at position 1 of --hidden is not a width"),
            ("-5", "'-5' at position 1 of --hidden is not a width"),
            ("600x0", "repeat count 0 in '600x0' at position 1"),
            ("600xy", "repeat count 'y' in '600xy' at position 1"),
            ("600x1000000", "more than 10000 hidden layers"),
        ];
        for (text, expected) in cases {
            let message = parse_hidden(text).expect_err(text);
            assert!(message.contains(expected), "--hidden {text:?}: message {message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn explicit_options_override_preset() {
        let cli = Cli::try_parse_from([
            "bcdnn",
            "train",
            "--preset",
            "paper-3layer",
            "--epochs",
            "2",
            "--alpha",
            "2.5",
            "--train-limit",
            "100",
        ])
        .unwrap();
        let Command::Train(args) = cli.command else { panic!("expected the train command") };
        let setup = args.resolve().unwrap();
        assert_eq!(setup.hidden, vec![1500; 3]);
        assert_eq!(setup.epochs, 2);
        assert_eq!(setup.alpha, 2.5);
        assert_eq!(setup.gamma, 1.0);
        assert_eq!(setup.train_limit, Some(100));
    }

    #[test]
    fn paper_presets_match_their_help() {
        assert_eq!(Preset::Paper3Layer.values().hidden, vec![1500; 3]);
        assert_eq!(Preset::Paper3Layer.values().alpha, 5.0);
        assert_eq!(Preset::PaperDeep.values().hidden, vec![600; 10]);
        assert_eq!(Preset::PaperDeep.values().epochs, 300);
    }

    #[test]
    fn zero_epochs_rejected() {
        let error = Cli::try_parse_from(["bcdnn", "train", "--epochs", "0"]).unwrap_err();
        assert!(error.to_string().contains("0 is invalid here"), "{error}");
    }
}
