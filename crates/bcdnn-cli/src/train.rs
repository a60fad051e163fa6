//! `bcdnn train`: load MNIST, build the trainer, run the iterations with progress output and
//! an optional JSON-lines record, and print a summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bcdnn::{Config, Evaluation, ObjectiveTerms, StepReport, Trainer};
use bcdnn_data::{DatasetView, MnistOptions, MNIST_CLASSES};

use crate::args::TrainSetup;
use crate::interrupt;
use crate::progress::Progress;
use crate::record::{IterationRecord, RecordWriter, RunRecord, RunStatus, SummaryRecord, RECORD_FORMAT_VERSION};
use crate::system::{SystemInfo, Timestamp};

/// Pixels per MNIST image (28 x 28), the input width of every network trained here.
const MNIST_FEATURES: usize = 28 * 28;

/// End state of a run that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Interrupted,
}

/// Runs `bcdnn train`. `command_line` goes into the record unchanged.
pub fn run_train(setup: &TrainSetup, command_line: &[String], system: &SystemInfo) -> Result<Outcome> {
    let started = Instant::now();
    let start_time = Timestamp::now();
    let mut progress = Progress::new(setup.quiet);

    // Check the configuration and the record path before the slower data loading.
    let config = build_config(setup)?;
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
    let train_view = limit_samples(mnist.train.view(), setup.train_limit, "--train-limit", "training");
    let test_view = limit_samples(mnist.test.view(), setup.test_limit, "--test-limit", "test");
    check_memory(&config, train_view.n_samples())?;

    let mut trainer = Trainer::<f32>::new(config, train_view).context("failed to set up the trainer")?;
    let (state_bytes, workspace_bytes) = trainer.memory_bytes();
    let memory_bytes = state_bytes + workspace_bytes;
    progress.note(&describe_run(setup, &trainer, train_view.n_samples(), test_view.n_samples(), memory_bytes));

    if let Some(writer) = record.as_mut() {
        writer.write(&RunRecord {
            kind: "run",
            format_version: RECORD_FORMAT_VERSION,
            bcdnn_version: env!("CARGO_PKG_VERSION"),
            start_time,
            command_line,
            preset: setup.preset.name(),
            config: trainer.config(),
            epochs: setup.epochs,
            eval_every: setup.eval_every,
            threads: trainer.threads(),
            train_samples: train_view.n_samples(),
            test_samples: test_view.n_samples(),
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
    let mut tracker = Tracker::default();
    let data = EvaluationData { train: train_view, test: test_view };
    let result = run_iterations(&mut trainer, data, setup, record.as_mut(), &progress, &mut tracker);
    progress.finish();

    let summary = tracker.summary(&result, setup_seconds, started.elapsed().as_secs_f64());
    let record_path = match (finish_record(record, tracker.pending.take(), &summary), &result) {
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

/// Builds and validates the library configuration; invalid values get the library's message.
fn build_config(setup: &TrainSetup) -> Result<Config> {
    let builder = bcdnn::Config::builder(MNIST_FEATURES, &setup.hidden, MNIST_CLASSES)
        .gamma(setup.gamma)
        .rho(setup.rho)
        .alpha(setup.alpha)
        .seed(setup.seed)
        .threads(setup.threads)
        .tile_width(setup.tile_width);
    builder.build().context("invalid training configuration")
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

fn describe_run(
    setup: &TrainSetup,
    trainer: &Trainer<'_, f32>,
    train_samples: usize,
    test_samples: usize,
    memory_bytes: usize,
) -> String {
    format!(
        "training {} (preset {}) on {train_samples} samples, testing on {test_samples}: gamma {}, rho {}, alpha {}, seed {}, \
         {} iterations, {} threads, {:.2} GiB of state and workspace",
        format_widths(&trainer.config().widths),
        setup.preset.name(),
        setup.gamma,
        setup.rho,
        setup.alpha,
        setup.seed,
        setup.epochs,
        trainer.threads(),
        gib(memory_bytes as u64),
    )
}

#[derive(Clone, Copy)]
struct EvaluationData<'a> {
    train: DatasetView<'a>,
    test: DatasetView<'a>,
}

/// Running totals of a run and the iteration record that waits for its objective.
#[derive(Default)]
struct Tracker {
    /// The last iteration's record, written once the next step reports its objective.
    pending: Option<IterationRecord>,
    iterations: usize,
    initial_objective: Option<f64>,
    final_objective: Option<f64>,
    final_train_accuracy: Option<f64>,
    final_test_accuracy: Option<f64>,
    /// Best test accuracy and its iteration; the earliest iteration wins a tie.
    best_test: Option<(f64, usize)>,
    total_update_seconds: f64,
    total_eval_seconds: f64,
    /// Smallest `||P^j - P^{j-1}||^2` so far.
    min_step: Option<f64>,
}

impl Tracker {
    fn summary(&self, result: &Result<Outcome>, setup_seconds: f64, total_seconds: f64) -> SummaryRecord {
        let (status, error) = match result {
            Ok(Outcome::Completed) => (RunStatus::Completed, None),
            Ok(Outcome::Interrupted) => (RunStatus::Interrupted, None),
            Err(error) => (RunStatus::Failed, Some(crate::error_chain(error))),
        };
        SummaryRecord {
            kind: "summary",
            status,
            error,
            iterations: self.iterations,
            initial_objective: self.initial_objective,
            final_objective: self.final_objective,
            final_train_accuracy: self.final_train_accuracy,
            final_test_accuracy: self.final_test_accuracy,
            best_test_accuracy: self.best_test.map(|(accuracy, _)| accuracy),
            best_test_iteration: self.best_test.map(|(_, iteration)| iteration),
            mean_update_seconds: (self.iterations > 0).then(|| self.total_update_seconds / self.iterations as f64),
            total_update_seconds: self.total_update_seconds,
            total_eval_seconds: self.total_eval_seconds,
            setup_seconds,
            total_seconds,
        }
    }
}

/// Runs the iterations until the configured count or an interrupt, writing each iteration's
/// record once its objective is known.
///
/// `StepReport::previous_objective` of step `k + 1` is the objective after iteration `k`, so
/// iteration `k`'s record waits in `tracker.pending` for one step. After the last step, one
/// explicit `Trainer::objective` call supplies the last value.
fn run_iterations(
    trainer: &mut Trainer<'_, f32>,
    data: EvaluationData<'_>,
    setup: &TrainSetup,
    mut record: Option<&mut RecordWriter>,
    progress: &Progress,
    tracker: &mut Tracker,
) -> Result<Outcome> {
    let loop_start = Instant::now();
    for iteration in 1..=setup.epochs {
        // Later iterations check for a stop request after their step, so that the stopped
        // iteration gets its objective and evaluation.
        if iteration == 1 && interrupt::stop_requested() {
            return Ok(Outcome::Interrupted);
        }
        let report = trainer.step().with_context(|| format!("iteration {iteration} failed"))?;
        tracker.iterations = iteration;
        tracker.total_update_seconds += report.update_seconds;

        let previous = report.previous_objective;
        if iteration == 1 {
            tracker.initial_objective = previous.map(|terms| terms.total());
        }
        if let Some(mut pending) = tracker.pending.take() {
            pending.objective = previous.map(|terms| terms.total());
            pending.objective_terms = previous;
            if let Some(writer) = record.as_deref_mut() {
                writer.write(&pending)?;
            }
        }

        let last = iteration == setup.epochs || interrupt::stop_requested();
        let evaluated = last || iteration % setup.eval_every == 0;
        let eval_start = Instant::now();
        let (train_eval, test_eval) = if evaluated {
            let train = trainer.evaluate(data.train).context("failed to evaluate the training set")?;
            let test = trainer.evaluate(data.test).context("failed to evaluate the test set")?;
            (Some(train), Some(test))
        } else {
            (None, None)
        };
        let final_terms = last.then(|| trainer.objective());
        let eval_seconds = eval_start.elapsed().as_secs_f64();
        tracker.total_eval_seconds += eval_seconds;

        if let Some(test) = &test_eval {
            if tracker.best_test.is_none_or(|(best, _)| test.accuracy > best) {
                tracker.best_test = Some((test.accuracy, iteration));
            }
            tracker.final_test_accuracy = Some(test.accuracy);
        }
        if let Some(train) = &train_eval {
            tracker.final_train_accuracy = Some(train.accuracy);
        }

        let step_total = report.step_total();
        let min_step = tracker.min_step.map_or(step_total, |m| m.min(step_total));
        tracker.min_step = Some(min_step);

        let iteration_record = IterationRecord {
            kind: "iteration",
            iteration,
            objective: final_terms.map(|terms| terms.total()),
            objective_terms: final_terms,
            squared_loss: train_eval.map(|e| e.squared_loss),
            test_squared_loss: test_eval.map(|e| e.squared_loss),
            train_accuracy: train_eval.map(|e| e.accuracy),
            test_accuracy: test_eval.map(|e| e.accuracy),
            update_seconds: report.update_seconds,
            eval_seconds,
            seconds_w: report.seconds_w,
            seconds_u: report.seconds_u,
            seconds_v: report.seconds_v,
            step_w: report.step_w,
            step_u: report.step_u,
            step_v: report.step_v,
            step_total,
            step_min_times_k: iteration as f64 * min_step,
            elapsed_seconds: loop_start.elapsed().as_secs_f64(),
        };
        let line = format_iteration(iteration, setup.epochs, &report, train_eval, test_eval, final_terms, eval_seconds);
        progress.iteration(line, evaluated);

        if last {
            tracker.final_objective = final_terms.map(|terms| terms.total());
            if let Some(writer) = record.as_deref_mut() {
                writer.write(&iteration_record)?;
            }
            return Ok(if iteration == setup.epochs { Outcome::Completed } else { Outcome::Interrupted });
        }
        tracker.pending = Some(iteration_record);
    }
    Ok(Outcome::Completed)
}

/// Formats one progress line. The objective shown is that of the previous iterate, the value
/// this step computed on the way; the last line also shows the final objective.
fn format_iteration(
    iteration: usize,
    total: usize,
    report: &StepReport,
    train: Option<Evaluation>,
    test: Option<Evaluation>,
    final_terms: Option<ObjectiveTerms>,
    eval_seconds: f64,
) -> String {
    let width = total.to_string().len();
    let mut line = format!("iteration {iteration:>width$}/{total}");
    if let Some(previous) = report.previous_objective {
        line.push_str(&format!("  objective({}) {:.5e}", iteration - 1, previous.total()));
    }
    if let Some(terms) = final_terms {
        line.push_str(&format!("  objective({iteration}) {:.5e}", terms.total()));
    }
    let percent = |e: Option<Evaluation>| e.map_or("   -   ".to_string(), |e| format!("{:6.2}%", 100.0 * e.accuracy));
    line.push_str(&format!(
        "  train {}  test {}  update {:.2} s  eval {:.2} s",
        percent(train),
        percent(test),
        report.update_seconds,
        eval_seconds
    ));
    line
}

/// Writes the iteration record still waiting for its objective, the summary line, and moves
/// the record onto its final path; returns that path.
///
/// A record is still waiting only when the step after it failed, so its objective is unknown
/// and stays null.
fn finish_record(
    record: Option<RecordWriter>,
    pending: Option<IterationRecord>,
    summary: &SummaryRecord,
) -> Result<Option<PathBuf>> {
    let Some(mut writer) = record else { return Ok(None) };
    if let Some(pending) = pending {
        writer.write(&pending)?;
    }
    writer.write(summary)?;
    Ok(Some(writer.finish()?))
}

fn print_summary(summary: &SummaryRecord, epochs: usize, record_path: Option<&Path>) {
    let ended = match summary.status {
        RunStatus::Interrupted => "interrupted after",
        RunStatus::Completed | RunStatus::Failed => "completed",
    };
    println!(
        "{ended} {} of {epochs} iterations in {:.1} s (setup {:.1} s, updates {:.1} s, evaluation {:.1} s)",
        summary.iterations,
        summary.total_seconds,
        summary.setup_seconds,
        summary.total_update_seconds,
        summary.total_eval_seconds
    );
    let percent = |value: Option<f64>| value.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a));
    if summary.iterations > 0 {
        println!(
            "final accuracy: test {}, train {}",
            percent(summary.final_test_accuracy),
            percent(summary.final_train_accuracy)
        );
    }
    if let (Some(best), Some(iteration)) = (summary.best_test_accuracy, summary.best_test_iteration) {
        println!("best test accuracy: {} at iteration {iteration}", percent(Some(best)));
    }
    if let (Some(initial), Some(last)) = (summary.initial_objective, summary.final_objective) {
        println!("objective: {initial:.5e} initially, {last:.5e} after iteration {}", summary.iterations);
    }
    if let Some(mean) = summary.mean_update_seconds {
        println!("mean update time: {mean:.2} s per iteration");
    }
    if let Some(path) = record_path {
        println!("record: {}", path.display());
    }
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
