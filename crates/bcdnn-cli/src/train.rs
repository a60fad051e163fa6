//! `bcdnn train`: load MNIST, build the BCD or SGD trainer, run the iterations with progress
//! output and an optional JSON-lines record, and print a summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bcdnn::{Config, SgdConfig, SgdTrainer, Trainer};
use bcdnn_data::{DatasetView, MnistOptions, MNIST_CLASSES};

use crate::args::{Algorithm, TrainSetup};
use crate::interrupt;
use crate::iterations::{finish_record, print_summary, run_iterations, EvaluationData, Tracker};
use crate::model::Model;
use crate::progress::Progress;
use crate::record::{RecordWriter, RunRecord, RECORD_FORMAT_VERSION};
use crate::system::{SystemInfo, Timestamp};

/// Pixels per MNIST image (28 x 28), the input width of every network trained here.
const MNIST_FEATURES: usize = 28 * 28;

/// End state of a run that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Interrupted,
}

/// The validated configuration of either method.
enum MethodConfig {
    Bcd(Config),
    Sgd(SgdConfig),
}

/// Runs `bcdnn train`. `command_line` goes into the record unchanged.
pub fn run_train(setup: &TrainSetup, command_line: &[String], system: &SystemInfo) -> Result<Outcome> {
    let started = Instant::now();
    let start_time = Timestamp::now();
    let mut progress = Progress::new(setup.quiet);

    // Check the configuration and the record path before the slower data loading.
    let method = build_method_config(setup)?;
    let mut record = match &setup.record {
        Some(path) => Some(RecordWriter::create(path, setup.overwrite)?),
        None => None,
    };
    if let Some(writer) = &record {
        interrupt::set_record_temp_path(writer.temp_path());
    }
    interrupt::install_handler();

    let source_dir = setup.data_dir.clone().unwrap_or_else(bcdnn_data::default_source_dir);
    let cache_dir = setup.cache_dir.clone().unwrap_or_else(bcdnn_data::default_cache_dir);
    progress.note(&format!("loading MNIST from {} (stores in {})", source_dir.display(), cache_dir.display()));
    let mnist = load_mnist(&source_dir, &cache_dir, setup.use_mmap)?;
    let (source_dir, cache_dir) = (absolute_path(&source_dir), absolute_path(&cache_dir));
    let train_all = limit_samples(mnist.train.view(), setup.train_limit, "--train-limit", "training");
    let (train_view, validation_view) = split_validation(train_all, setup.validation)?;
    let test_view = limit_samples(mnist.test.view(), setup.test_limit, "--test-limit", "test");

    let mut model = match method {
        MethodConfig::Bcd(config) => {
            check_memory(&config, train_view.n_samples())?;
            let mut trainer = Trainer::<f32>::new(config, train_view).context("failed to set up the trainer")?;
            trainer.set_exact_block_check(setup.model.exact_block_check);
            Model::Bcd(trainer)
        }
        MethodConfig::Sgd(config) => {
            Model::Sgd(SgdTrainer::<f32>::new(config, train_view).context("failed to set up the SGD trainer")?)
        }
    };
    let (state_bytes, workspace_bytes) = model.memory_bytes();
    let samples = SampleCounts {
        train: train_view.n_samples(),
        validation: validation_view.map_or(0, |v| v.n_samples()),
        test: test_view.n_samples(),
    };
    progress.note(&describe_run(setup, &model, samples, state_bytes + workspace_bytes.unwrap_or(0)));

    if let Some(writer) = record.as_mut() {
        let label = run_label(setup);
        writer.write(&RunRecord {
            kind: "run",
            format_version: RECORD_FORMAT_VERSION,
            bcdnn_version: env!("CARGO_PKG_VERSION"),
            start_time,
            command_line,
            preset: setup.preset.name(),
            algorithm: setup.algorithm.name(),
            label: &label,
            iteration_unit: match setup.algorithm {
                Algorithm::Bcd => "one BCD iteration: every block updated once on the full batch",
                Algorithm::Sgd => "one SGD epoch: one pass over the training samples in batches",
            },
            config: model.config_json()?,
            epochs: setup.epochs,
            eval_every: setup.eval_every,
            threads: model.threads(),
            train_samples: samples.train,
            test_samples: samples.test,
            validation_samples: samples.validation,
            validation_split: validation_view.map(|_| describe_validation(train_all.n_samples(), samples.validation)),
            data_dir: &source_dir,
            cache_dir: &cache_dir,
            memory_mapped: mnist.train.is_memory_mapped(),
            state_bytes,
            workspace_bytes,
            system,
        })?;
    }
    let setup_seconds = started.elapsed().as_secs_f64();

    progress.start(setup.epochs);
    let mut tracker = Tracker::new(validation_view.is_some());
    let data = EvaluationData { train: train_view, validation: validation_view, test: test_view };
    let result = run_iterations(&mut model, data, setup, record.as_mut(), &progress, &mut tracker);
    progress.finish();

    let summary = tracker.summary(&result, setup_seconds, started.elapsed().as_secs_f64());
    let record_path = match (finish_record(record, tracker.take_pending(), &summary), &result) {
        (Ok(path), _) => path,
        (Err(error), Ok(_)) => return Err(error),
        (Err(error), Err(_)) => {
            // The training error is the one to report; this one only explains the record.
            log::warn!("failed to finish the record: {}", crate::error_chain(&error));
            None
        }
    };
    match result {
        Ok(outcome) => {
            print_summary(&summary, setup.epochs, record_path.as_deref());
            Ok(outcome)
        }
        Err(error) => {
            if let Some(path) = record_path {
                eprintln!("the record of the failed run is in {}", path.display());
            }
            Err(error)
        }
    }
}

