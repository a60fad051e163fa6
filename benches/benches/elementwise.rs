//! Scalar against SIMD versions of the `f32` elementwise kernels, with a memory-bandwidth
//! baseline.
//!
//! Each kernel runs column by column, as the trainer calls it, over `d x n` column-major
//! matrices of two shapes. A `1500 x 256` tile (1.5 MB per matrix) is the default tile the
//! trainer hands to one thread (`tiling::DEFAULT_TILE_WIDTH`). A `1500 x 8192` array (49 MB per
//! matrix) is bound by memory bandwidth wherever the last-level cache is smaller than its
//! operands. The output kernels also run on `10 x 8192`, the shape of a 10-class output layer.
//! Both versions are called through function pointers, once per column. Ids read
//! `kernel/variant/shape`, and every benchmark runs on one thread.
//!
//! Throughput counts the bytes of the matrix columns read and written. The bias and shift
//! vectors of length `d` are not counted, because every column reuses them from cache.
//!
//! Run with `cargo bench -p bcdnn-benches --bench elementwise`.

use std::hint::black_box;
use std::time::Duration;

use bcdnn_kernels::elementwise::{scalar, simd, OutputVSums, USums};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Size of the `f32` entries, in bytes.
const F32_BYTES: u64 = 4;

/// Penalty weights passed to the update kernels: any positive values exercise the same code.
const RHO: f32 = 1.0;
const ALPHA: f32 = 0.5;
const GAMMA: f32 = 2.0;

/// A `rows x cols` column-major matrix shape.
#[derive(Clone, Copy)]
struct Shape {
    rows: usize,
    cols: usize,
}

impl Shape {
    fn id(self) -> String {
        format!("{}x{}", self.rows, self.cols)
    }

    fn len(self) -> usize {
        self.rows * self.cols
    }
}

const TILE: Shape = Shape { rows: 1500, cols: 256 };
const LARGE: Shape = Shape { rows: 1500, cols: 8192 };
const OUTPUT_LAYER: Shape = Shape { rows: 10, cols: 8192 };

/// The operands of one benchmark: up to three matrices of one shape, a bias vector of length
/// `rows`, and one label per column.
#[derive(Clone)]
struct Operands {
    shape: Shape,
    matrices: [Vec<f32>; 3],
    bias: Vec<f32>,
    labels: Vec<usize>,
}

