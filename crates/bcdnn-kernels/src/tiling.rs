//! Splitting the sample columns of a `d x n` matrix into tiles for rayon.
//!
//! Each tile is processed by one thread, with faer products inside it running sequentially,
//! so parallelism comes from the tiles and scales with the number of cores. Reductions write
//! one partial sum per tile and combine the partials in tile order, never in the order the
//! threads finish, so results are bitwise reproducible for a fixed tile width.

use std::ops::Range;
use std::sync::Mutex;

/// Default number of sample columns per tile. A tile of 256 columns of a 1500-row `f32`
/// matrix is 1.5 MB, so the product for one tile and its elementwise epilogue share the L2
/// cache of a core, while the packed weight matrix is reused over 256 columns.
pub const DEFAULT_TILE_WIDTH: usize = 256;

/// The tiles of `n` columns, each `width` wide except possibly the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileGrid {
    pub columns: usize,
    pub width: usize,
}

impl TileGrid {
    pub fn new(columns: usize, width: usize) -> Self {
        assert!(width > 0, "tile width must be positive");
        Self { columns, width }
    }

    /// Number of tiles.
    pub fn count(&self) -> usize {
        self.columns.div_ceil(self.width)
    }

    /// Column range of tile `t`.
    pub fn range(&self, t: usize) -> Range<usize> {
        let start = t * self.width;
        start..(start + self.width).min(self.columns)
    }
}

/// Scratch buffers, one slot per worker thread of the pool that runs the tiles.
///
/// A slot is picked by `rayon::current_thread_index()`. Inside a pool of at most as many
/// threads as slots, no two threads share a slot, so the mutex is uncontended and only makes
/// sharing the buffers sound. Calls from outside such a pool share slot 0 and wait for it.
pub struct ThreadScratch<T> {
    slots: Vec<Mutex<Vec<T>>>,
}

impl<T: Copy + Default> ThreadScratch<T> {
    /// Allocates `threads` slots of `len` elements each.
    pub fn new(threads: usize, len: usize) -> Self {
        let slots = (0..threads.max(1)).map(|_| Mutex::new(vec![T::default(); len])).collect();
        Self { slots }
    }

    /// Elements per slot.
    pub fn slot_len(&self) -> usize {
        self.slots[0].lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Runs `f` on the calling thread's slot. `f` must not start rayon work: a stolen job that
    /// asks for the same slot would wait forever on the lock this thread holds.
    pub fn with_slot<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> R {
        let index = rayon::current_thread_index().unwrap_or(0) % self.slots.len();
        let mut slot = self.slots[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut slot)
    }

    /// Bytes held by all slots.
    pub fn size_bytes(&self) -> usize {
        self.slots.len() * self.slot_len() * std::mem::size_of::<T>()
    }
}

/// Number of quantities a tile's partial sums can carry.
pub const PARTIAL_LEN: usize = 16;

/// Per-tile partial sums of up to [`PARTIAL_LEN`] quantities.
pub type Partial = [f64; PARTIAL_LEN];

/// A [`Partial`] holding `values` first and zeros after them.
pub fn partial(values: &[f64]) -> Partial {
    let mut out = [0.0; PARTIAL_LEN];
    out[..values.len()].copy_from_slice(values);
    out
}

/// Runs `f` on every tile of `out` (a column-major matrix with `rows` rows) in parallel and
/// stores each tile's partial sums in `partials[t]`.
///
/// `f` receives the tile's column range, the tile's columns of `out` as one contiguous slice,
/// and the calling thread's scratch slot.
pub fn for_each_tile_mut<T, F>(
    grid: TileGrid,
    out: &mut [T],
    rows: usize,
    partials: &mut [Partial],
    scratch: &ThreadScratch<T>,
    f: F,
) where
    T: Copy + Default + Send,
    F: Fn(Range<usize>, &mut [T], &mut [T]) -> Partial + Sync,
{
    use rayon::prelude::*;
    debug_assert_eq!(out.len(), rows * grid.columns, "output is not {rows} x {}", grid.columns);
    let count = grid.count();
    assert!(partials.len() >= count, "{} partial slots for {count} tiles", partials.len());
    out.par_chunks_mut(rows * grid.width).zip(partials[..count].par_iter_mut()).enumerate().for_each(
        |(t, (tile, partial))| {
            *partial = scratch.with_slot(|slot| f(grid.range(t), tile, slot));
        },
    );
}

/// Runs `f` on every tile in parallel, with no output matrix, storing partial sums.
pub fn for_each_tile<T, F>(grid: TileGrid, partials: &mut [Partial], scratch: &ThreadScratch<T>, f: F)
where
    T: Copy + Default + Send,
    F: Fn(Range<usize>, &mut [T]) -> Partial + Sync,
{
    use rayon::prelude::*;
    let count = grid.count();
    assert!(partials.len() >= count, "{} partial slots for {count} tiles", partials.len());
    partials[..count].par_iter_mut().enumerate().for_each(|(t, partial)| {
        *partial = scratch.with_slot(|slot| f(grid.range(t), slot));
    });
}

/// Sums the first `count` partials in tile order.
pub fn sum_partials(partials: &[Partial], count: usize) -> Partial {
    let mut total = [0.0; PARTIAL_LEN];
    for p in &partials[..count] {
        for k in 0..PARTIAL_LEN {
            total[k] += p[k];
        }
    }
    total
}
