//! The training loop of `bcdnn train`: steps, evaluations, iteration records, progress lines
//! and the run summary, for BCD and SGD alike.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use bcdnn::{Evaluation, ObjectiveTerms};
use bcdnn_data::DatasetView;

use crate::args::TrainSetup;
use crate::interrupt;
use crate::model::{Model, StepOutcome};
use crate::progress::Progress;
use crate::record::{
    IterationRecord, IterationSummary, RecordWriter, RunStatus, SummaryRecord, BEST_BY_VALIDATION,
    NO_BEST_WITHOUT_VALIDATION,
};
use crate::train::Outcome;

/// The sets evaluated after an iteration.
#[derive(Clone, Copy)]
pub struct EvaluationData<'a> {
    pub train: DatasetView<'a>,
    pub validation: Option<DatasetView<'a>>,
    pub test: DatasetView<'a>,
}

/// Evaluations of one iteration; all `None` in an iteration that was not evaluated.
#[derive(Clone, Copy, Default)]
struct Evaluations {
    train: Option<Evaluation>,
    validation: Option<Evaluation>,
    test: Option<Evaluation>,
}

/// Running totals of a run and the iteration record that waits for its objective.
pub struct Tracker {
    /// The last iteration's record, written once the next step reports its objective.
    pending: Option<IterationRecord>,
    has_validation: bool,
    iterations: usize,
    initial_objective: Option<f64>,
    last: Option<IterationSummary>,
    /// The evaluated iteration with the highest validation accuracy; the earliest wins a tie.
    best: Option<IterationSummary>,
    total_update_seconds: f64,
    total_eval_seconds: f64,
    /// Smallest `||P^j - P^{j-1}||^2` so far (BCD only).
    min_step: Option<f64>,
}

impl Tracker {
    pub fn new(has_validation: bool) -> Self {
        Tracker {
            pending: None,
            has_validation,
            iterations: 0,
            initial_objective: None,
            last: None,
            best: None,
            total_update_seconds: 0.0,
            total_eval_seconds: 0.0,
            min_step: None,
        }
    }

    /// Removes and returns the record still waiting for its objective.
    pub fn take_pending(&mut self) -> Option<IterationRecord> {
        self.pending.take()
    }

    /// Builds the summary line; `result` is the outcome of the training loop.
    pub fn summary(&self, result: &Result<Outcome>, setup_seconds: f64, total_seconds: f64) -> SummaryRecord {
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
            last: self.last,
            best: self.best,
            best_selection: if self.has_validation { BEST_BY_VALIDATION } else { NO_BEST_WITHOUT_VALIDATION },
            mean_update_seconds: (self.iterations > 0).then(|| self.total_update_seconds / self.iterations as f64),
            total_update_seconds: self.total_update_seconds,
            total_eval_seconds: self.total_eval_seconds,
            setup_seconds,
            total_seconds,
        }
    }

    /// Makes `record` the best iteration if its validation accuracy beats the best so far.
    fn consider_best(&mut self, record: &IterationRecord) {
        let Some(accuracy) = record.validation_accuracy else { return };
        let better = match self.best.and_then(|best| best.validation_accuracy) {
            Some(best) => accuracy > best,
            None => true,
        };
        if better {
            self.best = Some(IterationSummary::of(record));
        }
    }

    /// Stores the objective that the step after `pending` computed in the record and, where
    /// the record is the best or last iteration, in the summary.
    fn complete_pending(&mut self, objective: Option<ObjectiveTerms>) -> Option<IterationRecord> {
        let mut pending = self.pending.take()?;
        pending.objective = objective.map(|terms| terms.total());
        pending.objective_terms = objective;
        for summary in [&mut self.best, &mut self.last].into_iter().flatten() {
            if summary.iteration == pending.iteration {
                summary.objective = pending.objective;
            }
        }
        Some(pending)
    }
}

