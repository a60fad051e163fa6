//! Progress output of `bcdnn train` on stderr: an indicatif bar when stderr is a terminal,
//! plain lines otherwise, nothing with `--quiet`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress { quiet, bar: None }
    }

    /// Prints a setup or status note.
    pub fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    /// Starts the bar for `total` iterations if stderr is a terminal.
    pub fn start(&mut self, total: usize) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(total as u64);
        let style = ProgressStyle::with_template("{bar:24.cyan/blue} {pos}/{len} [{elapsed_precise} < {eta}] {msg}")
            .expect("the progress template is valid")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message("running the first iteration");
        bar.enable_steady_tick(Duration::from_millis(500));
        self.bar = Some(bar);
    }

    /// Reports a finished iteration. With a bar, the line becomes the bar's message and, when
    /// `keep` is set, is also printed above the bar so that it stays on screen.
    pub fn iteration(&self, line: String, keep: bool) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => {
                if keep {
                    bar.println(&line);
                }
                bar.inc(1);
                bar.set_message(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
