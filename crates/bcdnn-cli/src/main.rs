//! `bcdnn`: train fully connected networks on MNIST by three-splitting block coordinate
//! descent from the command line.
//!
//! Exit status: 0 on success, 1 on an error, 2 on invalid arguments (from clap), 130 when
//! SIGINT or SIGTERM stopped a training run.

mod args;
mod bench;
mod experiment;
mod info;
mod interrupt;
mod iterations;
mod model;
mod output;
mod plot;
mod progress;
mod record;
mod spec;
mod system;
mod train;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::system::SystemInfo;
use crate::train::Outcome;

fn main() -> ExitCode {
    let known: Vec<String> = {
        use clap::CommandFactory;
        let command = Cli::command();
        let train = command.find_subcommand("train").expect("the train command exists");
        train.get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect()
    };
    let original: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let config_file = original
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| original.get(i + 1).cloned())
        .or_else(|| original.iter().find_map(|a| a.to_str()?.strip_prefix("--config=").map(Into::into)));
    let args = match spec::expand_config_file(original, &known) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            if error.use_stderr() {
                if let Some(file) = config_file {
                    // The file's keys became options, so an error may name one the user only
                    // wrote in the file.
                    eprintln!(
                        "note: the options from {} were applied before those on the command line; the error may come from a key in that file",
                        std::path::Path::new(&file).display()
                    );
                }
            }
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let quiet = match &cli.command {
        Command::Train(args) => args.quiet,
        Command::Experiment(experiment) => experiment.quiet(),
        _ => false,
    };
    init_logger(quiet);

    let system = SystemInfo::detect();
    let result = match cli.command {
        Command::Train(args) => {
            let command_line: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
            args.resolve().and_then(|setup| train::run_train(&setup, &command_line, &system)).map(exit_code)
        }
        Command::Experiment(experiment) => experiment::run_experiment(&experiment, &system).map(exit_code),
        Command::Bench(args) => bench::run_bench(&args, &system).map(|()| ExitCode::SUCCESS),
        Command::Plot(args) => plot::run_plot(&args).map(|()| ExitCode::SUCCESS),
        Command::Info => {
            info::print_info(&system);
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Completed => ExitCode::SUCCESS,
        Outcome::Interrupted => ExitCode::from(interrupt::INTERRUPTED_EXIT_CODE),
    }
}

/// Logs to stderr at info level (warn with `--quiet`) unless `RUST_LOG` sets a filter.
fn init_logger(quiet: bool) {
    let default_filter = if quiet { "warn" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .format_timestamp(None)
        .init();
}

/// Joins an error and its causes with ": ", skipping a cause whose text the previous message
/// already contains (several library errors print their source inline and also return it from
/// `Error::source`).
pub(crate) fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !previous.is_empty() && previous.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
        previous = message;
    }
    text
}