/// Runs the iterations until the configured count or an interrupt, writing each iteration's
/// record once its objective is known.
///
/// `StepReport::previous_objective` of BCD step `k + 1` is the objective after iteration `k`,
/// so iteration `k`'s record waits in `tracker.pending` for one step. After the last step, one
/// explicit `Trainer::objective` call supplies the last value. SGD records wait the same way
/// and get no objective.
pub fn run_iterations(
    model: &mut Model<'_>,
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
        let step = model.step().with_context(|| format!("iteration {iteration} failed"))?;
        tracker.iterations = iteration;
        tracker.total_update_seconds += step.update_seconds;

        let previous = step.bcd.and_then(|report| report.previous_objective);
        if iteration == 1 {
            tracker.initial_objective = previous.map(|terms| terms.total());
        }
        if let Some(pending) = tracker.complete_pending(previous) {
            if let Some(writer) = record.as_deref_mut() {
                writer.write(&pending)?;
            }
        }

        let last = iteration == setup.epochs || interrupt::stop_requested();
        let evaluated = last || iteration % setup.eval_every == 0;
        let eval_start = Instant::now();
        let evaluations = if evaluated { evaluate_sets(model, data)? } else { Evaluations::default() };
        let final_terms = if last { model.objective() } else { None };
        let eval_seconds = eval_start.elapsed().as_secs_f64();
        tracker.total_eval_seconds += eval_seconds;

        let iteration_record = build_record(iteration, &step, evaluations, final_terms, eval_seconds, tracker);
        let iteration_record =
            IterationRecord { elapsed_seconds: loop_start.elapsed().as_secs_f64(), ..iteration_record };
        tracker.last = Some(IterationSummary::of(&iteration_record));
        tracker.consider_best(&iteration_record);
        let line = format_iteration(&iteration_record, setup.epochs, &step, evaluations);
        progress.iteration(line, evaluated);

        if last {
            if let Some(writer) = record.as_deref_mut() {
                writer.write(&iteration_record)?;
            }
            return Ok(if iteration == setup.epochs { Outcome::Completed } else { Outcome::Interrupted });
        }
        tracker.pending = Some(iteration_record);
    }
    Ok(Outcome::Completed)
}

/// Evaluates the training, validation and test sets, in that order.
fn evaluate_sets(model: &mut Model<'_>, data: EvaluationData<'_>) -> Result<Evaluations> {
    let train = model.evaluate(data.train, "training")?;
    let validation = match data.validation {
        Some(view) => Some(model.evaluate(view, "validation")?),
        None => None,
    };
    let test = model.evaluate(data.test, "test")?;
    Ok(Evaluations { train: Some(train), validation, test: Some(test) })
}

/// Builds the record of one iteration and updates the running step minimum; the elapsed time
/// is left at 0 for the caller.
fn build_record(
    iteration: usize,
    step: &StepOutcome,
    evaluations: Evaluations,
    final_terms: Option<ObjectiveTerms>,
    eval_seconds: f64,
    tracker: &mut Tracker,
) -> IterationRecord {
    let report = step.bcd;
    let step_total = report.map(|r| r.step_total());
    let step_min_times_k = step_total.map(|total| {
        let min_step = tracker.min_step.map_or(total, |m| m.min(total));
        tracker.min_step = Some(min_step);
        iteration as f64 * min_step
    });
    let Evaluations { train, validation, test } = evaluations;
    IterationRecord {
        kind: "iteration",
        iteration,
        objective: final_terms.map(|terms| terms.total()),
        objective_terms: final_terms,
        squared_loss: train.map(|e| e.squared_loss),
        test_squared_loss: test.map(|e| e.squared_loss),
        validation_squared_loss: validation.map(|e| e.squared_loss),
        train_accuracy: train.map(|e| e.accuracy),
        test_accuracy: test.map(|e| e.accuracy),
        validation_accuracy: validation.map(|e| e.accuracy),
        train_majority_fraction: train.map(|e| e.majority_fraction),
        test_majority_fraction: test.map(|e| e.majority_fraction),
        validation_majority_fraction: validation.map(|e| e.majority_fraction),
        // serde_json writes a non-finite number as null, so a diverged SGD run gets null too.
        mean_batch_loss: step.mean_batch_loss.filter(|loss| loss.is_finite()),
        update_seconds: step.update_seconds,
        eval_seconds,
        seconds_w: report.map(|r| r.seconds_w),
        seconds_u: report.map(|r| r.seconds_u),
        seconds_v: report.map(|r| r.seconds_v),
        step_w: report.map(|r| r.step_w),
        step_u: report.map(|r| r.step_u),
        step_v: report.map(|r| r.step_v),
        step_total,
        step_min_times_k,
        largest_block_increase: report.map(|r| r.largest_block_increase),
        exact_block_check: report.map(|r| r.exact_block_check),
        elapsed_seconds: 0.0,
    }
}

