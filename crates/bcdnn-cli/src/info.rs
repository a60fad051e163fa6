//! `bcdnn info`: version, machine and data locations.

use std::path::Path;

use crate::system::SystemInfo;

/// File names of the MNIST distribution that `bcdnn_data::load_mnist` reads, each either
/// gzip-compressed (`.gz`) or raw.
const MNIST_FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Store files that `bcdnn_data::load_mnist` builds in the cache directory.
const STORE_FILES: [&str; 2] = ["mnist-train.bcdnn", "mnist-test.bcdnn"];

pub fn print_info(system: &SystemInfo) {
    println!("bcdnn {}", env!("CARGO_PKG_VERSION"));
    println!("cpu: {}", system.cpu_model.as_deref().unwrap_or("unknown (no model name in /proc/cpuinfo)"));
    println!("logical cores: {}", system.logical_cores);
    println!("simd level: {}", system.simd_level_text());
    println!("os: {} {}", system.os, system.arch);

    let data_dir = bcdnn_data::default_source_dir();
    let found = MNIST_FILES.iter().filter(|name| mnist_file_exists(&data_dir, name)).count();
    println!("data directory: {} ({found} of {} MNIST files found)", display_path(&data_dir), MNIST_FILES.len());

    let cache_dir = bcdnn_data::default_cache_dir();
    let stores = STORE_FILES.iter().filter(|name| cache_dir.join(name).is_file()).count();
    println!(
        "cache directory: {} ({stores} of {} converted stores present)",
        display_path(&cache_dir),
        STORE_FILES.len()
    );
    println!("(set BCDNN_DATA_DIR and BCDNN_CACHE_DIR, or pass --data-dir and --cache-dir to train, to change them)");
}

fn mnist_file_exists(dir: &Path, name: &str) -> bool {
    dir.join(format!("{name}.gz")).is_file() || dir.join(name).is_file()
}

/// Returns the path made absolute and free of `..` where it exists, else as given.
fn display_path(path: &Path) -> String {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}
