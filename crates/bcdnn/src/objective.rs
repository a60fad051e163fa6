//! The three-splitting objective `Lbar` and its terms.

use crate::blocks::{activation_penalty, weight_penalty};
use crate::config::Config;
use crate::network::Network;
use bcdnn_kernels::matrix::{columns_view, slice_view_mut};
use bcdnn_kernels::products::matmul;
use bcdnn_kernels::tiling::{for_each_tile, partial, sum_partials, Partial, ThreadScratch, TileGrid};
use bcdnn_kernels::{ColMatrix, Real};
use faer::Par;
use serde::Serialize;

/// The terms of
/// `Lbar = R(V_N; Y) + sum_i r_i(W_i) + sum_i s_i(V_i)
///       + sum_{i<N} gamma_i/2 ||V_i - S_i V_{i-1} - sigma_i(U_i)||^2 + gamma_N/2 ||V_N - U_N||^2
///       + sum_i rho_i/2 ||U_i - W_i V_{i-1} - b_i 1^T||^2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ObjectiveTerms {
    /// The loss `R(V_N; Y)`, with the configured scale.
    pub loss: f64,
    /// `sum_i gamma_i/2 ||V_i - S_i V_{i-1} - sigma_i(U_i)||^2`, the output layer included
    /// (`sigma_N = Id`).
    pub activation_coupling: f64,
    /// `sum_i rho_i/2 ||U_i - W_i V_{i-1} - b_i 1^T||^2`.
    pub preactivation_coupling: f64,
    /// `sum_i r_i(W_i) + s_i(V_i)`.
    pub regularisation: f64,
}

impl ObjectiveTerms {
    /// `Lbar`.
    pub fn total(&self) -> f64 {
        self.loss + self.activation_coupling + self.preactivation_coupling + self.regularisation
    }
}

/// Every term of `Lbar` per layer, unscaled: the trainer keeps these current block by block.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LayerTerms {
    /// The loss, with its scale applied.
    pub loss: f64,
    /// `||V_l - S_l V_{l-1} - sigma_l(U_l)||^2` (`||V_N - U_N||^2` for the output layer).
    pub link: Vec<f64>,
    /// `||U_l - W_l V_{l-1} - b_l 1^T||^2`.
    pub coupling: Vec<f64>,
    /// `s_l(V_l)`.
    pub activation_reg: Vec<f64>,
    /// `r_l(W_l)`.
    pub weight_reg: Vec<f64>,
    /// `||U_l||^2`.
    pub u_norm2: Vec<f64>,
}

impl LayerTerms {
    /// Combines the terms with the configured weights.
    pub fn objective(&self, config: &Config) -> ObjectiveTerms {
        let mut terms = ObjectiveTerms { loss: self.loss, ..ObjectiveTerms::default() };
        for (l, params) in config.layers.iter().enumerate() {
            terms.activation_coupling += 0.5 * params.gamma * self.link[l];
            terms.preactivation_coupling += 0.5 * params.rho * self.coupling[l];
            terms.regularisation += self.activation_reg[l] + self.weight_reg[l];
        }
        terms
    }
}

/// Evaluates every term of `Lbar` at the current iterate, one product per layer, into
/// `terms` (whose vectors keep their capacity, so a second call allocates nothing).
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_terms<T: Real>(
    config: &Config,
    net: &Network<T>,
    input: &[T],
    labels: &[u8],
    u: &[ColMatrix<T>],
    v: &[ColMatrix<T>],
    scratch: &ThreadScratch<T>,
    partials: &mut [Partial],
    terms: &mut LayerTerms,
) {
    let depth = net.depth();
    let n = labels.len();
    let grid = TileGrid::new(n, config.tile_width);
    let loss_weight = config.loss_weight(n);
    terms.loss = 0.0;
    for values in
        [&mut terms.link, &mut terms.coupling, &mut terms.activation_reg, &mut terms.weight_reg, &mut terms.u_norm2]
    {
        values.clear();
    }
    for layer in 0..depth {
        let rows = net.widths()[layer + 1];
        let cols = net.widths()[layer];
        let prev: &[T] = if layer == 0 { input } else { v[layer - 1].as_slice() };
        let skip_input = config.has_skip(layer).then_some(prev);
        let weights = net.weights(layer);
        let bias = net.bias(layer);
        let (u_l, v_l) = (&u[layer], &v[layer]);
        let output = layer + 1 == depth;
        // The output layer is linear: `config.activation` returns `Linear` for it.
        let activation = config.activation(layer);
        for_each_tile(grid, partials, scratch, |columns, slot| {
            let width = columns.len();
            let (product, rest) = slot.split_at_mut(rows * width);
            let target = &mut rest[..rows * width];
            // P = W_l V_{l-1} for this tile; the bias enters in the distance below.
            matmul(
                slice_view_mut(product, rows),
                false,
                weights.view(),
                columns_view(prev, cols, columns.clone()),
                T::one(),
                Par::Seq,
            );
            let start = columns.start * rows;
            let u_tile = &u_l.as_slice()[start..start + rows * width];
            let v_tile = &v_l.as_slice()[start..start + rows * width];
            let mut coupling = 0.0;
            for (p_col, u_col) in product.chunks_exact(rows).zip(u_tile.chunks_exact(rows)) {
                for ((&p, &u), &b) in p_col.iter().zip(u_col).zip(bias) {
                    coupling += (u.to_f64() - p.to_f64() - b.to_f64()).powi(2);
                }
            }
            // target = S_l V_{l-1} + sigma_l(U_l)
            T::activate(activation, target, u_tile);
            if let Some(input) = skip_input {
                for (t, &x) in target.iter_mut().zip(&input[start..start + rows * width]) {
                    *t += x;
                }
            }
            let link: f64 = v_tile.iter().zip(target.iter()).map(|(&a, &b)| (a.to_f64() - b.to_f64()).powi(2)).sum();
            let loss = if output {
                T::loss_value(config.loss, loss_weight, v_tile, &labels[columns.clone()], rows)
            } else {
                0.0
            };
            let reg = activation_penalty(config.activation_regularisers[layer], v_tile);
            let norm2: f64 = u_tile.iter().map(|&x| x.to_f64().powi(2)).sum();
            partial(&[coupling, link, loss, reg, norm2])
        });
        let total = sum_partials(partials, grid.count());
        terms.coupling.push(total[0]);
        terms.link.push(total[1]);
        terms.loss += total[2];
        terms.activation_reg.push(total[3]);
        terms.u_norm2.push(total[4]);
        terms.weight_reg.push(weight_penalty(config.weight_regularisers[layer], weights.as_slice()));
    }
}
