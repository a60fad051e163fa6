//! One full BCD iteration, `Trainer::step`, on synthetic data.
//!
//! The data mimics MNIST: 784 features uniform in `[0, 1)` and labels uniform over 10 classes.
//! The trainer is built, with its forward pass and the Gram matrix of the input, before timing,
//! so each timed call is one iteration of a running trainer. Every iteration performs the same
//! operations, so later iterations cost what the first does.
//!
//! Ids read `step/widths/samples/threads`. Throughput is in flop: criterion prints elements/s,
//! and one element is one flop. The count is `bcdnn::floor::iteration_flops`, the products over
//! the sample columns. It leaves out the factorisations, solves and elementwise passes, so the
//! rate is a lower bound on the work done per second.
//!
//! Run with `cargo bench -p bcdnn-benches --bench step`.

use std::hint::black_box;
use std::time::Duration;

use bcdnn::{Config, Trainer};
use bcdnn_data::DatasetView;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FEATURES: usize = 784;
const CLASSES: usize = 10;

/// Proximal weight of every layer, the value the crate's example trains MNIST with.
const ALPHA: f64 = 5.0;

/// `(hidden widths, samples)` of each network. The 1500-wide network runs on fewer samples to
/// keep the benchmark short.
const NETWORKS: [(&[usize], usize); 2] = [(&[500, 500], 4096), (&[1500, 1500, 1500], 2048)];

const THREADS: [usize; 2] = [1, 2];

/// Column-major features and labels of `samples` synthetic samples.
fn synthetic_data(samples: usize) -> (Vec<f32>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let features = (0..FEATURES * samples).map(|_| rng.random_range(0.0..1.0)).collect();
    let labels = (0..samples).map(|_| rng.random_range(0..CLASSES as u8)).collect();
    (features, labels)
}

fn bench_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("step");
    // Each iteration is billions of flops, so every sample runs the same number of
    // iterations.
    group.sampling_mode(SamplingMode::Flat);

    for (hidden, samples) in NETWORKS {
        let (features, labels) = synthetic_data(samples);
        let data = DatasetView::new(&features, &labels, FEATURES, CLASSES).expect("synthetic data is valid");

        let mut widths = vec![FEATURES];
        widths.extend_from_slice(hidden);
        widths.push(CLASSES);
        let name = widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("-");
        group.throughput(Throughput::Elements(bcdnn::floor::iteration_flops(&widths, samples) as u64));

        for threads in THREADS {
            let config = Config::builder(FEATURES, hidden, CLASSES)
                .alpha(ALPHA)
                .seed(1)
                .threads(threads)
                .build()
                .expect("benchmark configuration is valid");
            let mut trainer: Trainer<f32> = Trainer::new(config, data).expect("trainer accepts the synthetic data");

            group.bench_function(BenchmarkId::new(&name, format!("n{samples}/threads{threads}")), |b| {
                b.iter(|| black_box(trainer.step().expect("BCD iteration failed")))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench_step
}
criterion_main!(benches);
