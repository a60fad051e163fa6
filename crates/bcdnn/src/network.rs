//! The network's weights and biases, their initialisation, and the plain forward pass.

use bcdnn_kernels::elementwise::{argmax, scalar};
use bcdnn_kernels::matrix::{columns_view, slice_view_mut};
use bcdnn_kernels::model::Activation;
use bcdnn_kernels::products::matmul;
use bcdnn_kernels::tiling::{for_each_tile, partial, sum_partials, Partial, ThreadScratch, TileGrid};
use bcdnn_kernels::{ColMatrix, Real};
use faer::Par;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Weights `W_i` (`d_i x d_{i-1}`, column-major) and biases `b_i` of a fully connected
/// network with a linear output layer, its hidden activations, and its identity skip
/// connections: `V_i = sigma_i(W_i V_{i-1} + b_i) + S_i V_{i-1}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Network<T> {
    widths: Vec<usize>,
    pub(crate) weights: Vec<ColMatrix<T>>,
    pub(crate) biases: Vec<Vec<T>>,
    activations: Vec<Activation>,
    skips: Vec<bool>,
}

impl<T: Real> Network<T> {
    /// Draws `W_i ~ weight_scale N(0, 1)` entrywise and sets every bias entry to `bias`,
    /// from a ChaCha8 generator seeded with `seed`, so a seed gives the same network on
    /// every platform. Hidden layers are ReLU without skips; see
    /// [`Network::with_architecture`].
    pub fn init(widths: &[usize], seed: u64, weight_scale: f64, bias: f64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut weights = Vec::with_capacity(widths.len() - 1);
        let mut biases = Vec::with_capacity(widths.len() - 1);
        for pair in widths.windows(2) {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let data = (0..fan_in * fan_out)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    T::from_f64(weight_scale * z)
                })
                .collect();
            weights.push(ColMatrix::from_vec(data, fan_out, fan_in));
            biases.push(vec![T::from_f64(bias); fan_out]);
        }
        let hidden = widths.len().saturating_sub(2);
        Self {
            widths: widths.to_vec(),
            weights,
            biases,
            activations: vec![Activation::Relu; hidden],
            skips: vec![false; hidden],
        }
    }

    /// Sets the hidden activations and skip connections (one entry per hidden layer).
    ///
    /// # Panics
    /// If either slice's length is not the number of hidden layers, or a skip joins layers
    /// of different widths.
    pub fn with_architecture(mut self, activations: &[Activation], skips: &[bool]) -> Self {
        let hidden = self.depth() - 1;
        assert_eq!(activations.len(), hidden, "one activation per hidden layer");
        assert_eq!(skips.len(), hidden, "one skip flag per hidden layer");
        for (l, &skip) in skips.iter().enumerate() {
            assert!(!skip || self.widths[l] == self.widths[l + 1], "skip on layer {} joins different widths", l + 1);
        }
        self.activations = activations.to_vec();
        self.skips = skips.to_vec();
        self
    }

    /// Activation of layer `layer` (0-based); `Linear` for the output layer.
    pub fn activation(&self, layer: usize) -> Activation {
        self.activations.get(layer).copied().unwrap_or(Activation::Linear)
    }

    /// Whether layer `layer` (0-based) has an identity skip connection.
    pub fn has_skip(&self, layer: usize) -> bool {
        self.skips.get(layer).copied().unwrap_or(false)
    }

    /// Widths `d_0, ..., d_N`.
    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    /// Number of weight layers `N`.
    pub fn depth(&self) -> usize {
        self.weights.len()
    }

    /// Weights of layer `layer` (0-based: `0` is the first hidden layer), `d_out x d_in`.
    pub fn weights(&self, layer: usize) -> &ColMatrix<T> {
        &self.weights[layer]
    }

    /// Bias of layer `layer` (0-based).
    pub fn bias(&self, layer: usize) -> &[T] {
        &self.biases[layer]
    }

    /// Mutable access to the weights and bias of one layer (0-based).
    pub fn layer_mut(&mut self, layer: usize) -> (&mut ColMatrix<T>, &mut Vec<T>) {
        (&mut self.weights[layer], &mut self.biases[layer])
    }

    /// Largest width, the row count a forward-pass scratch buffer needs.
    pub fn max_width(&self) -> usize {
        self.widths.iter().copied().max().unwrap_or(0)
    }
}

/// Accuracy and squared loss of the plain forward pass on a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Evaluation {
    pub samples: usize,
    pub correct: usize,
    /// Fraction of samples whose largest output is the label's.
    pub accuracy: f64,
    /// `1/2 ||f(X) - Y||^2`, summed over samples.
    pub squared_loss: f64,
    /// Fraction of samples predicted as the most frequently predicted class. A value near 1
    /// flags a collapsed network that predicts one class for almost every input; balanced
    /// predictions on 10 classes give about 0.1.
    pub majority_fraction: f64,
}

/// Scratch elements one thread needs to run the forward pass on a tile of `tile_width`
/// columns: two ping-pong activations and, for types other than `f32`, a converted input.
pub fn forward_scratch_len(widths: &[usize], tile_width: usize) -> usize {
    3 * widths.iter().copied().max().unwrap_or(0) * tile_width
}

