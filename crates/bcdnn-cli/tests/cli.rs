//! End-to-end tests of the `bcdnn` binary: argument errors, and short real training runs on
//! the MNIST files in `datasets/mnist` with their JSON-lines record.
//!
//! The converted MNIST stores go to one cache directory under Cargo's `target/tmp`, so the
//! conversion runs once per build directory rather than once per test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

fn bcdnn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bcdnn"))
}

/// Creates an empty directory under the system temp directory, unique per test and process.
fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("bcdnn-cli-{name}-{}-{unique}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create test temp dir");
    dir
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("bcdnn-cli-mnist-cache")
}

/// `bcdnn train` on 500 training and 200 test samples with the shared cache directory.
fn small_train() -> Command {
    let mut command = bcdnn();
    command.args(["train", "--train-limit", "500", "--test-limit", "200", "--hidden", "64", "--cache-dir"]);
    command.arg(cache_dir());
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn read_record(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read record {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("record line {} is not JSON ({e}): {line}", index + 1))
        })
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn help_lists_commands_and_options() {
    let output = bcdnn().arg("--help").output().unwrap();
    assert!(output.status.success(), "bcdnn --help failed: {}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("train"), "--help lacks the train command:\n{text}");
    assert!(text.contains("info"), "--help lacks the info command:\n{text}");

    let output = bcdnn().args(["train", "--help"]).output().unwrap();
    assert!(output.status.success(), "bcdnn train --help failed: {}", stderr(&output));
    let text = stdout(&output);
    for option in [
        "--hidden",
        "--epochs",
        "--gamma",
        "--rho",
        "--alpha",
        "--seed",
        "--threads",
        "--train-limit",
        "--test-limit",
        "--record",
        "--overwrite",
        "--preset",
        "paper-3layer",
        "paper-deep",
        "--eval-every",
        "--tile-width",
        "--data-dir",
        "--cache-dir",
        "--no-mmap",
        "--quiet",
        "--validation",
        "--algorithm",
        "--learning-rate",
        "--batch-size",
        "--label",
    ] {
        assert!(text.contains(option), "train --help lacks {option}:\n{text}");
    }
}

#[test]
fn info_prints_machine_and_dirs() {
    let output = bcdnn().arg("info").output().unwrap();
    assert!(output.status.success(), "bcdnn info failed: {}", stderr(&output));
    let text = stdout(&output);
    for key in ["bcdnn ", "cpu:", "logical cores:", "simd level:", "data directory:", "cache directory:"] {
        assert!(text.contains(key), "info output lacks {key:?}:\n{text}");
    }
}

#[test]
fn bad_options_rejected() {
    // (arguments after `train`, expected part of the message, expected exit code). Usage
    // errors found by the argument parser exit with 2, errors found later with 1.
    let cases: &[(&[&str], &str, i32)] = &[
        (&["--hidden", "0,5"], "width 0 at position 1 of --hidden is invalid; widths must be positive integers", 2),
        (&["--hidden", "64,abc"], "'abc' at position 2 of --hidden is not a width", 2),
        (&["--hidden", "600x0"], "repeat count 0 in '600x0' at position 1 of --hidden is invalid", 2),
        (&["--gamma", "0"], "gamma of layer 1 is 0; it must be a finite number greater than 0", 1),
        (&["--gamma", "NaN"], "gamma of layer 1 is NaN; it must be a finite number greater than 0", 1),
        (&["--rho", "-1"], "rho of layer 1 is -1; it must be a finite number greater than 0", 1),
        (&["--alpha", "inf"], "alpha of layer 1 is inf; it must be a finite number greater than 0", 1),
        (&["--gamma", "abc"], "invalid value 'abc' for '--gamma <X>'", 2),
        (&["--preset", "nope"], "invalid value 'nope' for '--preset <NAME>'", 2),
        (&["--epochs", "0"], "0 is invalid here; give a positive integer", 2),
        (&["--eval-every", "0"], "0 is invalid here; give a positive integer", 2),
        (&["--train-limit", "0"], "0 is invalid here; give a positive integer", 2),
        (&["--tile-width", "0"], "tile width is 0", 1),
        (&["--validation", "0"], "a validation split of 0 samples is invalid", 2),
        (&["--validation", "many"], "'many' is not a sample count", 2),
        (&["--algorithm", "sgd"], "--algorithm sgd needs --learning-rate", 1),
        (&["--algorithm", "sgd", "--learning-rate", "0"], "--learning-rate 0 is invalid", 1),
        (&["--algorithm", "sgd", "--learning-rate", "0.1", "--gamma", "2"], "--gamma is a BCD parameter", 1),
        (&["--learning-rate", "0.1"], "--learning-rate applies to --algorithm sgd only", 1),
        (&["--batch-size", "64"], "--batch-size applies to --algorithm sgd only", 1),
        (&["--algorithm", "sgd", "--learning-rate", "0.1", "--batch-size", "0"], "0 is invalid here", 2),
        (&["--overwrite"], "--record <FILE>", 2),
        (
            &["--data-dir", "/nonexistent/bcdnn-mnist"],
            "MNIST data directory /nonexistent/bcdnn-mnist does not exist",
            1,
        ),
    ];
    for (args, expected, code) in cases {
        let output = bcdnn().arg("train").args(*args).output().unwrap();
        let message = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(*code),
            "train {args:?}: exit status {:?}, stderr:\n{message}",
            output.status
        );
        assert!(message.contains(expected), "train {args:?}: stderr lacks {expected:?}:\n{message}");
        assert!(!message.contains("panicked"), "train {args:?} panicked:\n{message}");
    }
}

