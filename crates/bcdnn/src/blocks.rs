//! Exact minimisation of `Lbar` over one block (`V_i`, `U_i` or `(W_i, b_i)`) with the
//! others fixed.
//!
//! Products over the `n` sample columns run in tiles on the current rayon pool, each tile's
//! faer product sequential, with the elementwise step fused into the tile's epilogue. The
//! small dense systems (`d x d`) are factorised in `f64` by Cholesky.

#![allow(non_snake_case)]

use crate::config::LayerParams;
use crate::workspace::Workspace;
use bcdnn_kernels::elementwise::USums;
use bcdnn_kernels::matrix::{columns_view, slice_view, slice_view_mut};
use bcdnn_kernels::products::{gram_lower, matmul, reduce_column_chunks};
use bcdnn_kernels::spd::NotPositiveDefinite;
use bcdnn_kernels::tiling::{for_each_tile_mut, partial, sum_partials, Partial, TileGrid};
use bcdnn_kernels::{ColMatrix, Real};
use faer::{MatRef, Par};

/// Output activation update for the squared loss:
/// `V_N = (Y + gamma U_N + alpha V_N^old) / (1 + gamma + alpha)`.
///
/// Returns `[||V_N - Y||^2, ||V_N - V_N^old||^2, 0, 0]`.
pub(crate) fn output_activation<T: Real>(
    params: LayerParams,
    labels: &[u8],
    u: &ColMatrix<T>,
    v: &mut ColMatrix<T>,
    grid: TileGrid,
    ws: &mut Workspace<T>,
) -> Partial {
    let rows = v.rows();
    let (gamma, alpha) = (T::from_f64(params.gamma), T::from_f64(params.alpha));
    for_each_tile_mut(grid, v.as_mut_slice(), rows, &mut ws.partials, &ws.scratch, |columns, tile, _| {
        let start = columns.start * rows;
        let u = &u.as_slice()[start..start + tile.len()];
        let s = T::output_v_step_tile(tile, u, &labels[columns], rows, T::one(), gamma, alpha);
        partial(&[s.residual_new, s.step])
    });
    sum_partials(&ws.partials, grid.count())
}

/// Pre-activation update of layer `l` with `P = W_l V_{l-1} + b_l 1^T` computed tile by tile.
///
/// Output layer: `U_N = (gamma V_N + rho P) / (gamma + rho)`. Hidden ReLU layer: each entry is
/// the minimiser of `1/2 (relu(u) - v)^2 + g/2 (u - B)^2` with
/// `B = (rho P + alpha U^old) / (rho + alpha)` and `g = (rho + alpha) / gamma`.
///
/// Returns `[||U^old - P||^2, ||V_l - sigma(U_l)||^2, ||U_l - U_l^old||^2, 0]`; the first is
/// the coupling term of the previous iterate, the second that of the new one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn preactivation<T: Real>(
    params: LayerParams,
    output_layer: bool,
    weights: &ColMatrix<T>,
    bias: &[T],
    prev: &[T],
    v: &ColMatrix<T>,
    u: &mut ColMatrix<T>,
    grid: TileGrid,
    ws: &mut Workspace<T>,
) -> Partial {
    let rows = u.rows();
    let cols = weights.cols();
    let (gamma, rho, alpha) = (T::from_f64(params.gamma), T::from_f64(params.rho), T::from_f64(params.alpha));
    for_each_tile_mut(grid, u.as_mut_slice(), rows, &mut ws.partials, &ws.scratch, |columns, tile, slot| {
        let width = columns.len();
        let product = &mut slot[..rows * width];

        // P = W_l V_{l-1} on this tile (the bias is added in the epilogue)
        matmul(
            slice_view_mut(product, rows),
            false,
            weights.view(),
            columns_view(prev, cols, columns.clone()),
            T::one(),
            Par::Seq,
        );

        // Fused epilogue: U = prox(...) while accumulating the objective terms
        let start = columns.start * rows;
        let v_tile = &v.as_slice()[start..start + tile.len()];
        let s = if output_layer {
            T::output_u_step_tile(tile, product, bias, v_tile, gamma, rho)
        } else {
            let mut s = USums::default();
            for ((u_col, p_col), a_col) in
                tile.chunks_exact_mut(rows).zip(product.chunks_exact(rows)).zip(v_tile.chunks_exact(rows))
            {
                s.add(T::hidden_u_step_relu(u_col, p_col, bias, a_col, rho, alpha, gamma));
            }
            s
        };
        partial(&[s.coupling_old, s.link_new, s.step])
    });
    sum_partials(&ws.partials, grid.count())
}