/// Builds and validates the configuration of the chosen method; invalid values get the
/// library's message.
fn build_method_config(setup: &TrainSetup) -> Result<MethodConfig> {
    match setup.algorithm {
        Algorithm::Bcd => build_config(setup).map(MethodConfig::Bcd),
        Algorithm::Sgd => {
            let config = SgdConfig {
                widths: network_widths(&setup.hidden),
                learning_rate: setup.learning_rate.context("--algorithm sgd needs --learning-rate")?,
                batch_size: setup.batch_size,
                seed: setup.seed,
                threads: setup.threads,
            };
            config.validate().context("invalid SGD configuration")?;
            Ok(MethodConfig::Sgd(config))
        }
    }
}

/// Builds and validates the BCD configuration.
fn build_config(setup: &TrainSetup) -> Result<Config> {
    let builder = bcdnn::Config::builder(MNIST_FEATURES, &setup.hidden, MNIST_CLASSES)
        .gamma(setup.gamma)
        .rho(setup.rho)
        .alpha(setup.alpha)
        .seed(setup.seed)
        .threads(setup.threads)
        .tile_width(setup.tile_width);
    let builder = setup.model.apply(builder, setup.hidden.len());
    let config = builder.build().context("invalid training configuration")?;
    if config.loss_scale == bcdnn::LossScale::Mean && config.layers.iter().any(|l| l.gamma >= 1e-2) {
        log::warn!(
            "--loss-scale mean divides the loss by the number of samples but not the coupling terms, so with \
             gamma and rho near 1 the loss barely moves the network; scale --gamma, --rho and --alpha by \
             1/samples as well (for 10000 samples, 1e-4), or use --loss-scale sum"
        );
    }
    Ok(config)
}

/// Widths `784, hidden..., 10` of an MNIST network.
fn network_widths(hidden: &[usize]) -> Vec<usize> {
    let mut widths = Vec::with_capacity(hidden.len() + 2);
    widths.push(MNIST_FEATURES);
    widths.extend_from_slice(hidden);
    widths.push(MNIST_CLASSES);
    widths
}

/// Returns the run's legend name: `--label`, else the record's file name without its extension, else
/// the algorithm's name.
fn run_label(setup: &TrainSetup) -> String {
    if let Some(label) = &setup.label {
        return label.clone();
    }
    match setup.record.as_deref().and_then(Path::file_stem) {
        Some(stem) => stem.to_string_lossy().into_owned(),
        None => setup.algorithm.name().to_string(),
    }
}

/// Splits off the last `validation` samples of `train` as the validation split.
///
/// Taking the last samples keeps the split fixed for a given `--train-limit`, independent of
/// the seed, and leaves the first samples, which a smaller `--train-limit` would keep, for
/// training.
fn split_validation(
    train: DatasetView<'_>,
    validation: Option<usize>,
) -> Result<(DatasetView<'_>, Option<DatasetView<'_>>)> {
    let Some(count) = validation else { return Ok((train, None)) };
    let total = train.n_samples();
    if count >= total {
        bail!(
            "--validation {count} leaves no samples to train on: the training set has {total} samples (after \
             --train-limit); give at most {}, or raise --train-limit",
            total.saturating_sub(1)
        );
    }
    let boundary = total - count;
    let training = train.columns(0..boundary).context("failed to split off the validation samples")?;
    let held_out = train.columns(boundary..total).context("failed to split off the validation samples")?;
    Ok((training, Some(held_out)))
}

/// Describes the validation split for the run line.
fn describe_validation(total: usize, count: usize) -> String {
    format!(
        "the last {count} of the first {total} MNIST training samples (indices {}..{total}), not trained on",
        total - count
    )
}

