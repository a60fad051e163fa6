//! The JSON-lines run record written by `bcdnn train --record FILE`.
//!
//! A record has one `"kind": "run"` line describing the run, one `"kind": "iteration"` line
//! per completed iteration and one `"kind": "summary"` line. BCD and SGD runs share the
//! layout: for SGD one iteration is one epoch, and the fields only BCD computes are null. Lines are appended and flushed
//! to a temporary file next to FILE as they are produced, so an interrupted run leaves its
//! lines readable there. The temporary file is renamed onto FILE when the run ends.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bcdnn::ObjectiveTerms;
use serde::Serialize;

use crate::system::{SystemInfo, Timestamp};

/// Version of the record layout; increase it when a field changes meaning or is removed.
///
/// Version 2 added the algorithm, label and validation split to the run line. It added the
/// validation and majority-fraction fields and `largest_block_increase` to iteration lines
/// and made the BCD-only iteration fields nullable. It replaced the summary's `final_*` and
/// `best_test_*` fields by the `last` and `best` objects.
pub const RECORD_FORMAT_VERSION: u32 = 2;

/// Appends JSON lines to a temporary file and moves it onto the final path on
/// [`RecordWriter::finish`].
///
/// Dropping the writer without `finish` removes the temporary file if nothing was written to
/// it and keeps it otherwise, so that the lines of an aborted run stay readable.
pub struct RecordWriter {
    final_path: PathBuf,
    temp_path: PathBuf,
    file: Option<File>,
    overwrite: bool,
    lines: usize,
}

impl RecordWriter {
    /// Checks that `path` can be written and creates the temporary file beside it.
    ///
    /// Fails if `path` exists and `overwrite` is false, if `path` is a directory, or if its
    /// directory is missing or not writable.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self> {
        if path.is_dir() {
            bail!(
                "record path {} is a directory; give a file path such as {}",
                path.display(),
                path.join("run.jsonl").display()
            );
        }
        crate::output::ensure_regular_file_or_missing(path, "--record")?;
        if path.exists() && !overwrite {
            bail!(
                "record file {} already exists; pass --overwrite to replace it or choose another --record path",
                path.display()
            );
        }
        let Some(file_name) = path.file_name() else {
            bail!("record path {} has no file name; give a file path such as run.jsonl", path.display());
        };
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !directory.is_dir() {
            bail!(
                "directory {} of record file {} does not exist; create it or choose another --record path",
                directory.display(),
                path.display()
            );
        }