#[test]
fn unknown_preset_lists_presets() {
    let output = bcdnn().args(["train", "--preset", "nope"]).output().unwrap();
    let message = stderr(&output);
    assert!(message.contains("quick"), "{message}");
    assert!(message.contains("paper-3layer"), "{message}");
    assert!(message.contains("paper-deep"), "{message}");
}

#[test]
fn record_in_missing_directory_rejected() {
    let dir = temp_dir("missing-dir");
    let path = dir.join("missing").join("run.jsonl");
    let output = bcdnn().arg("train").arg("--record").arg(&path).output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{message}");
    let expected =
        format!("directory {} of record file {} does not exist", dir.join("missing").display(), path.display());
    assert!(message.contains(&expected), "stderr lacks {expected:?}:\n{message}");
    assert!(!path.exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn record_directory_path_rejected() {
    let dir = temp_dir("dir-path");
    let output = bcdnn().arg("train").arg("--record").arg(&dir).output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{message}");
    assert!(message.contains("is a directory"), "{message}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn existing_record_kept_without_overwrite() {
    let dir = temp_dir("existing");
    let path = dir.join("run.jsonl");
    fs::write(&path, "user data\n").unwrap();
    let output = bcdnn().arg("train").arg("--record").arg(&path).output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{message}");
    let expected = format!("record file {} already exists; pass --overwrite", path.display());
    assert!(message.contains(&expected), "stderr lacks {expected:?}:\n{message}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "user data\n", "the existing file was modified");
    assert_eq!(files_in(&dir), vec!["run.jsonl".to_string()], "a temporary file was left behind");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn small_run_writes_record() {
    let dir = temp_dir("small-run");
    let path = dir.join("run.jsonl");
    let output = small_train().args(["--epochs", "2", "--seed", "3", "--record"]).arg(&path).output().unwrap();
    assert!(output.status.success(), "training failed:\n{}", stderr(&output));
    assert!(stdout(&output).contains("last iteration 2: test accuracy"), "summary missing:\n{}", stdout(&output));
    assert_eq!(files_in(&dir), vec!["run.jsonl".to_string()], "the temporary record file was left behind");

    let lines = read_record(&path);
    assert_eq!(lines.len(), 4, "expected run, 2 iterations and summary: {lines:#?}");

    let run = &lines[0];
    assert_eq!(run["kind"], "run");
    assert_eq!(run["format_version"], 2);
    assert_eq!(run["algorithm"], "bcd");
    assert_eq!(run["label"], "run", "the label defaults to the record's file stem");
    assert_eq!(run["validation_samples"], 0);
    assert!(run["validation_split"].is_null(), "{run}");
    assert_eq!(run["bcdnn_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(run["config"]["widths"], serde_json::json!([784, 64, 10]));
    let layers = run["config"]["layers"].as_array().expect("config.layers is an array");
    assert_eq!(layers.len(), 2);
    for layer in layers {
        for key in ["gamma", "rho", "alpha"] {
            assert!(layer[key].is_f64(), "layer lacks {key}: {layer}");
        }
    }
    assert_eq!(run["config"]["seed"], 3);
    assert!(run["config"]["tile_width"].as_u64().is_some_and(|w| w > 0), "{run}");
    assert!(run["threads"].as_u64().is_some_and(|t| t > 0), "{run}");
    assert_eq!(run["train_samples"], 500);
    assert_eq!(run["test_samples"], 200);
    assert!(run["system"]["logical_cores"].as_u64().is_some_and(|c| c > 0), "{run}");
    assert!(run["system"].get("cpu_model").is_some(), "system lacks cpu_model: {run}");
    assert!(run["system"]["simd_level"].as_str().is_some_and(|level| !level.is_empty()), "{run}");
    assert!(run["start_time"]["rfc3339"].as_str().is_some_and(|t| t.ends_with('Z')), "{run}");
    let command_line = run["command_line"].as_array().expect("command_line is an array");
    assert!(command_line.iter().any(|a| a == "--train-limit"), "{run}");

    let iterations = &lines[1..3];
    for (index, record) in iterations.iter().enumerate() {
        assert_eq!(record["kind"], "iteration");
        assert_eq!(record["iteration"], index + 1);
        for key in [
            "objective",
            "squared_loss",
            "test_squared_loss",
            "train_accuracy",
            "test_accuracy",
            "update_seconds",
            "eval_seconds",
            "seconds_w",
            "seconds_u",
            "seconds_v",
            "step_w",
            "step_u",
            "step_v",
            "step_total",
            "step_min_times_k",
            "largest_block_increase",
            "train_majority_fraction",
            "test_majority_fraction",
        ] {
            assert!(record[key].is_number(), "iteration {} field {key} is not a number: {record}", index + 1);
        }
        let parts: f64 = ["step_w", "step_u", "step_v"].iter().map(|k| record[*k].as_f64().unwrap()).sum();
        let total = record["step_total"].as_f64().unwrap();
        assert!((parts - total).abs() <= 1e-12 * total, "step_total {total} != sum of block kinds {parts}");
        for key in ["loss", "activation_coupling", "preactivation_coupling"] {
            assert!(record["objective_terms"][key].is_number(), "objective_terms lacks {key}: {record}");
        }
        let terms = &record["objective_terms"];
        let sum = terms["loss"].as_f64().unwrap()
            + terms["activation_coupling"].as_f64().unwrap()
            + terms["preactivation_coupling"].as_f64().unwrap();
        let objective = record["objective"].as_f64().unwrap();
        assert!((sum - objective).abs() <= 1e-9 * objective.abs(), "objective {objective} != sum of terms {sum}");
        let accuracy = record["test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy), "test accuracy {accuracy}");
        // 200 test samples in 10 classes: at least one class gets a tenth of the predictions.
        let majority = record["test_majority_fraction"].as_f64().unwrap();
        assert!((0.1..=1.0).contains(&majority), "test majority fraction {majority}");
        for key in ["validation_accuracy", "validation_majority_fraction", "mean_batch_loss"] {
            assert!(record[key].is_null(), "{key} is set without a validation split or SGD: {record}");
        }
    }

    // BCD never increases the objective; the tolerance covers f32 rounding.
    let summary = &lines[3];
    let initial = summary["initial_objective"].as_f64().expect("initial objective");
    let first = iterations[0]["objective"].as_f64().unwrap();
    let second = iterations[1]["objective"].as_f64().unwrap();
    assert!(first <= initial * (1.0 + 1e-6), "objective rose from {initial} to {first} in iteration 1");
    assert!(second <= first * (1.0 + 1e-6), "objective rose from {first} to {second} in iteration 2");

    // k * min_{j<=k} ||P^j - P^{j-1}||^2 from the per-iteration totals.
    let steps: Vec<f64> = iterations.iter().map(|r| r["step_total"].as_f64().unwrap()).collect();
    for (k, record) in iterations.iter().enumerate() {
        let expected = (k + 1) as f64 * steps[..=k].iter().copied().fold(f64::INFINITY, f64::min);
        let got = record["step_min_times_k"].as_f64().unwrap();
        assert!(
            (got - expected).abs() <= 1e-12 * expected,
            "iteration {}: step_min_times_k {got}, expected {expected}",
            k + 1
        );
    }

    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["iterations"], 2);
    assert_eq!(summary["last"]["iteration"], 2);
    assert_eq!(summary["last"]["objective"], iterations[1]["objective"]);
    assert_eq!(summary["last"]["test_accuracy"], iterations[1]["test_accuracy"]);
    assert!(summary["best"].is_null(), "no best iteration without a validation split: {summary}");
    assert!(summary["best_selection"].as_str().is_some_and(|s| s.contains("no validation split")), "{summary}");
    assert!(summary["mean_update_seconds"].is_number(), "{summary}");
    assert!(stdout(&output).contains("best iteration: none"), "{}", stdout(&output));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_every_leaves_nulls() {
    let dir = temp_dir("eval-every");
    let path = dir.join("run.jsonl");
    let output =
        small_train().args(["--epochs", "3", "--eval-every", "2", "--quiet", "--record"]).arg(&path).output().unwrap();
    assert!(output.status.success(), "training failed:\n{}", stderr(&output));
    assert!(!stderr(&output).contains("iteration 1/3"), "--quiet printed progress:\n{}", stderr(&output));

    let lines = read_record(&path);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    // Iteration 2 is a multiple of 2 and iteration 3 is the last, so only 1 skips evaluation.
    let evaluated: Vec<bool> = lines[1..4].iter().map(|r| !r["test_accuracy"].is_null()).collect();
    assert_eq!(evaluated, vec![false, true, true]);
    assert!(lines[1]["train_accuracy"].is_null());
    assert!(lines[1]["squared_loss"].is_null());
    for record in &lines[1..4] {
        assert!(record["objective"].is_number(), "every iteration has its objective: {record}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn overwrite_replaces_record() {
    let dir = temp_dir("overwrite");
    let path = dir.join("run.jsonl");
    fs::write(&path, "old\n").unwrap();
    let output = small_train().args(["--epochs", "1", "--overwrite", "--record"]).arg(&path).output().unwrap();
    assert!(output.status.success(), "training failed:\n{}", stderr(&output));
    let lines = read_record(&path);
    assert_eq!(lines.first().map(|l| l["kind"].clone()), Some(Value::from("run")));
    assert_eq!(lines.last().map(|l| l["status"].clone()), Some(Value::from("completed")));
    fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn interrupt_finishes_record() {
    use std::time::{Duration, Instant};

    let dir = temp_dir("interrupt");
    let path = dir.join("run.jsonl");
    let child = small_train()
        .args(["--epochs", "100000", "--eval-every", "1000", "--quiet", "--record"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Wait until a few iteration lines are in the temporary record file.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lines: usize = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| fs::read_to_string(entry.unwrap().path()).unwrap_or_default().lines().count())
            .sum();
        if lines >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "no iteration lines after 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -INT failed");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "stderr:\n{}", stderr(&output));
    assert!(stdout(&output).contains("interrupted after"), "{}", stdout(&output));

    let lines = read_record(&path);
    let summary = lines.last().unwrap();
    assert_eq!(summary["status"], "interrupted");
    let iterations = summary["iterations"].as_u64().unwrap() as usize;
    assert_eq!(lines.len(), iterations + 2, "one line per completed iteration plus run and summary");
    let last = &lines[iterations];
    assert!(last["objective"].is_number(), "{last}");
    assert!(last["test_accuracy"].is_number(), "the interrupted iteration is evaluated: {last}");
    assert_eq!(files_in(&dir), vec!["run.jsonl".to_string()]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validation_as_large_as_training_set_rejected() {
    for count in ["500", "501"] {
        let output = small_train().args(["--epochs", "1", "--validation", count]).output().unwrap();
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "--validation {count}: stderr:\n{message}");
        let expected = format!("--validation {count} leaves no samples to train on: the training set has 500 samples");
        assert!(message.contains(&expected), "--validation {count}: stderr lacks {expected:?}:\n{message}");
        assert!(message.contains("give at most 499"), "{message}");
    }
}

#[test]
fn validation_run_reports_best_and_last() {
    let dir = temp_dir("validation");
    let path = dir.join("run.jsonl");
    let output = small_train()
        .args(["--epochs", "4", "--eval-every", "2", "--validation", "100", "--quiet", "--record"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "training failed:\n{}", stderr(&output));

    let lines = read_record(&path);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let run = &lines[0];
    assert_eq!(run["train_samples"], 400, "the validation samples are not trained on");
    assert_eq!(run["validation_samples"], 100);
    assert!(run["validation_split"].as_str().is_some_and(|s| s.contains("indices 400..500")), "{run}");

    let iterations = &lines[1..5];
    for record in iterations {
        let evaluated = record["iteration"].as_u64().unwrap() % 2 == 0;
        for key in ["validation_accuracy", "validation_squared_loss", "validation_majority_fraction"] {
            assert_eq!(record[key].is_number(), evaluated, "{key} of iteration {}: {record}", record["iteration"]);
        }
    }

    // The best iteration is the evaluated one with the highest validation accuracy, the
    // earliest on a tie; the last is iteration 4.
    let summary = &lines[5];
    let mut best: Option<&Value> = None;
    for record in iterations.iter().filter(|r| r["validation_accuracy"].is_number()) {
        let accuracy = record["validation_accuracy"].as_f64().unwrap();
        if best.is_none_or(|b| accuracy > b["validation_accuracy"].as_f64().unwrap()) {
            best = Some(record);
        }
    }
    let best = best.expect("evaluated iterations");
    assert_eq!(summary["best"]["iteration"], best["iteration"], "{summary}");
    for key in ["validation_accuracy", "test_accuracy", "train_accuracy", "objective", "test_majority_fraction"] {
        assert_eq!(summary["best"][key], best[key], "best.{key}: {summary}");
        assert_eq!(summary["last"][key], iterations[3][key], "last.{key}: {summary}");
    }
    assert_eq!(summary["last"]["iteration"], 4);
    assert!(summary["best_selection"].as_str().is_some_and(|s| s.contains("validation accuracy")), "{summary}");

    let text = stdout(&output);
    assert!(text.contains("last iteration 4: test accuracy"), "{text}");
    let expected = format!("best iteration {} by validation accuracy", best["iteration"]);
    assert!(text.contains(&expected), "stdout lacks {expected:?}:\n{text}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sgd_run_writes_record_and_plots() {
    let dir = temp_dir("sgd");
    let sgd_path = dir.join("sgd.jsonl");
    let output = small_train()
        .args(["--algorithm", "sgd", "--learning-rate", "0.05", "--batch-size", "64", "--epochs", "2"])
        .args(["--seed", "3", "--label", "SGD test", "--quiet", "--record"])
        .arg(&sgd_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "SGD training failed:\n{}", stderr(&output));

    let lines = read_record(&sgd_path);
    assert_eq!(lines.len(), 4, "run, 2 epochs, summary: {lines:#?}");
    let run = &lines[0];
    assert_eq!(run["algorithm"], "sgd");
    assert_eq!(run["label"], "SGD test");
    assert_eq!(run["config"]["learning_rate"], 0.05);
    assert_eq!(run["config"]["batch_size"], 64);
    assert_eq!(run["config"]["seed"], 3);
    assert_eq!(run["config"]["widths"], serde_json::json!([784, 64, 10]));
    assert_eq!(run["config"]["init_weight_scale"], 0.01);
    assert!(run["iteration_unit"].as_str().is_some_and(|u| u.contains("epoch")), "{run}");
    for (index, record) in lines[1..3].iter().enumerate() {
        assert_eq!(record["iteration"], index + 1);
        for key in ["train_accuracy", "test_accuracy", "mean_batch_loss", "update_seconds", "test_majority_fraction"] {
            assert!(record[key].is_number(), "epoch {} field {key}: {record}", index + 1);
        }
        for key in ["objective", "step_total", "step_w", "seconds_w", "largest_block_increase"] {
            assert!(record[key].is_null(), "epoch {} has the BCD-only field {key}: {record}", index + 1);
        }
    }
    assert_eq!(lines[3]["status"], "completed");
    assert_eq!(lines[3]["last"]["test_accuracy"], lines[2]["test_accuracy"]);

    // The same network trained by BCD, overlaid with the SGD run in one figure.
    let bcd_path = dir.join("bcd.jsonl");
    let output = small_train()
        .args(["--epochs", "2", "--seed", "3", "--label", "BCD test", "--quiet", "--record"])
        .arg(&bcd_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "BCD training failed:\n{}", stderr(&output));
    let figure = dir.join("overlay.svg");
    let output = bcdnn().arg("plot").arg(&bcd_path).arg(&sgd_path).arg("-o").arg(&figure).output().unwrap();
    assert!(output.status.success(), "plot failed:\n{}", stderr(&output));
    let svg = fs::read_to_string(&figure).unwrap();
    assert!(svg.contains("SGD test"), "the SGD run is in the legend");
    assert!(svg.contains("BCD test"), "the BCD run is in the legend");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn experiment_writes_records_and_figures() {
    let dir = temp_dir("experiment");
    let out = dir.join("results");
    let run = || {
        let mut command = bcdnn();
        command.args(["experiment", "bcd-vs-sgd", "--iterations", "2", "--samples", "300", "--test-samples", "100"]);
        command.args(["--epochs", "2", "--learning-rates", "0.01,0.05", "--batch-size", "64", "--quiet", "--out"]);
        command.arg(&out);
        command.arg("--cache-dir").arg(cache_dir());
        command.output().unwrap()
    };
    let output = run();
    assert!(output.status.success(), "experiment failed:\n{}", stderr(&output));
    assert_eq!(
        files_in(&out),
        ["bcd-vs-sgd.png", "bcd-vs-sgd.svg", "bcd.jsonl", "sgd-lr0.01.jsonl", "sgd-lr0.05.jsonl"],
        "records and figures, and no temporary files"
    );

    let bcd = read_record(&out.join("bcd.jsonl"));
    assert_eq!(bcd[0]["algorithm"], "bcd");
    assert_eq!(
        bcd[0]["config"]["widths"],
        serde_json::json!([784, 600, 600, 600, 600, 600, 600, 600, 600, 600, 600, 10])
    );
    assert_eq!(bcd[0]["train_samples"], 300);
    assert_eq!(bcd.len(), 4, "run, 2 iterations, summary");
    for rate in ["0.01", "0.05"] {
        let sgd = read_record(&out.join(format!("sgd-lr{rate}.jsonl")));
        assert_eq!(sgd[0]["algorithm"], "sgd");
        assert_eq!(sgd[0]["config"]["learning_rate"].to_string(), rate);
        assert_eq!(sgd[0]["config"]["widths"], bcd[0]["config"]["widths"]);
        assert_eq!(sgd[0]["config"]["seed"], bcd[0]["config"]["seed"]);
        assert_eq!(sgd.len(), 4, "run, 2 epochs, summary");
    }
    let svg = fs::read_to_string(out.join("bcd-vs-sgd.svg")).unwrap();
    assert!(svg.contains("BCD"), "legend names the BCD run");
    assert!(svg.contains("SGD lr 0.05"), "legend names the SGD run");
    let png = fs::read(out.join("bcd-vs-sgd.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the PNG figure has the PNG signature");
    assert!(stdout(&output).contains("test accuracy by iteration"), "{}", stdout(&output));

    let again = run();
    assert_eq!(again.status.code(), Some(1), "a second run into the same directory must not replace the records");
    assert!(stderr(&again).contains("already exists; pass --overwrite"), "{}", stderr(&again));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_options_reach_record() {
    let dir = temp_dir("model");
    let record = dir.join("run.jsonl");
    let output = small_train()
        .args(["--hidden", "32x3", "--epochs", "2", "--activation", "relu;2=tanh", "--loss", "hinge"])
        .args(["--skip", "2-3", "--weight-reg", "l2:1e-3", "--activation-reg", "l1:1e-4", "--order", "forward"])
        .arg("--record")
        .arg(&record)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = read_record(&record);
    let config = &lines[0]["config"];
    let text = config.to_string();
    for expected in ["\"tanh\"", "\"hinge\"", "\"forward\"", "\"l2\"", "\"l1\""] {
        assert!(text.contains(expected), "{expected} missing from the recorded config {text}");
    }
    assert_eq!(config["skips"], serde_json::json!([false, true, true]), "{text}");
    let iterations: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "iteration").collect();
    assert_eq!(iterations.len(), 2, "{lines:?}");
    for line in iterations {
        let increase = line["largest_block_increase"].as_f64().unwrap();
        let objective = line["objective"].as_f64().unwrap_or(1.0);
        assert!(increase <= 1e-4 * objective.abs().max(1.0), "block increase {increase} in {line}");
    }
}

#[test]
fn two_splitting_runs() {
    let output = small_train()
        .args(["--epochs", "2", "--splitting", "two", "--inner-iterations", "3", "--activation", "sigmoid", "--quiet"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("completed 2 of 2 iterations"), "{}", stdout(&output));
}

#[test]
fn model_option_errors_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["--activation", "swish"], "unknown activation 'swish'"),
        (&["--loss", "l1"], "unknown loss 'l1'"),
        (&["--skip", "1"], "skip connection but its width 64 differs from its input width 784"),
        (&["--weight-reg", "l2:-1"], "lambda of the weight regulariser of layer 1 is -1"),
        (&["--weight-reg", "box:2,1"], "box bounds of the weight regulariser of layer 1 are [2, 1]"),
        (&["--activation-reg", "box:1,0"], "box bounds of the activation regulariser of layer 1"),
        (&["--loss", "cross-entropy", "--gamma", "0.1", "--alpha", "0.1"], "above 0.2"),
        (&["--order", "V1,W1"], "leaves out block"),
        (&["--inner-iterations", "0"], "inner iterations are 0"),
    ];
    for (args, expected) in cases {
        let output = small_train().args(["--epochs", "1"]).args(*args).output().unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let text = stderr(&output);
        assert!(text.contains(expected), "{args:?}: expected '{expected}' in:\n{text}");
    }
}

#[test]
fn config_file_and_overrides() {
    let dir = temp_dir("config");
    let file = dir.join("run.toml");
    let record = dir.join("run.jsonl");
    fs::write(&file, "hidden = \"24x2\"\nactivation = \"softplus\"\nepochs = 4\nquiet = true\n").unwrap();
    let output = small_train()
        .args(["--config"])
        .arg(&file)
        .args(["--epochs", "1", "--hidden", "24x2", "--record"])
        .arg(&record)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = read_record(&record);
    assert!(lines[0]["config"].to_string().contains("softplus"), "{}", lines[0]);
    let iterations = lines.iter().filter(|l| l["kind"] == "iteration").count();
    assert_eq!(iterations, 1, "--epochs 1 on the command line overrides epochs = 4 in the file");

    fs::write(&file, "hidden = \"24\"\nswish = true\n").unwrap();
    let output = small_train().arg("--config").arg(&file).output().unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("run.toml: unknown key 'swish'"), "{}", stderr(&output));

    fs::write(&file, "epochs = 3.5\n").unwrap();
    let output = small_train().arg("--config").arg(&file).output().unwrap();
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(text.contains("'3.5'"), "the error names the value:\n{text}");
    assert!(text.contains("run.toml"), "the error names the file:\n{text}");

    fs::write(&file, "[layer]\ngamma = 2\n").unwrap();
    let output = small_train().arg("--config").arg(&file).output().unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("key 'layer'"), "{}", stderr(&output));
}
