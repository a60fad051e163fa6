//! `bcdnn experiment`: fixed comparisons of several training runs, each written as a run
//! record, with one figure of all of them.
//!
//! `bcd-vs-sgd` trains the 10-hidden-layer network 784-(600 x 10)-10 (ReLU, squared loss) on
//! MNIST by BCD with `gamma = rho = alpha = 1` and by minibatch SGD at several learning rates,
//! all from the same initial weights (`W ~ 0.01 N(0, 1)`, `b = 0.1`, the same seed). This is the
//! comparison of Figure 1 in Zeng, Lau, Lin, Yao, "Global Convergence of Block Coordinate
//! Descent in Deep Learning" (ICML 2019), where BCD trains the network and SGD stays near
//! chance accuracy.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::args::{Algorithm, Preset, TrainSetup, DEFAULT_BATCH_SIZE};
use crate::plot::{run_plot, PlotArgs};
use crate::system::SystemInfo;
use crate::train::{run_train, Outcome};

/// Experiments of `bcdnn experiment`.
#[derive(Subcommand, Debug)]
pub enum ExperimentCommand {
    /// Train 784-(600x10)-10 by BCD and by SGD at several learning rates from the same
    /// initial weights, and draw their accuracy curves into one figure.
    #[command(name = "bcd-vs-sgd")]
    BcdVsSgd(BcdVsSgdArgs),
}

impl ExperimentCommand {
    pub fn quiet(&self) -> bool {
        match self {
            ExperimentCommand::BcdVsSgd(args) => args.quiet,
        }
    }
}

/// Options of `bcdnn experiment bcd-vs-sgd`.
#[derive(Args, Debug)]
pub struct BcdVsSgdArgs {
    /// Directory for the run records and the figure, created if missing
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// BCD iterations
    #[arg(long, value_name = "K", default_value_t = 60, value_parser = parse_count)]
    pub iterations: usize,

    /// SGD epochs per learning rate; an epoch is one point on the figure's iteration axis
    #[arg(long, value_name = "E", default_value_t = 20, value_parser = parse_count)]
    pub epochs: usize,

    /// Train on the first N samples of the MNIST training set
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = parse_count)]
    pub samples: usize,

    /// Evaluate on the first N samples of the MNIST test set
    #[arg(long, value_name = "N", default_value_t = 2_000, value_parser = parse_count)]
    pub test_samples: usize,

    /// SGD learning rates, comma-separated, one SGD run each
    #[arg(long, value_name = "LIST", default_value = "0.001,0.01,0.05", value_parser = parse_learning_rates)]
    pub learning_rates: LearningRates,

    /// Samples per SGD batch
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_SIZE, value_parser = parse_count)]
    pub batch_size: usize,

    /// Seed of the weight initialisation, shared by every run (and of the SGD shuffles)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Evaluate accuracy every K iterations and always after the last one
    #[arg(long, value_name = "K", default_value_t = 2, value_parser = parse_count)]
    pub eval_every: usize,

    /// Worker threads; 0 means one per available core
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,

    /// Directory with the four MNIST IDX files [default: as for `bcdnn train`]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Directory for the converted dataset stores [default: as for `bcdnn train`]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Replace records and figures that already exist in --out
    #[arg(long)]
    pub overwrite: bool,

    /// Print only the summaries and errors
    #[arg(long, short)]
    pub quiet: bool,
}

/// SGD learning rates parsed from `--learning-rates`.
#[derive(Clone, Debug, PartialEq)]
pub struct LearningRates(pub Vec<f64>);

fn parse_learning_rates(text: &str) -> Result<LearningRates, String> {
    let mut rates = Vec::new();
    for (index, item) in text.split(',').enumerate() {
        let item = item.trim();
        let rate: f64 = item.parse().map_err(|_| {
            format!(
                "'{item}' at position {} of --learning-rates is not a number; give rates such as 0.001,0.01",
                index + 1
            )
        })?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!(
                "learning rate {rate} at position {} of --learning-rates is invalid; each rate must be a finite number greater than 0",
                index + 1
            ));
        }
        rates.push(rate);
    }
    Ok(LearningRates(rates))
}

fn parse_count(text: &str) -> Result<usize, String> {
    let value: usize =
        text.trim().parse().map_err(|_| format!("'{text}' is not a whole number; give a positive integer"))?;
    if value == 0 {
        return Err("0 is invalid here; give a positive integer".to_string());
    }
    Ok(value)
}

/// Hidden widths of the experiment's network: ten layers of 600.
const HIDDEN: [usize; 10] = [600; 10];

/// File names of the figure in --out, without the extension.
const FIGURE_STEM: &str = "bcd-vs-sgd";