        let mut temp_name = file_name.to_os_string();
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp_path = directory.join(temp_name);
        let file = OpenOptions::new().write(true).create_new(true).open(&temp_path).with_context(|| {
            format!("failed to create temporary record file {} for {}", temp_path.display(), path.display())
        })?;
        Ok(RecordWriter { final_path: path.to_path_buf(), temp_path, file: Some(file), overwrite, lines: 0 })
    }

    /// Path of the temporary file that contains the lines until [`RecordWriter::finish`].
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Appends `value` as one JSON line and hands it to the operating system at once.
    pub fn write<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let mut line = serde_json::to_string(value).context("failed to serialise a record line")?;
        line.push('\n');
        let file = self.file.as_mut().expect("the record file is open until finish");
        file.write_all(line.as_bytes())
            .and_then(|()| file.flush())
            .with_context(|| format!("failed to write record file {}", self.temp_path.display()))?;
        self.lines += 1;
        Ok(())
    }

    /// Syncs the temporary file and moves it onto the final path; returns the final path.
    ///
    /// Without `overwrite`, the move fails rather than replace a file that appeared at the
    /// final path during the run, and the lines stay in the temporary file.
    pub fn finish(mut self) -> Result<PathBuf> {
        let file = self.file.take().expect("the record file is open until finish");
        file.sync_all().with_context(|| format!("failed to sync record file {}", self.temp_path.display()))?;
        drop(file);
        self.persist()?;
        Ok(self.final_path.clone())
    }

    fn persist(&self) -> Result<()> {
        let moved = if self.overwrite { fs::rename(&self.temp_path, &self.final_path) } else { self.move_no_clobber() };
        moved.with_context(|| {
            format!(
                "failed to move the record to {}; its lines are in {}",
                self.final_path.display(),
                self.temp_path.display()
            )
        })
    }

    /// Moves the temporary file onto the final path unless that path exists. A hard link
    /// fails atomically on an existing target; where the file system has no hard links, the
    /// check and the rename are two steps.
    fn move_no_clobber(&self) -> io::Result<()> {
        match fs::hard_link(&self.temp_path, &self.final_path) {
            Ok(()) => fs::remove_file(&self.temp_path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another process created the file during the run; pass --overwrite to replace it",
            )),
            Err(_) if self.final_path.exists() => {
                Err(io::Error::new(io::ErrorKind::AlreadyExists, "another process created the file during the run"))
            }
            Err(_) => fs::rename(&self.temp_path, &self.final_path),
        }
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        if self.file.is_some() && self.lines == 0 {
            // Nothing worth keeping: the run failed before its first line.
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// The first line: everything needed to repeat the run and to compare its timings.
#[derive(Serialize)]
pub struct RunRecord<'a> {
    pub kind: &'static str,
    pub format_version: u32,
    pub bcdnn_version: &'static str,
    pub start_time: Timestamp,
    /// The program's arguments, the program name included.
    pub command_line: &'a [String],
    pub preset: &'static str,
    /// `"bcd"` or `"sgd"`.
    pub algorithm: &'static str,
    /// Legend name for `bcdnn plot`.
    pub label: &'a str,
    /// Unit of one iteration of the record: a BCD sweep over all blocks on the full batch, or
    /// one SGD epoch.
    pub iteration_unit: &'static str,
    /// BCD: widths `d_0..d_N`, per-layer gamma, rho and alpha, seed, requested threads (0: one
    /// per core), tile width and initialisation. SGD: widths, learning rate, batch size, seed,
    /// requested threads and initialisation.
    pub config: serde_json::Value,
    pub epochs: usize,
    pub eval_every: usize,
    /// Worker threads the trainer runs.
    pub threads: usize,
    /// Samples trained on: the training set after `--train-limit`, less the validation split.
    pub train_samples: usize,
    pub test_samples: usize,
    /// Samples of the validation split; 0 without one.
    pub validation_samples: usize,
    /// Description of the samples that form the validation split; null without one.
    pub validation_split: Option<String>,
    pub data_dir: &'a Path,
    pub cache_dir: &'a Path,
    pub memory_mapped: bool,
    /// Bytes of the trainer's state (BCD: `U`, `V` and weights; SGD: weights) and of its
    /// workspace (null for SGD).
    pub state_bytes: usize,
    pub workspace_bytes: Option<usize>,
    pub system: &'a SystemInfo,
}