/// Forward pass of one tile of samples `columns` of the `d_0 x n` features, leaving the
/// `d_N x width` output at the start of the returned slice of `scratch`.
fn forward_tile<'s, T: Real>(
    net: &Network<T>,
    features: &[f32],
    columns: std::ops::Range<usize>,
    scratch: &'s mut [T],
) -> &'s mut [T] {
    let width = columns.end - columns.start;
    let max_rows = net.max_width();
    let (ping, rest) = scratch.split_at_mut(max_rows * width);
    let (pong, converted) = rest.split_at_mut(max_rows * width);
    let d0 = net.widths[0];

    // V_0 = X for this tile, borrowed when the trainer runs on f32.
    let input: &[T] = match T::borrow_f32(&features[columns.start * d0..columns.end * d0]) {
        Some(borrowed) => borrowed,
        None => {
            let source = &features[columns.start * d0..columns.end * d0];
            let target = &mut converted[..source.len()];
            for (t, &s) in target.iter_mut().zip(source) {
                *t = T::from_f64(s as f64);
            }
            target
        }
    };

    let mut current: &mut [T] = ping;
    let mut next: &mut [T] = pong;
    for layer in 0..net.depth() {
        let rows = net.widths[layer + 1];
        let cols = net.widths[layer];
        let out = &mut next[..rows * width];
        // A_l = W_l A_{l-1}
        let rhs = if layer == 0 {
            columns_view(input, cols, 0..width)
        } else {
            columns_view(&current[..cols * width], cols, 0..width)
        };
        matmul(slice_view_mut(out, rows), false, net.weights[layer].view(), rhs, T::one(), Par::Seq);

        // A_l = sigma(A_l + b_l 1^T) + S_l A_{l-1}, linear on the output layer.
        let bias = &net.biases[layer];
        let activation = net.activation(layer);
        for column in out.chunks_exact_mut(rows) {
            T::add_bias_activate(activation, column, bias);
        }
        if net.has_skip(layer) {
            let input = if layer == 0 { &input[..rows * width] } else { &current[..rows * width] };
            for (o, &x) in out.iter_mut().zip(input) {
                *o += x;
            }
        }
        std::mem::swap(&mut current, &mut next);
    }
    current
}

/// Runs the forward pass over all samples in tiles on the current rayon pool and counts
/// correct predictions and the squared loss. `partials` needs one slot per tile.
pub(crate) fn evaluate_tiled<T: Real>(
    net: &Network<T>,
    features: &[f32],
    labels: &[u8],
    tile_width: usize,
    scratch: &ThreadScratch<T>,
    partials: &mut [Partial],
) -> Evaluation {
    let n = labels.len();
    let classes = *net.widths.last().expect("a network has an output layer");
    let grid = TileGrid::new(n, tile_width);
    // Predictions per class. Integer counts give the same result in any summation order, and
    // one relaxed increment per sample is small against the sample's forward pass.
    let class_counts: Vec<AtomicUsize> = (0..classes).map(|_| AtomicUsize::new(0)).collect();
    for_each_tile(grid, partials, scratch, |columns, slot| {
        let start = columns.start;
        let output = forward_tile(net, features, columns.clone(), slot);
        let mut correct = 0.0;
        let mut loss = 0.0;
        for (offset, column) in output.chunks_exact(classes).take(columns.len()).enumerate() {
            let label = labels[start + offset] as usize;
            let predicted = argmax(column);
            if predicted == label {
                correct += 1.0;
            }
            class_counts[predicted].fetch_add(1, Ordering::Relaxed);
            loss += scalar::dist2_one_hot(column, label);
        }
        partial(&[correct, loss])
    });
    let total = sum_partials(partials, grid.count());
    let correct = total[0] as usize;
    let majority = class_counts.iter().map(|count| count.load(Ordering::Relaxed)).max().unwrap_or(0);
    let fraction = |count: usize| if n == 0 { 0.0 } else { count as f64 / n as f64 };
    Evaluation {
        samples: n,
        correct,
        accuracy: fraction(correct),
        squared_loss: 0.5 * total[1],
        majority_fraction: fraction(majority),
    }
}

/// Writes the predicted class of every sample into `out` (one entry per sample).
pub(crate) fn predict_tiled<T: Real>(
    net: &Network<T>,
    features: &[f32],
    out: &mut [u32],
    tile_width: usize,
    scratch: &ThreadScratch<T>,
) {
    use rayon::prelude::*;
    let classes = *net.widths.last().expect("a network has an output layer");
    let n = out.len();
    let grid = TileGrid::new(n, tile_width);
    out.par_chunks_mut(tile_width).enumerate().for_each(|(t, predictions)| {
        scratch.with_slot(|slot| {
            let output = forward_tile(net, features, grid.range(t), slot);
            for (prediction, column) in predictions.iter_mut().zip(output.chunks_exact(classes)) {
                *prediction = argmax(column) as u32;
            }
        })
    });
}