/// One training run of the experiment.
struct PlannedRun {
    setup: TrainSetup,
    record: PathBuf,
}

/// Runs the experiment named by `command`.
pub fn run_experiment(command: &ExperimentCommand, system: &SystemInfo) -> Result<Outcome> {
    match command {
        ExperimentCommand::BcdVsSgd(args) => run_bcd_vs_sgd(args, system),
    }
}

fn run_bcd_vs_sgd(args: &BcdVsSgdArgs, system: &SystemInfo) -> Result<Outcome> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("failed to create the output directory {}", args.out.display()))?;
    let runs = plan_runs(args);
    let figures = [args.out.join(format!("{FIGURE_STEM}.svg")), args.out.join(format!("{FIGURE_STEM}.png"))];
    if !args.overwrite {
        let outputs = runs.iter().map(|run| &run.record).chain(&figures);
        if let Some(existing) = outputs.into_iter().find(|path| path.exists()) {
            bail!(
                "{} already exists; pass --overwrite to replace the experiment's files or choose another --out directory",
                existing.display()
            );
        }
    }

    for (index, run) in runs.iter().enumerate() {
        let label = run.setup.label.as_deref().unwrap_or("");
        log::info!("run {} of {}: {label}", index + 1, runs.len());
        let command_line = experiment_command_line(&run.setup, &run.record);
        if run_train(&run.setup, &command_line, system)? == Outcome::Interrupted {
            log::warn!("interrupted; the remaining runs are skipped and no figure is drawn");
            return Ok(Outcome::Interrupted);
        }
    }

    let inputs: Vec<PathBuf> = runs.iter().map(|run| run.record.clone()).collect();
    for figure in &figures {
        let plot =
            PlotArgs { inputs: inputs.clone(), output: figure.clone(), labels: Vec::new(), width: 1800, height: 560 };
        run_plot(&plot)?;
        println!("figure: {}", figure.display());
    }
    print_table(&inputs)?;
    Ok(Outcome::Completed)
}

/// Plans the BCD run first, then one SGD run per learning rate, each with its record path in --out.
fn plan_runs(args: &BcdVsSgdArgs) -> Vec<PlannedRun> {
    let base = TrainSetup {
        preset: Preset::PaperDeep,
        algorithm: Algorithm::Bcd,
        learning_rate: None,
        batch_size: args.batch_size,
        validation: None,
        label: Some("BCD".to_string()),
        hidden: HIDDEN.to_vec(),
        epochs: args.iterations,
        gamma: 1.0,
        rho: 1.0,
        alpha: 1.0,
        seed: args.seed,
        threads: args.threads,
        tile_width: bcdnn_kernels::tiling::DEFAULT_TILE_WIDTH,
        train_limit: Some(args.samples),
        test_limit: Some(args.test_samples),
        eval_every: args.eval_every,
        data_dir: args.data_dir.clone(),
        cache_dir: args.cache_dir.clone(),
        use_mmap: true,
        record: Some(args.out.join("bcd.jsonl")),
        overwrite: args.overwrite,
        quiet: args.quiet,
        model: crate::spec::ModelArgs::default(),
    };
    let mut runs = vec![PlannedRun { record: args.out.join("bcd.jsonl"), setup: base.clone() }];
    for &rate in &args.learning_rates.0 {
        let record = args.out.join(format!("sgd-lr{rate}.jsonl"));
        let setup = TrainSetup {
            algorithm: Algorithm::Sgd,
            learning_rate: Some(rate),
            epochs: args.epochs,
            label: Some(format!("SGD lr {rate}, batch {} (x: epochs)", args.batch_size)),
            record: Some(record.clone()),
            ..base.clone()
        };
        runs.push(PlannedRun { setup, record });
    }
    runs
}

/// Builds the `bcdnn train` command line that repeats one run of the experiment, stored in its record.
fn experiment_command_line(setup: &TrainSetup, record: &Path) -> Vec<String> {
    let mut line: Vec<String> = vec!["bcdnn".into(), "train".into(), "--preset".into(), setup.preset.name().into()];
    let mut push = |option: &str, value: String| {
        line.push(option.to_string());
        line.push(value);
    };
    push("--algorithm", setup.algorithm.name().to_string());
    if let Some(rate) = setup.learning_rate {
        push("--learning-rate", rate.to_string());
        push("--batch-size", setup.batch_size.to_string());
    }
    push("--epochs", setup.epochs.to_string());
    push("--seed", setup.seed.to_string());
    push("--threads", setup.threads.to_string());
    push("--eval-every", setup.eval_every.to_string());
    if let Some(limit) = setup.train_limit {
        push("--train-limit", limit.to_string());
    }
    if let Some(limit) = setup.test_limit {
        push("--test-limit", limit.to_string());
    }
    if let Some(label) = &setup.label {
        push("--label", label.clone());
    }
    push("--record", record.display().to_string());
    line
}