/// One iteration. Values that were not computed in this iteration are `None` (JSON null).
#[derive(Clone, Debug, Serialize)]
pub struct IterationRecord {
    pub kind: &'static str,
    pub iteration: usize,
    /// `Lbar` at the iterate after this iteration. The next step computes it on the way; the
    /// last iteration's value is evaluated explicitly. Null if the next step failed.
    pub objective: Option<f64>,
    pub objective_terms: Option<ObjectiveTerms>,
    /// `1/2 ||f(X) - Y||^2` of the plain forward pass, summed over the training samples.
    pub squared_loss: Option<f64>,
    /// The same sum over the test samples.
    pub test_squared_loss: Option<f64>,
    /// The same sum over the validation samples.
    pub validation_squared_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub validation_accuracy: Option<f64>,
    /// Fraction of the samples of each set predicted as that set's most frequently predicted
    /// class; near 1 for a collapsed network.
    pub train_majority_fraction: Option<f64>,
    pub test_majority_fraction: Option<f64>,
    pub validation_majority_fraction: Option<f64>,
    /// SGD: mean over the epoch's batches of the batch loss `1/(2m) sum ||f(x) - y||^2`, each
    /// at the weights before that batch's update. Null for BCD, and once SGD has diverged.
    pub mean_batch_loss: Option<f64>,
    /// Wall time of the block updates (BCD) or of the epoch (SGD).
    pub update_seconds: f64,
    /// Wall time of the accuracy evaluations and, in the last iteration, of the explicit
    /// objective evaluation.
    pub eval_seconds: f64,
    /// Wall time per BCD block kind; null for SGD, as are the other BCD-only fields below.
    pub seconds_w: Option<f64>,
    pub seconds_u: Option<f64>,
    pub seconds_v: Option<f64>,
    /// `||P^k - P^{k-1}||^2` summed over the blocks of each kind.
    pub step_w: Option<f64>,
    pub step_u: Option<f64>,
    pub step_v: Option<f64>,
    /// `||P^k - P^{k-1}||^2` over all blocks.
    pub step_total: Option<f64>,
    /// `k * min_{j<=k} ||P^j - P^{j-1}||^2`, which stays bounded when the step lengths decay
    /// at the `O(1/k)` rate that the convergence theory gives.
    pub step_min_times_k: Option<f64>,
    /// Largest increase of `Lbar` caused by a single block update of this iteration, as the
    /// trainer reports it (0 when every block decreased it).
    pub largest_block_increase: Option<f64>,
    /// Whether `largest_block_increase` comes from an explicit evaluation of `Lbar` after every
    /// block (`--exact-block-check`) rather than from the blocks' own accounting.
    pub exact_block_check: Option<bool>,
    /// Wall time since the first iteration started, at the end of this iteration.
    pub elapsed_seconds: f64,
}

/// Final status of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    /// Stopped early by SIGINT or SIGTERM after a complete iteration.
    Interrupted,
    Failed,
}

/// The last line.
#[derive(Clone, Debug, Serialize)]
pub struct SummaryRecord {
    pub kind: &'static str,
    pub status: RunStatus,
    /// The error chain of a failed run.
    pub error: Option<String>,
    pub iterations: usize,
    /// `Lbar` at the initial iterate, before the first step (null for SGD).
    pub initial_objective: Option<f64>,
    /// The last iteration run; null when none completed.
    pub last: Option<IterationSummary>,
    /// The evaluated iteration with the highest validation accuracy, the earliest on a tie.
    /// Null without a validation split: the test set never selects an iteration.
    pub best: Option<IterationSummary>,
    /// Rule that chose `best`, or the reason there is none.
    pub best_selection: &'static str,
    pub mean_update_seconds: Option<f64>,
    pub total_update_seconds: f64,
    pub total_eval_seconds: f64,
    /// Wall time of loading the data and setting up the trainer.
    pub setup_seconds: f64,
    /// Wall time of the whole command.
    pub total_seconds: f64,
}

/// Values of one iteration that the summary repeats.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct IterationSummary {
    pub iteration: usize,
    /// Null for SGD, and for a best iteration whose objective was never computed because the
    /// step after it failed.
    pub objective: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub validation_accuracy: Option<f64>,
    pub train_majority_fraction: Option<f64>,
    pub test_majority_fraction: Option<f64>,
    pub validation_majority_fraction: Option<f64>,
}

impl IterationSummary {
    pub fn of(record: &IterationRecord) -> Self {
        IterationSummary {
            iteration: record.iteration,
            objective: record.objective,
            train_accuracy: record.train_accuracy,
            test_accuracy: record.test_accuracy,
            validation_accuracy: record.validation_accuracy,
            train_majority_fraction: record.train_majority_fraction,
            test_majority_fraction: record.test_majority_fraction,
            validation_majority_fraction: record.validation_majority_fraction,
        }
    }
}

/// `best_selection` of a run with a validation split.
pub const BEST_BY_VALIDATION: &str = "highest validation accuracy, earliest iteration on a tie";

/// `best_selection` of a run without one.
pub const NO_BEST_WITHOUT_VALIDATION: &str =
    "none: the run has no validation split (--validation), and the test set is never used to select an iteration";