fn load_mnist(source_dir: &Path, cache_dir: &Path, use_mmap: bool) -> Result<bcdnn_data::Mnist> {
    if !source_dir.is_dir() {
        bail!(
            "MNIST data directory {} does not exist; pass --data-dir with the directory that holds the four MNIST \
             IDX files (train-images-idx3-ubyte.gz and the others), or set BCDNN_DATA_DIR",
            source_dir.display()
        );
    }
    let options = MnistOptions { source_dir: source_dir.to_path_buf(), cache_dir: cache_dir.to_path_buf(), use_mmap };
    bcdnn_data::load_mnist(&options).with_context(|| {
        format!(
            "failed to load MNIST from {} with stores in {} (use --data-dir and --cache-dir to choose other directories)",
            source_dir.display(),
            cache_dir.display()
        )
    })
}

/// Returns `path` absolute and free of `..` where it exists, else unchanged.
fn absolute_path(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Returns the first `limit` samples, or all of them, with a warning if there are fewer.
fn limit_samples<'a>(view: DatasetView<'a>, limit: Option<usize>, option: &str, set: &str) -> DatasetView<'a> {
    let Some(limit) = limit else { return view };
    if limit > view.n_samples() {
        log::warn!(
            "{option} {limit} exceeds the {} samples of the MNIST {set} set; using all of them",
            view.n_samples()
        );
    }
    view.head(limit)
}

/// Rejects a network whose `U` and `V` matrices alone exceed the available memory, so that a
/// typo in `--hidden` gets a message instead of an allocation failure.
///
/// NOTE: this counts only `U`, `V` and the weights, not the trainer's workspace, so a run
/// that passes can still run out of memory. `MemAvailable` comes from `/proc/meminfo`; where
/// that is unreadable only the size overflow is checked.
fn check_memory(config: &Config, samples: usize) -> Result<()> {
    let too_large = || anyhow::anyhow!("the network {} is too large to address", format_widths(&config.widths));
    let layer_units: usize =
        config.widths[1..].iter().try_fold(0usize, |sum, &d| sum.checked_add(d)).ok_or_else(too_large)?;
    let weights: usize = config
        .widths
        .windows(2)
        .try_fold(0usize, |sum, pair| sum.checked_add(pair[0].checked_mul(pair[1])?))
        .ok_or_else(too_large)?;
    let values = layer_units
        .checked_mul(samples)
        .and_then(|x| x.checked_mul(2))
        .and_then(|x| x.checked_add(weights))
        .ok_or_else(too_large)?;
    let bytes = values.checked_mul(std::mem::size_of::<f32>()).ok_or_else(too_large)?;
    if let Some(available) = available_memory_bytes() {
        if bytes as u64 > available {
            bail!(
                "training {} on {samples} samples needs at least {:.1} GiB for its state, but only {:.1} GiB of memory \
                 is available; use smaller --hidden widths or a smaller --train-limit",
                format_widths(&config.widths),
                gib(bytes as u64),
                gib(available)
            );
        }
    }
    Ok(())
}

fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Formats widths as `784-600x10-10`, with runs of equal widths in the `--hidden` notation.
fn format_widths(widths: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut index = 0;
    while index < widths.len() {
        let width = widths[index];
        let run = widths[index..].iter().take_while(|&&w| w == width).count();
        parts.push(if run > 1 { format!("{width}x{run}") } else { width.to_string() });
        index += run;
    }
    parts.join("-")
}

/// Sample counts of the three sets of a run.
#[derive(Clone, Copy)]
struct SampleCounts {
    train: usize,
    validation: usize,
    test: usize,
}

fn describe_run(setup: &TrainSetup, model: &Model<'_>, samples: SampleCounts, memory_bytes: usize) -> String {
    let method = match setup.algorithm {
        Algorithm::Bcd => format!("BCD with gamma {}, rho {}, alpha {}", setup.gamma, setup.rho, setup.alpha),
        Algorithm::Sgd => format!(
            "SGD with learning rate {}, batch size {}",
            setup.learning_rate.unwrap_or(f64::NAN),
            setup.batch_size
        ),
    };
    let validation =
        if samples.validation > 0 { format!(", validating on {}", samples.validation) } else { String::new() };
    format!(
        "training {} (preset {}) on {} samples{validation}, testing on {}: {method}, seed {}, {} iterations, \
         {} threads, {:.2} GiB of state and workspace",
        format_widths(model.widths()),
        setup.preset.name(),
        samples.train,
        samples.test,
        setup.seed,
        setup.epochs,
        model.threads(),
        gib(memory_bytes as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_group_equal_runs() {
        assert_eq!(format_widths(&[784, 600, 600, 600, 10]), "784-600x3-10");
        assert_eq!(format_widths(&[784, 1500, 10]), "784-1500-10");
        assert_eq!(format_widths(&[784, 100, 200, 200, 10]), "784-100-200x2-10");
    }
}
