//! Criterion benchmarks of the bcdnn kernels and trainer live in `benches/`; this library is empty.
