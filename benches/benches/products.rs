//! `f32` matrix products: a naive loop beside faer, the product over all sample columns of a
//! 1500-wide layer as one faer call and as the trainer's tiles, and the Gram matrix `V V^T`.
//!
//! Every matrix is column-major with entries drawn uniformly from `[-1, 1)`. Ids read
//! `group/variant/shape/threads`, where the shape `m x k x n` is that of
//! `C (m x n) = A (m x k) B (k x n)` and the Gram shape `m x n` is that of `V`. Work with more
//! than one thread runs on a rayon pool of exactly that many threads.
//!
//! Throughput is in flop: criterion prints elements/s, and one element is one flop. Each
//! variant counts the flops it performs, `2 m k n` for a product and `m^2 n` (half the full
//! product) for the lower triangle of a Gram matrix, so for one shape a higher rate does not
//! always mean a shorter time.
//!
//! Run with `cargo bench -p bcdnn-benches --bench products`.

use std::hint::black_box;
use std::time::Duration;

use bcdnn_kernels::matrix::{columns_view, slice_view, slice_view_mut};
use bcdnn_kernels::products::{column_chunks_scratch_len, gram_lower, matmul, reduce_column_chunks};
use bcdnn_kernels::tiling::{for_each_tile_mut, Partial, ThreadScratch, TileGrid, DEFAULT_TILE_WIDTH, PARTIAL_LEN};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use faer::{MatMut, Par};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Width of the hidden layers of the largest network the trainer runs.
const LAYER_WIDTH: usize = 1500;

/// Sample columns of the whole-matrix products.
const SAMPLES: usize = 8192;

/// Thread count of the parallel variants.
const THREADS: usize = 2;

/// The operands and output of `C (m x n) = A (m x k) B (k x n)`.
struct Product {
    m: usize,
    k: usize,
    n: usize,
    lhs: Vec<f32>,
    rhs: Vec<f32>,
    out: Vec<f32>,
}

impl Product {
    fn new(m: usize, k: usize, n: usize) -> Self {
        Self { m, k, n, lhs: random_matrix(m, k, 1), rhs: random_matrix(k, n, 2), out: vec![0.0; m * n] }
    }

    fn shape(&self) -> String {
        format!("{}x{}x{}", self.m, self.k, self.n)
    }

    fn flops(&self) -> u64 {
        2 * (self.m * self.k * self.n) as u64
    }

    /// `C = A B` through faer.
    fn faer(&mut self, par: Par) {
        let lhs = slice_view(&self.lhs, self.m);
        let rhs = slice_view(&self.rhs, self.k);
        matmul(slice_view_mut(&mut self.out, self.m), false, lhs, rhs, 1.0, par);
    }
}

/// Returns a `rows x cols` column-major matrix with entries uniform in `[-1, 1)`.
fn random_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn thread_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("failed to start the benchmark thread pool")
}

/// Computes `C = A B` with three nested loops in j-k-i order and no blocking for the cache.
///
/// The innermost loop runs down one column of `A` and of `C`, so it reads memory contiguously
/// and the compiler may vectorise it, but each column of `C` passes through the whole of `A`.
fn naive_matmul(out: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize) {
    out.fill(0.0);
    for (j, out_col) in out.chunks_exact_mut(m).enumerate() {
        for p in 0..k {
            let rhs_pj = rhs[j * k + p];
            let lhs_col = &lhs[p * m..(p + 1) * m];
            for (out_ij, &lhs_ip) in out_col.iter_mut().zip(lhs_col) {
                *out_ij += lhs_ip * rhs_pj;
            }
        }
    }
}

/// Computes `C = A B` as the trainer does: the columns of `B` and `C` are split into tiles of
/// `DEFAULT_TILE_WIDTH`, the tiles run in parallel on the current rayon pool, and each tile's
/// faer product runs sequentially.
fn tiled_matmul(product: &mut Product, partials: &mut [Partial], scratch: &ThreadScratch<f32>) {
    let (m, k) = (product.m, product.k);
    let grid = TileGrid::new(product.n, DEFAULT_TILE_WIDTH);
    let lhs = slice_view(&product.lhs, m);
    let rhs = product.rhs.as_slice();
    for_each_tile_mut(grid, &mut product.out, m, partials, scratch, |columns, tile, _| {
        matmul(slice_view_mut(tile, m), false, lhs, columns_view(rhs, k, columns), 1.0, Par::Seq);
        [0.0; PARTIAL_LEN]
    });
}

/// Times the naive loop against faer on shapes that fit in cache, on one thread.
fn bench_small(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_small");
    for size in [128, 256] {
        let mut product = Product::new(size, size, size);
        let id = format!("{}/threads1", product.shape());
        group.throughput(Throughput::Elements(product.flops()));

        group.bench_function(BenchmarkId::new("naive", &id), |b| {
            b.iter(|| {
                let Product { m, k, lhs, rhs, out, .. } = &mut product;
                naive_matmul(out, black_box(lhs), black_box(rhs), *m, *k);
                black_box(out);
            })
        });
        group.bench_function(BenchmarkId::new("faer", &id), |b| {
            b.iter(|| {
                product.faer(Par::Seq);
                black_box(&mut product.out);
            })
        });
    }
    group.finish();
}

