//! An iteration allocates nothing once the first one has run.

mod common;

use bcdnn::{Activation, ActivationRegulariser, Algorithm, Config, Loss, Trainer, WeightRegulariser};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts every allocation of the process.
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator, whose contract the caller meets.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` was returned by `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The counter is global, so the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn steps_after_the_first_allocate_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Large enough that the products run in parallel and the weight solves use the
    // multi-threaded paths, small enough for a test.
    let data = common::random_dataset(2000, 300, 10, 5);
    for (hidden, threads) in [(vec![400, 400, 120], 2), (vec![64, 32], 1)] {
        let config = Config::builder(300, &hidden, 10).threads(threads).tile_width(128).build().unwrap();
        let mut trainer: Trainer<f32> = Trainer::new(config, data.view()).unwrap();
        trainer.step().unwrap();
        trainer.step().unwrap();
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..3 {
            trainer.step().unwrap();
        }
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        assert_eq!(
            after - before,
            0,
            "hidden {hidden:?}, {threads} threads: 3 steps allocated {} times",
            after - before
        );
    }
}

#[test]
fn every_model_family_steps_without_allocating() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Backward order with the in-pass objective; the FISTA weight and activation blocks; the
    // prox-linear loss; skips; and two-splitting, which evaluates the objective explicitly.
    let data = common::random_dataset(600, 40, 10, 6);
    let configs = [
        Config::builder(40, &[48, 48, 24], 10)
            .activation(Activation::Tanh)
            .loss(Loss::CrossEntropy)
            .skip(2)
            .weight_regulariser(WeightRegulariser::L1 { lambda: 1e-3 })
            .activation_regulariser(ActivationRegulariser::Box { lower: -1.0, upper: 1.0 }),
        Config::builder(40, &[48, 24], 10)
            .activation(Activation::Softplus)
            .loss(Loss::Hinge)
            .weight_regulariser(WeightRegulariser::L2 { lambda: 1e-3 })
            .activation_regulariser(ActivationRegulariser::L1 { lambda: 1e-3 }),
        Config::builder(40, &[48, 48], 10).activation(Activation::Sigmoid).algorithm(Algorithm::TwoSplitting).skip(2),
    ];
    for (index, builder) in configs.into_iter().enumerate() {
        let config = builder.threads(2).tile_width(64).build().unwrap();
        let mut trainer: Trainer<f32> = Trainer::new(config, data.view()).unwrap();
        trainer.step().unwrap();
        trainer.step().unwrap();
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..2 {
            trainer.step().unwrap();
        }
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        assert_eq!(after - before, 0, "configuration {index}: 2 steps allocated {} times", after - before);
    }
}