/// Writes the augmented Gram matrix `G = Vt Vt^T` of `Vt = [V; 1^T]` into `gram` (lower
/// triangle and last row): `V V^T` in the leading `m x m` block, `(V 1)^T` in row `m` and `n`
/// at `(m, m)`. Column chunks run in parallel and are summed in chunk order.
pub(crate) fn augmented_gram<T: Real>(
    gram: &mut ColMatrix<T>,
    v: MatRef<'_, T>,
    ones: &[T],
    chunk_scratch: &mut [T],
    chunks: usize,
) {
    let (m, n) = (v.nrows(), v.ncols());
    let dim = m + 1;
    let G = faer::MatMut::from_column_major_slice_mut(&mut gram.as_mut_slice()[..dim * dim], dim, dim);
    reduce_column_chunks(G, n, chunks, chunk_scratch, |columns, mut partial| {
        let width = columns.len();
        let v_chunk = v.subcols(columns.start, width);
        // G_11 = V V^T (lower triangle only)
        gram_lower(partial.rb_mut().submatrix_mut(0, 0, m, m), v_chunk, Par::Seq);
        // G_21 = (V 1)^T, G_22 = n
        matmul(
            partial.rb_mut().submatrix_mut(m, 0, 1, m).transpose_mut(),
            false,
            v_chunk,
            slice_view(&ones[..width], width),
            T::one(),
            Par::Seq,
        );
        partial[(m, m)] = T::from_f64(width as f64);
    });
}

/// Writes `C = U Vt^T = [U V^T, U 1]` into the leading `d x (m + 1)` block of `cross`.
fn augmented_cross<T: Real>(
    cross: &mut ColMatrix<T>,
    u: MatRef<'_, T>,
    v: MatRef<'_, T>,
    ones: &[T],
    chunk_scratch: &mut [T],
    chunks: usize,
) {
    let (d, m, n) = (u.nrows(), v.nrows(), v.ncols());
    let C = faer::MatMut::from_column_major_slice_mut(&mut cross.as_mut_slice()[..d * (m + 1)], d, m + 1);
    reduce_column_chunks(C, n, chunks, chunk_scratch, |columns, mut partial| {
        let width = columns.len();
        let u_chunk = u.subcols(columns.start, width);
        let v_chunk = v.subcols(columns.start, width);
        matmul(partial.rb_mut().submatrix_mut(0, 0, d, m), false, u_chunk, v_chunk.transpose(), T::one(), Par::Seq);
        matmul(
            partial.rb_mut().submatrix_mut(0, m, d, 1),
            false,
            u_chunk,
            slice_view(&ones[..width], width),
            T::one(),
            Par::Seq,
        );
    });
}

use faer::reborrow::ReborrowMut;

