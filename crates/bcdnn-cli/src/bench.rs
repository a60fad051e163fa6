//! `bcdnn bench`: one run that measures an iteration against the machine's GEMM floor,
//! its thread scaling and its peak memory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bcdnn::floor::{iteration_flops, iteration_products, measure_gemm_floor};
use bcdnn::{Config, Trainer};
use bcdnn_data::{load_mnist, MnistOptions};
use clap::Args;
use serde::Serialize;

use crate::args::{parse_hidden, HiddenWidths, Preset};
use crate::system::SystemInfo;

/// Options of `bcdnn bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Network to measure: its widths and parameters (the iteration count is --iterations)
    #[arg(long, value_enum, value_name = "NAME", default_value_t = Preset::Paper3Layer)]
    pub preset: Preset,

    /// Hidden layer widths, overriding the preset's (same syntax as `bcdnn train --hidden`)
    #[arg(long, value_name = "WIDTHS", value_parser = parse_hidden)]
    pub hidden: Option<HiddenWidths>,

    /// Iterations timed per thread count; the first one is included
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub iterations: usize,

    /// Train on the first N samples of the MNIST training set [default: all 60000]
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,

    /// Thread counts to measure, comma-separated [default: 1 and every power of two up to the
    /// number of cores, and the number of cores]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub threads: Option<Vec<usize>>,

    /// Runs of each faer product when measuring the GEMM floor; the best one counts
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub floor_repeats: usize,

    /// Sample columns per tile [default: the library's default]
    #[arg(long, value_name = "N")]
    pub tile_width: Option<usize>,

    /// Directory with the MNIST IDX files [default: as for `bcdnn train`]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Directory for the converted dataset stores [default: as for `bcdnn train`]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Also write the results as one JSON object to FILE
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Replace the --json file if it already exists
    #[arg(long, requires = "json")]
    pub overwrite: bool,
}

/// Measurements at one thread count.
#[derive(Debug, Serialize)]
struct ThreadResult {
    threads: usize,
    /// Mean update seconds per iteration.
    update_seconds: f64,
    /// Fastest iteration's update seconds.
    best_update_seconds: f64,
    seconds_w: f64,
    seconds_u: f64,
    seconds_v: f64,
    /// Seconds faer alone needs for the iteration's products on whole matrices.
    floor_seconds: f64,
    /// `update_seconds / floor_seconds`.
    ratio_to_floor: f64,
    /// Flops of the iteration's products divided by `update_seconds`.
    achieved_gflops: f64,
    floor_gflops: f64,
    /// Peak resident memory while the trainer lived (VmHWM after a reset), bytes.
    peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    system: SystemInfo,
    widths: Vec<usize>,
    samples: usize,
    iterations: usize,
    flops_per_iteration: f64,
    state_bytes: usize,
    workspace_bytes: usize,
    dataset_bytes: usize,
    results: Vec<ThreadResult>,
}

/// Default thread counts: 1, powers of two below the core count, and the core count.
fn default_thread_counts(cores: usize) -> Vec<usize> {
    let mut counts = vec![1];
    let mut t = 2;
    while t < cores {
        counts.push(t);
        t *= 2;
    }
    if cores > 1 {
        counts.push(cores);
    }
    counts
}

