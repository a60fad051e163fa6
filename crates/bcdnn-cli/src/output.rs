//! Checks on the paths that commands write their output files to.

use std::path::Path;

use anyhow::{bail, Result};

/// Fails unless `path` is missing or a regular file.
///
/// Output files are written beside the target and renamed onto it, and a rename replaces a
/// device node, FIFO or symbolic link with a plain file instead of writing through it, so such
/// paths are rejected. `option` names the command-line option in the message.
pub fn ensure_regular_file_or_missing(path: &Path, option: &str) -> Result<()> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let file_type = metadata.file_type();
    if file_type.is_file() {
        return Ok(());
    }
    let kind = if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "a device, FIFO or socket"
    };
    bail!(
        "{option} path {} is {kind}, not a regular file; output is written by replacing the file at that path, \
         so give the path of a regular file or of a file that does not exist yet",
        path.display()
    )
}
