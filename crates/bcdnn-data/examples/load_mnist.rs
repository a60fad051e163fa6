//! Loads MNIST twice and prints the time of each load. The first load builds the stores unless
//! the cache already contains current ones, and the second only opens them.
//!
//! Usage: `cargo run --release -p bcdnn-data --example load_mnist [CACHE_DIR] [--no-mmap]`.
//! Without CACHE_DIR it uses `default_cache_dir()`. The source is always `default_source_dir()`.

use std::time::Instant;

use bcdnn_data::{default_cache_dir, default_source_dir, load_mnist, DataError, MnistOptions};

fn main() -> Result<(), DataError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let use_mmap = !args.iter().any(|a| a == "--no-mmap");
    let cache_dir = args.iter().find(|a| !a.starts_with("--")).map(Into::into).unwrap_or_else(default_cache_dir);
    let opts = MnistOptions { source_dir: default_source_dir(), cache_dir, use_mmap };
    println!("source {}, cache {}, use_mmap = {use_mmap}", opts.source_dir.display(), opts.cache_dir.display());

    for attempt in ["first load", "second load"] {
        let start = Instant::now();
        let mnist = load_mnist(&opts)?;
        let elapsed = start.elapsed();
        println!(
            "{attempt}: {:.3} s, train {} x {}, test {} x {}",
            elapsed.as_secs_f64(),
            mnist.train.n_features(),
            mnist.train.n_samples(),
            mnist.test.n_features(),
            mnist.test.n_samples()
        );
    }
    Ok(())
}
