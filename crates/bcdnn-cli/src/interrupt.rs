//! SIGINT and SIGTERM handling: the first signal requests that the training loop stop after the
//! iteration in progress, a second one exits at once with status 130.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Exit status of a run stopped by a signal (128 + SIGINT), as shells report it.
pub const INTERRUPTED_EXIT_CODE: u8 = 130;

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Temporary record file of the run in progress, named in the message of an immediate exit.
static RECORD_TEMP_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Installs the handler once per process; later calls do nothing. On failure the default
/// action (exit at once) stays in place and a warning is logged.
pub fn install_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        if let Err(error) = ctrlc::set_handler(handle_signal) {
            log::warn!("failed to install the Ctrl-C handler ({error}); Ctrl-C will end the run without a summary");
        }
    });
}

/// Stores the temporary record file's path, which an immediate exit prints; a later call
/// (the next run of an experiment) replaces it.
pub fn set_record_temp_path(path: &Path) {
    let mut stored = RECORD_TEMP_PATH.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *stored = Some(path.to_path_buf());
}

/// Returns true once SIGINT or SIGTERM has arrived.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Runs on the handler thread of the `ctrlc` crate, not in signal context, so printing and
/// exiting are safe here.
fn handle_signal() {
    if STOP_REQUESTED.swap(true, Ordering::SeqCst) {
        let stored = RECORD_TEMP_PATH.lock().map(|path| path.clone()).unwrap_or(None);
        match stored {
            Some(path) => {
                eprintln!("\nsecond interrupt: exiting now; the record lines so far are in {}", path.display())
            }
            None => eprintln!("\nsecond interrupt: exiting now"),
        }
        std::process::exit(i32::from(INTERRUPTED_EXIT_CODE));
    }
    eprintln!("\ninterrupt: stopping after the current iteration; press Ctrl-C again to exit now");
}