/// Iterations at which the table shows test accuracy, where a run has them.
const TABLE_ITERATIONS: [usize; 8] = [1, 10, 20, 40, 60, 100, 200, 300];

/// Prints test accuracy at fixed iterations, the last iteration and the mean update time of
/// every run, read back from the records.
fn print_table(records: &[PathBuf]) -> Result<()> {
    println!("test accuracy by iteration (SGD: by epoch)");
    for path in records {
        let run = crate::plot::read_run(path)?;
        let last = run.points.last().map_or(0, |point| point.iteration);
        let mut cells = Vec::new();
        for iteration in TABLE_ITERATIONS.iter().copied().filter(|&k| k < last).chain([last]) {
            let accuracy = run.points.iter().find(|p| p.iteration == iteration).and_then(|p| p.test_accuracy);
            if let Some(accuracy) = accuracy {
                cells.push(format!("{iteration}: {accuracy:.4}"));
            }
        }
        println!("  {}: {}", run.label, cells.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bcdnn::{Config, SgdConfig, SgdTrainer, Trainer};
    use bcdnn_data::Dataset;

    #[test]
    fn learning_rates_parse_and_reject() {
        assert_eq!(parse_learning_rates("0.001, 0.01,0.05").unwrap().0, vec![0.001, 0.01, 0.05]);
        let cases = [
            ("0.01,abc", "'abc' at position 2 of --learning-rates is not a number"),
            ("0", "learning rate 0 at position 1 of --learning-rates is invalid"),
            ("0.1,-1", "learning rate -1 at position 2"),
            ("inf", "learning rate inf at position 1"),
        ];
        for (text, expected) in cases {
            let message = parse_learning_rates(text).expect_err(text);
            assert!(message.contains(expected), "{text:?}: {message:?} lacks {expected:?}");
        }
    }

    /// BCD and SGD draw their initial weights from the same generator with the same scale and
    /// bias, so the comparison starts both methods from one network.
    #[test]
    fn bcd_and_sgd_start_from_one_network() {
        let n = 40;
        let features: Vec<f32> = (0..n * 6).map(|i| (i % 7) as f32 / 7.0).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let data = Dataset::from_vecs(features, labels, 6, 3).unwrap();
        for seed in [0, 5] {
            let config = Config::builder(6, &[5, 4], 3).seed(seed).threads(1).build().unwrap();
            let bcd: Trainer<f32> = Trainer::new(config, data.view()).unwrap();
            let sgd_config =
                SgdConfig { widths: vec![6, 5, 4, 3], learning_rate: 0.01, batch_size: 8, seed, threads: 1 };
            let sgd: SgdTrainer<f32> = SgdTrainer::new(sgd_config, data.view()).unwrap();
            assert_eq!(bcd.network(), sgd.network(), "seed {seed}: the initial networks differ");
        }
    }

    #[test]
    fn plan_runs_per_rate() {
        let args = BcdVsSgdArgs {
            out: PathBuf::from("out"),
            iterations: 7,
            epochs: 5,
            samples: 100,
            test_samples: 50,
            learning_rates: LearningRates(vec![0.5, 0.25]),
            batch_size: 16,
            seed: 3,
            eval_every: 1,
            threads: 1,
            data_dir: None,
            cache_dir: None,
            overwrite: false,
            quiet: true,
        };
        let runs = plan_runs(&args);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].setup.algorithm, Algorithm::Bcd);
        assert_eq!(runs[0].setup.epochs, 7);
        assert_eq!(runs[0].setup.hidden, vec![600; 10]);
        assert_eq!((runs[0].setup.gamma, runs[0].setup.rho, runs[0].setup.alpha), (1.0, 1.0, 1.0));
        for (run, rate) in runs[1..].iter().zip([0.5, 0.25]) {
            assert_eq!(run.setup.algorithm, Algorithm::Sgd);
            assert_eq!(run.setup.learning_rate, Some(rate));
            assert_eq!(run.setup.epochs, 5);
            assert_eq!(run.setup.seed, 3);
            assert_eq!(run.setup.hidden, runs[0].setup.hidden);
        }
        let records: Vec<&Path> = runs.iter().map(|run| run.record.as_path()).collect();
        assert_eq!(
            records,
            [Path::new("out/bcd.jsonl"), Path::new("out/sgd-lr0.5.jsonl"), Path::new("out/sgd-lr0.25.jsonl")]
        );
    }
}