/// Joint weight and bias update of layer `l`: with `Vt = [V_{l-1}; 1^T]`, `Wt = [W_l b_l]`,
/// `G = Vt Vt^T` and `C = U_l Vt^T`, solves `(alpha I + rho G) Wt^T = (alpha Wt^old + rho C)^T`
/// by Cholesky in `f64`.
///
/// With `use_input_gram`, `ws.input_gram` already contains `G` (the layer-1 Gram matrix of the
/// fixed input, computed once per run). Returns `||Wt - Wt^old||^2`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weights<T: Real>(
    params: LayerParams,
    prev: MatRef<'_, T>,
    u: &ColMatrix<T>,
    weights: &mut ColMatrix<T>,
    bias: &mut [T],
    use_input_gram: bool,
    ws: &mut Workspace<T>,
    threads: usize,
) -> Result<f64, NotPositiveDefinite> {
    let m = prev.nrows();
    let d = u.rows();
    let dim = m + 1;

    // G = Vt Vt^T (lower triangle), unless it is the cached Gram matrix of X
    if !use_input_gram {
        augmented_gram(&mut ws.gram, prev, &ws.ones, &mut ws.chunk_scratch, threads);
    }
    let gram = if use_input_gram { &ws.input_gram } else { &ws.gram };
    let G = faer::MatRef::from_column_major_slice(&gram.as_slice()[..dim * dim], dim, dim);

    // C = U Vt^T = [U V^T, U 1]
    augmented_cross(&mut ws.cross, u.view(), prev, &ws.ones, &mut ws.chunk_scratch, threads);
    let C = faer::MatRef::from_column_major_slice(&ws.cross.as_slice()[..d * dim], d, dim);

    // H = alpha I + rho G, lower triangle, in f64
    let (rho, alpha) = (params.rho, params.alpha);
    {
        let mut H = ws.spd.matrix_mut(dim);
        for j in 0..dim {
            for i in j..dim {
                H[(i, j)] = rho * G[(i, j)].to_f64();
            }
            H[(j, j)] += alpha;
        }
    }
    ws.spd.factor(Par::Seq)?;

    // R = (alpha Wt^old + rho C)^T, (m + 1) x d, column r is row r of Wt
    let R = &mut ws.rhs[..dim * d];
    let W_old = weights.view();
    for r in 0..d {
        let column = &mut R[r * dim..(r + 1) * dim];
        for j in 0..m {
            column[j] = alpha * W_old[(r, j)].to_f64() + rho * C[(r, j)].to_f64();
        }
        column[m] = alpha * bias[r].to_f64() + rho * C[(r, m)].to_f64();
    }

    // Wt^T = H^{-1} R
    ws.spd.solve_columns(R, threads);

    let mut step = 0.0;
    let mut W = weights.view_mut();
    for r in 0..d {
        let column = &R[r * dim..(r + 1) * dim];
        for j in 0..m {
            let new = T::from_f64(column[j]);
            step += (new - W[(r, j)]).to_f64().powi(2);
            W[(r, j)] = new;
        }
        let new = T::from_f64(column[m]);
        step += (new - bias[r]).to_f64().powi(2);
        bias[r] = new;
    }
    Ok(step)
}

/// Flops per sample column of the two forms of the activation update of a layer of width `d`
/// followed by one of width `d_next`: `(direct, woodbury)`.
pub(crate) fn activation_costs(d: usize, d_next: usize) -> (f64, f64) {
    let (d, dn) = (d as f64, d_next as f64);
    (2.0 * d * dn + 2.0 * d * d, 4.0 * d * dn + 2.0 * dn * dn)
}

/// Hidden activation update of layer `l < N`:
/// `V_l = (gamma I + rho W^T W)^{-1} (rho W^T (U_{l+1} - b 1^T) + gamma relu(U_l))`
/// with `W = W_{l+1}`, `b = b_{l+1}`, `gamma` of layer `l` and `rho` of layer `l + 1`.
///
/// The inverse is precomputed (in `f64`, then rounded) and applied as a product, in the
/// direct form or, when cheaper, the Woodbury form
/// `V = Q / gamma + W^T K`, `K = (gamma I + rho W W^T)^{-1} (rho (U_{l+1} - b 1^T) - (rho / gamma) W Q)`
/// with `Q = gamma relu(U_l)`. Returns `||V_l - V_l^old||^2`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn hidden_activation<T: Real>(
    gamma: f64,
    rho: f64,
    w_next: &ColMatrix<T>,
    b_next: &[T],
    u_next: &ColMatrix<T>,
    u: &ColMatrix<T>,
    v: &mut ColMatrix<T>,
    grid: TileGrid,
    ws: &mut Workspace<T>,
    threads: usize,
) -> Result<f64, NotPositiveDefinite> {
    let d = v.rows();
    let dn = w_next.rows();
    let (direct_cost, woodbury_cost) = activation_costs(d, dn);
    if direct_cost <= woodbury_cost {
        hidden_activation_direct(gamma, rho, w_next, b_next, u_next, u, v, grid, ws, threads)
    } else {
        hidden_activation_woodbury(gamma, rho, w_next, b_next, u_next, u, v, grid, ws, threads)
    }
}