/// Times one tile of the trainer's largest product, `W V` for a `1500 x 1500` weight matrix and
/// 256 sample columns, which is the unit of work one thread takes.
fn bench_tile(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_tile");
    let mut product = Product::new(LAYER_WIDTH, LAYER_WIDTH, DEFAULT_TILE_WIDTH);
    group.throughput(Throughput::Elements(product.flops()));
    group.bench_function(BenchmarkId::new("faer", format!("{}/threads1", product.shape())), |b| {
        b.iter(|| {
            product.faer(Par::Seq);
            black_box(&mut product.out);
        })
    });
    group.finish();
}

/// Times `W V` over all 8192 sample columns: one sequential faer call, one faer call with faer's own
/// threading, and the trainer's tiles with sequential faer inside each.
fn bench_layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_layer");
    // Each iteration is billions of flops, so every sample runs the same number of iterations.
    group.sampling_mode(SamplingMode::Flat);
    let mut product = Product::new(LAYER_WIDTH, LAYER_WIDTH, SAMPLES);
    let shape = product.shape();
    group.throughput(Throughput::Elements(product.flops()));

    group.bench_function(BenchmarkId::new("faer_seq", format!("{shape}/threads1")), |b| {
        b.iter(|| {
            product.faer(Par::Seq);
            black_box(&mut product.out);
        })
    });

    let pool = thread_pool(THREADS);
    let id = format!("{shape}/threads{THREADS}");
    group.bench_function(BenchmarkId::new("faer_rayon", &id), |b| {
        pool.install(|| {
            b.iter(|| {
                product.faer(Par::rayon(THREADS));
                black_box(&mut product.out);
            })
        })
    });

    let mut partials = vec![[0.0; PARTIAL_LEN]; SAMPLES.div_ceil(DEFAULT_TILE_WIDTH)];
    let scratch = ThreadScratch::new(THREADS, 0);
    group.bench_function(BenchmarkId::new("tiled", &id), |b| {
        pool.install(|| {
            b.iter(|| {
                tiled_matmul(&mut product, &mut partials, &scratch);
                black_box(&mut product.out);
            })
        })
    });
    group.finish();
}

/// Times the Gram matrix `G = V V^T` of a `1500 x 8192` activation matrix in three ways: the
/// full faer product, the lower triangle through faer, and the lower triangle as the trainer
/// forms it. The trainer gives each thread one column chunk, computes each chunk's triangle
/// sequentially and adds the partial sums in chunk order.
fn bench_gram(c: &mut Criterion) {
    let mut group = c.benchmark_group("gram");
    group.sampling_mode(SamplingMode::Flat);
    let (m, n) = (LAYER_WIDTH, SAMPLES);
    let v = random_matrix(m, n, 3);
    let v = slice_view(&v, m);
    let mut gram = vec![0.0f32; m * m];
    let shape = format!("{m}x{n}");
    let full_flops = 2 * (m * m * n) as u64;
    let lower_flops = (m * m * n) as u64;
    let pool = thread_pool(THREADS);

    for threads in [1, THREADS] {
        let par = if threads == 1 { Par::Seq } else { Par::rayon(threads) };
        let id = format!("{shape}/threads{threads}");

        group.throughput(Throughput::Elements(full_flops));
        group.bench_function(BenchmarkId::new("full", &id), |b| {
            pool.install(|| {
                b.iter(|| {
                    matmul(MatMut::from_column_major_slice_mut(&mut gram, m, m), false, v, v.transpose(), 1.0, par);
                    black_box(&mut gram);
                })
            })
        });

        group.throughput(Throughput::Elements(lower_flops));
        group.bench_function(BenchmarkId::new("lower", &id), |b| {
            pool.install(|| {
                b.iter(|| {
                    gram_lower(MatMut::from_column_major_slice_mut(&mut gram, m, m), v, par);
                    black_box(&mut gram);
                })
            })
        });
    }

    let mut chunk_scratch = vec![0.0f32; column_chunks_scratch_len(m, m, THREADS)];
    group.throughput(Throughput::Elements(lower_flops));
    group.bench_function(BenchmarkId::new("lower_chunks", format!("{shape}/threads{THREADS}")), |b| {
        pool.install(|| {
            b.iter(|| {
                let out = MatMut::from_column_major_slice_mut(&mut gram, m, m);
                reduce_column_chunks(out, n, THREADS, &mut chunk_scratch, |columns, partial| {
                    gram_lower(partial, v.subcols(columns.start, columns.len()), Par::Seq);
                });
                black_box(&mut gram);
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_small, bench_tile, bench_layer, bench_gram
}
criterion_main!(benches);