/// Formats one progress line. For BCD the objective shown first is that of the previous
/// iterate, which this step computed on the way, and the last line also shows the final
/// objective. `majority` is the largest fraction of one set's samples predicted as one class.
fn format_iteration(record: &IterationRecord, total: usize, step: &StepOutcome, evaluations: Evaluations) -> String {
    let iteration = record.iteration;
    let width = total.to_string().len();
    let mut line = format!("iteration {iteration:>width$}/{total}");
    if let Some(previous) = step.bcd.and_then(|report| report.previous_objective) {
        line.push_str(&format!("  objective({}) {:.5e}", iteration - 1, previous.total()));
    }
    if let Some(objective) = record.objective {
        line.push_str(&format!("  objective({iteration}) {objective:.5e}"));
    }
    if let Some(loss) = step.mean_batch_loss {
        line.push_str(&format!("  batch loss {loss:.4e}"));
    }
    let percent = |e: Option<Evaluation>| e.map_or("   -   ".to_string(), |e| format!("{:6.2}%", 100.0 * e.accuracy));
    line.push_str(&format!("  train {}", percent(evaluations.train)));
    if let Some(validation) = evaluations.validation {
        line.push_str(&format!("  validation {}", percent(Some(validation))));
    }
    line.push_str(&format!("  test {}", percent(evaluations.test)));
    if let (Some(train), Some(test)) = (evaluations.train, evaluations.test) {
        line.push_str(&format!("  majority {:.2}/{:.2}", train.majority_fraction, test.majority_fraction));
    }
    line.push_str(&format!("  update {:.2} s  eval {:.2} s", step.update_seconds, record.eval_seconds));
    line
}

/// Writes the iteration record still waiting for its objective, the summary line, and moves
/// the record onto its final path; returns that path.
///
/// A record is still waiting only when the step after it failed, so its objective is unknown
/// and stays null.
pub fn finish_record(
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

/// Prints the summary on stdout: times, the last iteration, the best iteration by validation
/// accuracy (or why there is none), the objective and the record path.
pub fn print_summary(summary: &SummaryRecord, epochs: usize, record_path: Option<&Path>) {
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
    if let Some(last) = &summary.last {
        println!("last iteration {}: {}", last.iteration, describe_iteration(last));
    }
    match &summary.best {
        Some(best) => {
            println!("best iteration {} by validation accuracy: {}", best.iteration, describe_iteration(best))
        }
        None => println!("best iteration: {}", summary.best_selection),
    }
    if let (Some(initial), Some(last)) = (summary.initial_objective, summary.last.and_then(|l| l.objective)) {
        println!("objective: {initial:.5e} initially, {last:.5e} after iteration {}", summary.iterations);
    }
    if let Some(mean) = summary.mean_update_seconds {
        println!("mean update time: {mean:.2} s per iteration");
    }
    if let Some(path) = record_path {
        println!("record: {}", path.display());
    }
}

/// Formats the accuracies and majority fractions of one summarised iteration.
fn describe_iteration(summary: &IterationSummary) -> String {
    let percent = |value: Option<f64>| value.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a));
    let fraction = |value: Option<f64>| value.map_or("-".to_string(), |f| format!("{f:.3}"));
    let mut text =
        format!("test accuracy {}, train {}", percent(summary.test_accuracy), percent(summary.train_accuracy));
    if summary.validation_accuracy.is_some() {
        text.push_str(&format!(", validation {}", percent(summary.validation_accuracy)));
    }
    text.push_str(&format!(
        "; majority fraction test {}, train {}",
        fraction(summary.test_majority_fraction),
        fraction(summary.train_majority_fraction)
    ));
    text
}