/// Resets the peak resident set size of this process so that the next `VmHWM` reading
/// covers only what follows. Linux only; returns false where unsupported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `VmHWM` of this process in bytes (Linux only).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn run_bench(args: &BenchArgs, system: &SystemInfo) -> Result<()> {
    let preset = args.preset.values();
    let hidden = match &args.hidden {
        Some(widths) => widths.0.clone(),
        None => preset.hidden.clone(),
    };
    anyhow::ensure!(args.iterations > 0, "--iterations is 0; time at least one iteration");
    anyhow::ensure!(args.floor_repeats > 0, "--floor-repeats is 0; time each product at least once");
    if let Some(&bad) = args.threads.iter().flatten().find(|&&t| t == 0) {
        anyhow::bail!("thread count {bad} in --threads is invalid; give positive counts such as 1,2");
    }
    if let Some(path) = &args.json {
        // Check the output path before minutes of measurement, not after.
        crate::output::ensure_regular_file_or_missing(path, "--json")?;
        anyhow::ensure!(
            args.overwrite || !path.exists(),
            "--json file {} already exists; pass --overwrite to replace it or choose another path",
            path.display()
        );
        let directory = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        anyhow::ensure!(
            directory.is_dir(),
            "directory {} of --json file {} does not exist; create it or choose another path",
            directory.display(),
            path.display()
        );
    }
    if args.train_limit == Some(0) {
        anyhow::bail!("--train-limit is 0; give a positive number of training samples");
    }
    let options = MnistOptions {
        source_dir: args.data_dir.clone().unwrap_or_else(bcdnn_data::default_source_dir),
        cache_dir: args.cache_dir.clone().unwrap_or_else(bcdnn_data::default_cache_dir),
        use_mmap: true,
    };
    let mnist = load_mnist(&options).context("could not load MNIST")?;
    let train = match args.train_limit {
        Some(n) => mnist.train.view().head(n),
        None => mnist.train.view(),
    };
    let samples = train.n_samples();
    // Both stores are mapped and checksummed in full when loaded, so both count as resident.
    let dataset_bytes = [&mnist.train, &mnist.test]
        .iter()
        .map(|d| std::mem::size_of_val(d.features()) + d.labels().len())
        .sum::<usize>();

    let mut widths = vec![train.n_features()];
    widths.extend(&hidden);
    widths.push(train.n_classes());
    let flops = iteration_flops(&widths, samples);
    let thread_counts = args.threads.clone().unwrap_or_else(|| default_thread_counts(system.logical_cores));

    eprintln!(
        "bench: {} on {samples} samples, {:.3e} flops per iteration, {} iterations per thread count",
        widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("-"),
        flops,
        args.iterations
    );
    let mut results = Vec::new();
    let (mut state_bytes, mut workspace_bytes) = (0, 0);
    for &threads in &thread_counts {
        // Trainer first, so the peak memory reading covers the trainer alone.
        let hwm_supported = reset_peak_rss();
        let mut builder = Config::builder(widths[0], &hidden, widths[widths.len() - 1])
            .gamma(preset.gamma)
            .rho(preset.rho)
            .alpha(preset.alpha)
            .seed(1)
            .threads(threads);
        if let Some(tile) = args.tile_width {
            builder = builder.tile_width(tile);
        }
        let config = builder.build()?;
        let mut trainer: Trainer<f32> = Trainer::new(config, train)?;
        let mut reports = Vec::new();
        for _ in 0..args.iterations {
            reports.push(trainer.step()?);
        }
        (state_bytes, workspace_bytes) = trainer.memory_bytes();
        let peak = if hwm_supported { peak_rss_bytes() } else { None };
        drop(trainer);

        // Floor: the same products through faer on whole matrices, on a pool of this size.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
        let timed =
            pool.install(|| measure_gemm_floor(&iteration_products(&widths, samples), threads, args.floor_repeats));
        let floor_seconds: f64 = timed.iter().map(|t| t.seconds).sum();

        let count = reports.len() as f64;
        let mean = |f: &dyn Fn(&bcdnn::StepReport) -> f64| reports.iter().map(f).sum::<f64>() / count;
        let update_seconds = mean(&|r| r.update_seconds);
        let result = ThreadResult {
            threads,
            update_seconds,
            best_update_seconds: reports.iter().map(|r| r.update_seconds).fold(f64::INFINITY, f64::min),
            seconds_w: mean(&|r| r.seconds_w),
            seconds_u: mean(&|r| r.seconds_u),
            seconds_v: mean(&|r| r.seconds_v),
            floor_seconds,
            ratio_to_floor: update_seconds / floor_seconds,
            achieved_gflops: flops / update_seconds / 1e9,
            floor_gflops: flops / floor_seconds / 1e9,
            peak_rss_bytes: peak,
        };
        eprintln!(
            "threads {threads:2}: update {:.3} s (W {:.3} U {:.3} V {:.3}), floor {:.3} s, ratio {:.3}, {:.1} GFLOP/s",
            result.update_seconds,
            result.seconds_w,
            result.seconds_u,
            result.seconds_v,
            result.floor_seconds,
            result.ratio_to_floor,
            result.achieved_gflops
        );
        results.push(result);
    }

    let report = BenchReport {
        system: system.clone(),
        widths,
        samples,
        iterations: args.iterations,
        flops_per_iteration: flops,
        state_bytes,
        workspace_bytes,
        dataset_bytes,
        results,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        write_file_atomically(path, text.as_bytes()).with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}

fn print_report(report: &BenchReport) {
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!(
        "CPU: {} ({} logical cores), SIMD: {}",
        report.system.cpu_model.as_deref().unwrap_or("unknown"),
        report.system.logical_cores,
        report.system.simd_level_text()
    );
    println!(
        "network {} on {} samples: {:.3e} flops per iteration",
        report.widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("-"),
        report.samples,
        report.flops_per_iteration
    );
    println!("threads  update_s  best_s    W_s     U_s     V_s   floor_s  ratio  GFLOP/s  floor_GFLOP/s  peak_MiB");
    for r in &report.results {
        println!(
            "{:7}  {:8.3}  {:6.3}  {:6.3}  {:6.3}  {:6.3}  {:7.3}  {:5.3}  {:7.1}  {:13.1}  {}",
            r.threads,
            r.update_seconds,
            r.best_update_seconds,
            r.seconds_w,
            r.seconds_u,
            r.seconds_v,
            r.floor_seconds,
            r.ratio_to_floor,
            r.achieved_gflops,
            r.floor_gflops,
            r.peak_rss_bytes.map_or("n/a".to_string(), |b| format!("{:.0}", mib(b as f64)))
        );
    }
    if let (Some(one), Some(last)) = (report.results.first(), report.results.last()) {
        if last.threads > one.threads {
            println!(
                "thread scaling {} -> {}: {:.2}x",
                one.threads,
                last.threads,
                one.update_seconds / last.update_seconds
            );
        }
    }
    let needed = report.state_bytes + report.dataset_bytes;
    println!(
        "memory: state (U, V, W) {:.0} MiB + dataset {:.0} MiB = {:.0} MiB; workspace {:.0} MiB",
        mib(report.state_bytes as f64),
        mib(report.dataset_bytes as f64),
        mib(needed as f64),
        mib(report.workspace_bytes as f64)
    );
    for r in &report.results {
        if let Some(peak) = r.peak_rss_bytes {
            println!("  {} threads: peak RSS / (state + dataset) = {:.3}", r.threads, peak as f64 / needed as f64);
        }
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it onto `path`, so a reader
/// never sees a partly written file.
fn write_file_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}
