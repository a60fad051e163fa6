//! The three-splitting objective `Lbar` and its terms.

use crate::config::LayerParams;
use crate::network::Network;
use bcdnn_kernels::elementwise::scalar;
use bcdnn_kernels::matrix::{columns_view, slice_view_mut};
use bcdnn_kernels::products::matmul;
use bcdnn_kernels::tiling::{for_each_tile, sum_partials, Partial, ThreadScratch, TileGrid, PARTIAL_LEN};
use bcdnn_kernels::{ColMatrix, Real};
use faer::Par;
use serde::Serialize;

/// The terms of
/// `Lbar = 1/2 ||V_N - Y||^2 + sum_{i<N} gamma_i/2 ||V_i - sigma(U_i)||^2 + gamma_N/2 ||V_N - U_N||^2
///       + sum_i rho_i/2 ||U_i - W_i V_{i-1} - b_i 1^T||^2`
/// for the squared loss summed over samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ObjectiveTerms {
    /// `1/2 ||V_N - Y||^2`.
    pub loss: f64,
    /// `sum_i gamma_i/2 ||V_i - sigma_i(U_i)||^2`, the output layer included (`sigma_N = Id`).
    pub activation_coupling: f64,
    /// `sum_i rho_i/2 ||U_i - W_i V_{i-1} - b_i 1^T||^2`.
    pub preactivation_coupling: f64,
}

impl ObjectiveTerms {
    /// `Lbar`.
    pub fn total(&self) -> f64 {
        self.loss + self.activation_coupling + self.preactivation_coupling
    }
}

/// Evaluates every term of `Lbar` at the current iterate, one product per layer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_objective<T: Real>(
    net: &Network<T>,
    params: &[LayerParams],
    input: &[T],
    labels: &[u8],
    u: &[ColMatrix<T>],
    v: &[ColMatrix<T>],
    tile_width: usize,
    scratch: &ThreadScratch<T>,
    partials: &mut [Partial],
) -> ObjectiveTerms {
    let depth = net.depth();
    let n = labels.len();
    let grid = TileGrid::new(n, tile_width);
    let mut terms = ObjectiveTerms::default();
    for layer in 0..depth {
        let rows = net.widths()[layer + 1];
        let cols = net.widths()[layer];
        let prev: &[T] = if layer == 0 { input } else { v[layer - 1].as_slice() };
        let weights = net.weights(layer);
        let bias = net.bias(layer);
        let (u_l, v_l) = (&u[layer], &v[layer]);
        let output = layer + 1 == depth;
        for_each_tile(grid, partials, scratch, |columns, slot| {
            let width = columns.len();
            let product = &mut slot[..rows * width];
            // P = W_l V_{l-1} for this tile; the bias enters in the distance below.
            matmul(
                slice_view_mut(product, rows),
                false,
                weights.view(),
                columns_view(prev, cols, columns.clone()),
                T::one(),
                Par::Seq,
            );
            let mut sums: Partial = [0.0; PARTIAL_LEN];
            for (offset, p) in product.chunks_exact(rows).enumerate() {
                let j = columns.start + offset;
                sums[0] += scalar::dist2_shifted(u_l.col(j), p, bias);
                if output {
                    sums[1] += scalar::dist2(v_l.col(j), u_l.col(j));
                    sums[2] += scalar::dist2_one_hot(v_l.col(j), labels[j] as usize);
                } else {
                    sums[1] += scalar::dist2_relu(v_l.col(j), u_l.col(j));
                }
            }
            sums
        });
        let total = sum_partials(partials, grid.count());
        terms.preactivation_coupling += 0.5 * params[layer].rho * total[0];
        terms.activation_coupling += 0.5 * params[layer].gamma * total[1];
        terms.loss += 0.5 * total[2];
    }
    terms
}