/// Factorises `c I + rho M` (from the lower triangle of `M`, stored in `ws.factor`) and
/// overwrites the leading `dim x dim` block of `ws.factor` with `scale (c I + rho M)^{-1}`,
/// rounded to `T`.
fn small_inverse<T: Real>(
    ws: &mut Workspace<T>,
    dim: usize,
    c: f64,
    rho: f64,
    scale: f64,
    threads: usize,
) -> Result<(), NotPositiveDefinite> {
    {
        let M = faer::MatRef::from_column_major_slice(&ws.factor.as_slice()[..dim * dim], dim, dim);
        let mut A = ws.spd.matrix_mut(dim);
        for j in 0..dim {
            for i in j..dim {
                A[(i, j)] = rho * M[(i, j)].to_f64();
            }
            A[(j, j)] += c;
        }
    }
    ws.spd.factor(Par::Seq)?;
    ws.spd.inverse_into(&mut ws.inverse, threads);
    for (out, &x) in ws.factor.as_mut_slice()[..dim * dim].iter_mut().zip(&ws.inverse[..dim * dim]) {
        *out = T::from_f64(scale * x);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn hidden_activation_direct<T: Real>(
    gamma: f64,
    rho: f64,
    w_next: &ColMatrix<T>,
    b_next: &[T],
    u_next: &ColMatrix<T>,
    u: &ColMatrix<T>,
    v: &mut ColMatrix<T>,
    grid: TileGrid,
    ws: &mut Workspace<T>,
    threads: usize,
) -> Result<f64, NotPositiveDefinite> {
    let d = v.rows();
    let dn = w_next.rows();

    // A^{-1} = (gamma I + rho W^T W)^{-1}, with W^T W formed in `factor` first
    {
        let WtW = faer::MatMut::from_column_major_slice_mut(&mut ws.factor.as_mut_slice()[..d * d], d, d);
        gram_lower(WtW, w_next.view().transpose(), Par::Seq);
    }
    small_inverse(ws, d, gamma, rho, 1.0, threads)?;

    // shift = -rho W^T b
    let W = w_next.view();
    for (j, s) in ws.shift[..d].iter_mut().enumerate() {
        let mut acc = 0.0;
        for r in 0..dn {
            acc += W[(r, j)].to_f64() * b_next[r].to_f64();
        }
        *s = T::from_f64(-rho * acc);
    }

    let A_inv = faer::MatRef::from_column_major_slice(&ws.factor.as_slice()[..d * d], d, d);
    let shift = &ws.shift[..d];
    let (rho_t, gamma_t) = (T::from_f64(rho), T::from_f64(gamma));
    for_each_tile_mut(grid, v.as_mut_slice(), d, &mut ws.partials, &ws.scratch, |columns, tile, slot| {
        let width = columns.len();
        let (s1, rest) = slot.split_at_mut(d * width);
        let s2 = &mut rest[..d * width];

        // S1 = rho W^T U_{l+1}
        matmul(
            slice_view_mut(s1, d),
            false,
            W.transpose(),
            columns_view(u_next.as_slice(), dn, columns.clone()),
            rho_t,
            Par::Seq,
        );

        // S1 += gamma relu(U_l) - rho W^T b 1^T
        for (offset, s1_col) in s1.chunks_exact_mut(d).enumerate() {
            T::add_scaled_relu_shift(s1_col, u.col(columns.start + offset), gamma_t, shift);
        }

        // V = A^{-1} S1
        matmul(slice_view_mut(s2, d), false, A_inv, slice_view(s1, d), T::one(), Par::Seq);
        let mut step = 0.0;
        for (v_col, s2_col) in tile.chunks_exact_mut(d).zip(s2.chunks_exact(d)) {
            step += T::assign_with_step(v_col, s2_col);
        }
        partial(&[step])
    });
    Ok(sum_partials(&ws.partials, grid.count())[0])
}

#[allow(clippy::too_many_arguments)]
fn hidden_activation_woodbury<T: Real>(
    gamma: f64,
    rho: f64,
    w_next: &ColMatrix<T>,
    b_next: &[T],
    u_next: &ColMatrix<T>,
    u: &ColMatrix<T>,
    v: &mut ColMatrix<T>,
    grid: TileGrid,
    ws: &mut Workspace<T>,
    threads: usize,
) -> Result<f64, NotPositiveDefinite> {
    let d = v.rows();
    let dn = w_next.rows();
    let W = w_next.view();

    // F = rho M^{-1} with M = gamma I + rho W W^T
    {
        let WWt = faer::MatMut::from_column_major_slice_mut(&mut ws.factor.as_mut_slice()[..dn * dn], dn, dn);
        gram_lower(WWt, W, Par::Seq);
    }
    small_inverse(ws, dn, gamma, rho, rho, threads)?;
    let F = faer::MatRef::from_column_major_slice(&ws.factor.as_slice()[..dn * dn], dn, dn);

    // E = (rho / gamma) M^{-1} W = F W / gamma
    {
        let E = faer::MatMut::from_column_major_slice_mut(&mut ws.woodbury_e.as_mut_slice()[..dn * d], dn, d);
        matmul(E, false, F, W, T::from_f64(1.0 / gamma), Par::Seq);
    }
    let E = faer::MatRef::from_column_major_slice(&ws.woodbury_e.as_slice()[..dn * d], dn, d);

    // k0 = -rho M^{-1} b = -F b
    for (r, s) in ws.shift[..dn].iter_mut().enumerate() {
        let mut acc = 0.0;
        for k in 0..dn {
            acc += F[(r, k)].to_f64() * b_next[k].to_f64();
        }
        *s = T::from_f64(-acc);
    }
    let k0 = &ws.shift[..dn];

    let gamma_t = T::from_f64(gamma);
    let inv_gamma = T::from_f64(1.0 / gamma);
    for_each_tile_mut(grid, v.as_mut_slice(), d, &mut ws.partials, &ws.scratch, |columns, tile, slot| {
        let width = columns.len();
        let (q, rest) = slot.split_at_mut(d * width);
        let (k, rest) = rest.split_at_mut(dn * width);
        let s3 = &mut rest[..d * width];

        // Q = gamma relu(U_l)
        for (offset, q_col) in q.chunks_exact_mut(d).enumerate() {
            T::scaled_relu(q_col, u.col(columns.start + offset), gamma_t);
        }

        // K = F U_{l+1} - E Q + k0 1^T
        matmul(
            slice_view_mut(k, dn),
            false,
            F,
            columns_view(u_next.as_slice(), dn, columns.clone()),
            T::one(),
            Par::Seq,
        );
        matmul(slice_view_mut(k, dn), true, E, slice_view(q, d), -T::one(), Par::Seq);
        for k_col in k.chunks_exact_mut(dn) {
            T::add_bias(k_col, k0);
        }

        // V = W^T K + Q / gamma
        matmul(slice_view_mut(s3, d), false, W.transpose(), slice_view(k, dn), T::one(), Par::Seq);
        let mut step = 0.0;
        for ((v_col, s3_col), q_col) in tile.chunks_exact_mut(d).zip(s3.chunks_exact(d)).zip(q.chunks_exact(d)) {
            step += T::combine_with_step(v_col, s3_col, q_col, inv_gamma);
        }
        partial(&[step])
    });
    Ok(sum_partials(&ws.partials, grid.count())[0])
}