/// Returns values in `[-2, 2)` from the SplitMix64 sequence started at `seed`, so that the
/// ReLU and proximal branches see both signs.
fn pseudo_random(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // The top 24 bits give a uniform value in [0, 1) that is exact in f32.
            (z >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

impl Operands {
    fn new(shape: Shape) -> Self {
        let matrices = [1, 2, 3].map(|seed| pseudo_random(seed, shape.len()));
        let bias = pseudo_random(4, shape.rows);
        let labels = (0..shape.cols).map(|j| j % shape.rows).collect();
        Self { shape, matrices, bias, labels }
    }
}

/// The signatures of the kernels, shared by their scalar and SIMD versions.
type UnaryFn = fn(&mut [f32], &[f32]);
type OutputVFn = fn(&mut [f32], &[f32], usize, f32, f32, f32) -> OutputVSums;
type UStepFn = fn(&mut [f32], &[f32], &[f32], &[f32], f32, f32, f32) -> USums;
type OutputUFn = fn(&mut [f32], &[f32], &[f32], &[f32], f32, f32) -> USums;
type ScaledFn = fn(&mut [f32], &[f32], f32);
type ShiftFn = fn(&mut [f32], &[f32], f32, &[f32]);
type AssignFn = fn(&mut [f32], &[f32]) -> f64;
type CombineFn = fn(&mut [f32], &[f32], &[f32], f32) -> f64;

/// One version of a kernel. The variant selects the column loop that matches its signature.
#[derive(Clone, Copy)]
enum Kernel {
    /// `dst = f(src)` on two matrices.
    Map(UnaryFn),
    /// `x = f(x, bias)` on one matrix and the bias vector.
    WithBias(UnaryFn),
    OutputV(OutputVFn),
    OutputU(OutputUFn),
    HiddenU(UStepFn),
    Scaled(ScaledFn),
    Shift(ShiftFn),
    Assign(AssignFn),
    Combine(CombineFn),
}

fn sum_usums(sums: USums) -> f64 {
    sums.coupling_old + sums.coupling_new + sums.link_old + sums.link_new + sums.step
}

impl Kernel {
    /// Bytes of matrix data read and written per entry.
    fn bytes_per_entry(self) -> u64 {
        let streams = match self {
            // Map and Scaled read one matrix and write another. WithBias reads and writes x.
            Kernel::Map(_) | Kernel::WithBias(_) | Kernel::Scaled(_) => 2,
            // Each reads two matrices and writes the first (v, acc or v).
            Kernel::OutputV(_) | Kernel::Shift(_) | Kernel::Assign(_) => 3,
            // Each reads three matrices and writes the first (u, u or v).
            Kernel::OutputU(_) | Kernel::HiddenU(_) | Kernel::Combine(_) => 4,
        };
        streams * F32_BYTES
    }

    /// Applies the kernel to every column and returns the sum of the returned sums.
    fn run(self, operands: &mut Operands) -> f64 {
        let rows = operands.shape.rows;
        let bias = operands.bias.as_slice();
        let [m0, m1, m2] = &mut operands.matrices;
        let pairs = m0.chunks_exact_mut(rows).zip(m1.chunks_exact(rows));
        let mut total = 0.0;
        match self {
            Kernel::Map(kernel) => pairs.for_each(|(x, y)| kernel(x, y)),
            Kernel::WithBias(kernel) => pairs.for_each(|(x, _)| kernel(x, bias)),
            Kernel::OutputV(kernel) => {
                for ((v, u), &label) in pairs.zip(&operands.labels) {
                    let sums = kernel(v, u, label, 1.0, GAMMA, ALPHA);
                    total += sums.residual_new + sums.step;
                }
            }
            Kernel::OutputU(kernel) => {
                for ((u, p), v) in pairs.zip(m2.chunks_exact(rows)) {
                    total += sum_usums(kernel(u, p, bias, v, GAMMA, RHO));
                }
            }
            Kernel::HiddenU(kernel) => {
                for ((u, p), a) in pairs.zip(m2.chunks_exact(rows)) {
                    total += sum_usums(kernel(u, p, bias, a, RHO, ALPHA, GAMMA));
                }
            }
            Kernel::Scaled(kernel) => pairs.for_each(|(x, y)| kernel(x, y, GAMMA)),
            Kernel::Shift(kernel) => pairs.for_each(|(x, y)| kernel(x, y, GAMMA, bias)),
            Kernel::Assign(kernel) => {
                for (v, x) in pairs {
                    total += kernel(v, x);
                }
            }
            Kernel::Combine(kernel) => {
                for ((v, x), y) in pairs.zip(m2.chunks_exact(rows)) {
                    total += kernel(v, x, y, 1.0 / GAMMA);
                }
            }
        }
        total
    }
}

/// A kernel with its scalar and SIMD versions and the shapes it runs on.
struct Case {
    name: &'static str,
    scalar: Kernel,
    simd: Kernel,
    shapes: &'static [Shape],
}

const HIDDEN_SHAPES: &[Shape] = &[TILE, LARGE];
const OUTPUT_SHAPES: &[Shape] = &[OUTPUT_LAYER, TILE, LARGE];

fn cases() -> Vec<Case> {
    use Kernel::*;
    vec![
        Case { name: "relu", scalar: Map(scalar::relu::<f32>), simd: Map(simd::relu), shapes: HIDDEN_SHAPES },
        Case {
            name: "add_bias_relu",
            scalar: WithBias(scalar::add_bias_relu::<f32>),
            simd: WithBias(simd::add_bias_relu),
            shapes: HIDDEN_SHAPES,
        },
        Case {
            name: "add_bias",
            scalar: WithBias(scalar::add_bias::<f32>),
            simd: WithBias(simd::add_bias),
            shapes: OUTPUT_SHAPES,
        },
        Case {
            name: "output_v_step",
            scalar: OutputV(scalar::output_v_step::<f32>),
            simd: OutputV(simd::output_v_step),
            shapes: OUTPUT_SHAPES,
        },
        Case {
            name: "output_u_step",
            scalar: OutputU(scalar::output_u_step::<f32>),
            simd: OutputU(simd::output_u_step),
            shapes: OUTPUT_SHAPES,
        },
        Case {
            name: "hidden_u_step_relu",
            scalar: HiddenU(scalar::hidden_u_step_relu::<f32>),
            simd: HiddenU(simd::hidden_u_step_relu),
            shapes: HIDDEN_SHAPES,
        },
        Case {
            name: "scaled_relu",
            scalar: Scaled(scalar::scaled_relu::<f32>),
            simd: Scaled(simd::scaled_relu),
            shapes: HIDDEN_SHAPES,
        },
        Case {
            name: "add_scaled_relu_shift",
            scalar: Shift(scalar::add_scaled_relu_shift::<f32>),
            simd: Shift(simd::add_scaled_relu_shift),
            shapes: HIDDEN_SHAPES,
        },
        Case {
            name: "assign_with_step",
            scalar: Assign(scalar::assign_with_step::<f32>),
            simd: Assign(simd::assign_with_step),
            shapes: HIDDEN_SHAPES,
        },
        Case {
            name: "combine_with_step",
            scalar: Combine(scalar::combine_with_step::<f32>),
            simd: Combine(simd::combine_with_step),
            shapes: HIDDEN_SHAPES,
        },
    ]
}

fn bench_kernels(c: &mut Criterion) {
    eprintln!("elementwise f32 SIMD level: {}", simd::simd_level());
    let templates = [OUTPUT_LAYER, TILE, LARGE].map(Operands::new);
    let template = |shape: Shape| {
        templates
            .iter()
            .find(|t| t.shape.rows == shape.rows && t.shape.cols == shape.cols)
            .expect("shape has a template")
    };

    for case in cases() {
        let mut group = c.benchmark_group(case.name);
        for &shape in case.shapes {
            for (variant, kernel) in [("scalar", case.scalar), ("simd", case.simd)] {
                group.throughput(Throughput::Bytes(kernel.bytes_per_entry() * shape.len() as u64));
                let mut operands = template(shape).clone();
                group.bench_function(BenchmarkId::new(variant, shape.id()), |b| {
                    b.iter(|| black_box(kernel.run(black_box(&mut operands))))
                });
            }
        }
        group.finish();
    }
}

/// Bytes in each buffer of the bandwidth baseline, chosen to exceed the last-level cache so
/// that the loops stream from memory.
const BANDWIDTH_BYTES: usize = 256 << 20;

/// Independent accumulators of the baseline sum, enough for the compiler to vectorise it
/// without a loop-carried dependency limiting the rate below memory bandwidth.
const SUM_LANES: usize = 32;

fn sum_lanes(data: &[f32]) -> f32 {
    let mut lanes = [0.0f32; SUM_LANES];
    let chunks = data.chunks_exact(SUM_LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn bench_bandwidth(c: &mut Criterion) {
    let len = BANDWIDTH_BYTES / F32_BYTES as usize;
    let source = pseudo_random(5, len);
    let mut destination = vec![0.0f32; len];
    let size = format!("{}MiB", BANDWIDTH_BYTES >> 20);

    let mut group = c.benchmark_group("memory_bandwidth");
    // copy: read the source, write the destination.
    group.throughput(Throughput::Bytes(2 * BANDWIDTH_BYTES as u64));
    group.bench_function(BenchmarkId::new("copy", &size), |b| {
        b.iter(|| {
            destination.copy_from_slice(black_box(&source));
            black_box(&mut destination);
        })
    });
    group.throughput(Throughput::Bytes(BANDWIDTH_BYTES as u64));
    group.bench_function(BenchmarkId::new("sum", &size), |b| b.iter(|| black_box(sum_lanes(black_box(&source)))));
    group.finish();
}

/// Benchmarks the output kernels through their tile entry points, as the trainer calls them: one call per
/// tile of `tiling::DEFAULT_TILE_WIDTH` columns. Short (10-row) columns then run as flat SIMD
/// runs over groups of columns instead of one call per column.
fn bench_output_tiles(c: &mut Criterion) {
    let shape = OUTPUT_LAYER;
    let tile_columns = bcdnn_kernels::tiling::DEFAULT_TILE_WIDTH;
    let tile_len = shape.rows * tile_columns;
    let first = pseudo_random(11, shape.len());
    let second = pseudo_random(12, shape.len());
    let third = pseudo_random(13, shape.len());
    let bias = pseudo_random(14, shape.rows);
    let labels: Vec<u8> = (0..shape.cols).map(|j| (j * 7 % shape.rows) as u8).collect();

    let mut group = c.benchmark_group("output_v_step");
    // Reads u and v, writes v.
    group.throughput(Throughput::Bytes(3 * F32_BYTES * shape.len() as u64));
    let mut v = first.clone();
    group.bench_function(BenchmarkId::new("simd_tile", shape.id()), |b| {
        b.iter(|| {
            let mut total = OutputVSums::default();
            for ((v, u), labels) in v.chunks_mut(tile_len).zip(second.chunks(tile_len)).zip(labels.chunks(tile_columns))
            {
                total.add(simd::output_v_step_tile(v, u, labels, shape.rows, 1.0, GAMMA, ALPHA));
            }
            black_box(total)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("output_u_step");
    // Reads u, p and v, writes u.
    group.throughput(Throughput::Bytes(4 * F32_BYTES * shape.len() as u64));
    let mut u = first;
    group.bench_function(BenchmarkId::new("simd_tile", shape.id()), |b| {
        b.iter(|| {
            let mut total = USums::default();
            for ((u, p), v) in u.chunks_mut(tile_len).zip(second.chunks(tile_len)).zip(third.chunks(tile_len)) {
                total.add(simd::output_u_step_tile(u, p, &bias, v, GAMMA, RHO));
            }
            black_box(total)
        })
    });
    group.finish();
}

/// Benchmarks the hidden pre-activation update of every activation through
/// `ActivationKernels::hidden_u_step` for `f32`, on the `1500 x 256` tile. The targets `a` lie
/// in `[-2, 2)`, so sigmoid and softplus lanes with `a` outside the range of sigma, where `f`
/// may be non-convex, run the scalar fallback.
fn bench_activations(c: &mut Criterion) {
    use bcdnn_kernels::activation::ActivationKernels;
    use bcdnn_kernels::model::Activation;

    let shape = TILE;
    let template = Operands::new(shape);
    let mut group = c.benchmark_group("hidden_u_step");
    // Reads u, p and a, writes u.
    group.throughput(Throughput::Bytes(4 * F32_BYTES * shape.len() as u64));
    for act in [
        Activation::Relu,
        Activation::LeakyRelu { slope: 0.1 },
        Activation::Linear,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Softplus,
    ] {
        let mut operands = template.clone();
        group.bench_function(BenchmarkId::new(act.name(), shape.id()), |b| {
            b.iter(|| {
                let rows = operands.shape.rows;
                let [u, p, a] = &mut operands.matrices;
                let mut total = USums::default();
                for ((u, p), a) in u.chunks_exact_mut(rows).zip(p.chunks_exact(rows)).zip(a.chunks_exact(rows)) {
                    total.add(f32::hidden_u_step(act, u, p, &operands.bias, a, RHO, ALPHA, GAMMA));
                }
                black_box(total)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_bandwidth, bench_kernels, bench_output_tiles, bench_activations
}
criterion_main!(benches);
