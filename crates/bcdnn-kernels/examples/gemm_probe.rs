//! Quick probe: faer f32 GEMM rate on the trainer's shapes, whole-matrix parallel vs tiled.
use bcdnn_kernels::matrix::{columns_view, slice_view_mut};
use bcdnn_kernels::products::matmul;
use faer::Par;
use rayon::prelude::*;
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args().nth(1).map_or(2, |s| s.parse().unwrap());
    let (m, k, n) = (1500usize, 1500usize, 60000usize);
    let w: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3).collect();
    let x: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1000) as f32 * 1e-3).collect();
    let mut out = vec![0f32; m * n];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let flops = 2.0 * (m * k * n) as f64;
    pool.install(|| {
        for _ in 0..2 {
            let t = Instant::now();
            matmul(
                slice_view_mut(&mut out, m),
                false,
                faer::MatRef::from_column_major_slice(&w, m, k),
                columns_view(&x, k, 0..n),
                1.0f32,
                Par::rayon(threads),
            );
            let s = t.elapsed().as_secs_f64();
            println!("whole  {s:.3} s  {:.1} GFLOP/s", flops / s / 1e9);
        }
        for tile in [128usize, 256, 512, 1024] {
            let t = Instant::now();
            out.par_chunks_mut(m * tile).enumerate().for_each(|(i, o)| {
                let cols = o.len() / m;
                matmul(
                    slice_view_mut(o, m),
                    false,
                    faer::MatRef::from_column_major_slice(&w, m, k),
                    columns_view(&x, k, i * tile..i * tile + cols),
                    1.0f32,
                    Par::Seq,
                );
            });
            let s = t.elapsed().as_secs_f64();
            println!("tile {tile:4} {s:.3} s  {:.1} GFLOP/s", flops / s / 1e9);
        }
    });
}
