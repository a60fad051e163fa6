//! Minimisation of `Lbar` over one block (`V_i`, `U_i` or `(W_i, b_i)`) with the others
//! fixed.
//!
//! Products over the `n` sample columns run in tiles on the current rayon pool, each tile's
//! faer product sequential, with the elementwise step fused into the tile's epilogue. The
//! small dense systems (`d x d`) are factorised in `f64` by Cholesky.
//!
//! Every update also returns the values, before and after, of the terms of `Lbar` that
//! involve its block, so the trainer can check that no block increases the objective. Terms
//! the update touches elementwise are summed in the same pass. A coupling term that would
//! need an extra product is obtained from the block's optimality conditions instead.

#![allow(non_snake_case)]

use crate::config::InnerSolve;
use crate::workspace::{WeightFista, Workspace};
use bcdnn_kernels::elementwise::USums;
use bcdnn_kernels::fista::fista_columns;
use bcdnn_kernels::loss::{OutputSums, OutputUpdate};
use bcdnn_kernels::matrix::{columns_view, slice_view, slice_view_mut};
use bcdnn_kernels::model::{Activation, ActivationRegulariser, WeightRegulariser};
use bcdnn_kernels::products::{gram_lower, matmul, reduce_column_chunks};
use bcdnn_kernels::spd::NotPositiveDefinite;
use bcdnn_kernels::tiling::{for_each_tile_mut, partial, sum_partials, TileGrid};
use bcdnn_kernels::{ColMatrix, Real};
use faer::reborrow::ReborrowMut;
use faer::{MatRef, Par};

/// Sum of `f(x)` over a slice, in `f64`.
fn sum_map<T: Real>(values: &[T], f: impl Fn(f64) -> f64) -> f64 {
    values.iter().map(|&x| f(x.to_f64())).sum()
}

/// Value of an activation regulariser summed over a slice.
pub(crate) fn activation_penalty<T: Real>(reg: ActivationRegulariser, values: &[T]) -> f64 {
    match reg {
        ActivationRegulariser::None => 0.0,
        _ => sum_map(values, |x| reg.value(x)),
    }
}

/// Value of a weight regulariser summed over a slice.
pub(crate) fn weight_penalty<T: Real>(reg: WeightRegulariser, values: &[T]) -> f64 {
    match reg {
        WeightRegulariser::None => 0.0,
        _ => sum_map(values, |x| reg.value(x)),
    }
}

/// Output activation update `V_N = argmin R(V; Y) + s_N(V) + gamma/2 ||V - U_N||^2
/// + alpha/2 ||V - V_N^old||^2`, by the loss's closed form or prox-linear step.
pub(crate) fn output_activation<T: Real>(
    update: &OutputUpdate,
    labels: &[u8],
    u: &ColMatrix<T>,
    v: &mut ColMatrix<T>,
    grid: TileGrid,
    ws: &mut Workspace<T>,
) -> OutputSums {
    let rows = v.rows();
    for_each_tile_mut(grid, v.as_mut_slice(), rows, &mut ws.partials, &ws.scratch, |columns, tile, _| {
        let start = columns.start * rows;
        let s = T::output_v_update(update, tile, &u.as_slice()[start..start + tile.len()], &labels[columns], rows);
        partial(&[s.loss_old, s.loss_new, s.dist_old, s.dist_new, s.reg_old, s.reg_new, s.step])
    });
    let t = sum_partials(&ws.partials, grid.count());
    OutputSums {
        loss_old: t[0],
        loss_new: t[1],
        dist_old: t[2],
        dist_new: t[3],
        reg_old: t[4],
        reg_new: t[5],
        step: t[6],
    }
}

/// Sums of a pre-activation update over all tiles, with `||U_new||^2`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PreactivationSums {
    pub u: USums,
    pub norm2: f64,
}

/// Pre-activation update of layer `l` with `P = W_l V_{l-1} + b_l 1^T` computed tile by tile.
///
/// Output layer (`activation = None`): `U_N = (gamma V_N + rho P) / (gamma + rho)`. Hidden
/// layer: each entry is the minimiser of `1/2 (sigma(u) - a)^2 + g/2 (u - B)^2` with
/// `a = V_l - S_l V_{l-1}`, `B = (rho P + alpha U^old) / (rho + alpha)` and
/// `g = (rho + alpha) / gamma`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn preactivation<T: Real>(
    (gamma, rho, alpha): (f64, f64, f64),
    activation: Option<Activation>,
    skip_input: Option<&[T]>,
    weights: &ColMatrix<T>,
    bias: &[T],
    prev: &[T],
    v: &ColMatrix<T>,
    u: &mut ColMatrix<T>,
    grid: TileGrid,
    ws: &mut Workspace<T>,
) -> PreactivationSums {
    let rows = u.rows();
    let cols = weights.cols();
    let (gamma, rho, alpha) = (T::from_f64(gamma), T::from_f64(rho), T::from_f64(alpha));
    for_each_tile_mut(grid, u.as_mut_slice(), rows, &mut ws.partials, &ws.scratch, |columns, tile, slot| {
        let width = columns.len();
        let (product, rest) = slot.split_at_mut(rows * width);
        let shifted = &mut rest[..rows * width];

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
        let s = match activation {
            None => T::output_u_step_tile(tile, product, bias, v_tile, gamma, rho),
            Some(activation) => {
                // a = V_l - V_{l-1} with a skip connection, else V_l
                let a: &[T] = match skip_input {
                    Some(input) => {
                        let input = &input[start..start + tile.len()];
                        for ((a, &v), &x) in shifted.iter_mut().zip(v_tile).zip(input) {
                            *a = v - x;
                        }
                        shifted
                    }
                    None => v_tile,
                };
                let mut s = USums::default();
                for ((u_col, p_col), a_col) in
                    tile.chunks_exact_mut(rows).zip(product.chunks_exact(rows)).zip(a.chunks_exact(rows))
                {
                    s.add(T::hidden_u_step(activation, u_col, p_col, bias, a_col, rho, alpha, gamma));
                }
                s
            }
        };
        let norm2 = sum_map(tile, |x| x * x);
        partial(&[s.coupling_old, s.coupling_new, s.link_old, s.link_new, s.step, norm2])
    });
    let t = sum_partials(&ws.partials, grid.count());
    PreactivationSums {
        u: USums { coupling_old: t[0], coupling_new: t[1], link_old: t[2], link_new: t[3], step: t[4] },
        norm2: t[5],
    }
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

/// Result of a weight update.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WeightSums {
    /// `||Wt - Wt^old||^2`.
    pub step: f64,
    /// `||U - W V - b 1^T||^2` at the new weights.
    pub coupling_new: f64,
    /// `r(W)` before and after.
    pub reg_old: f64,
    pub reg_new: f64,
    /// Inner iterations (0 for the closed form).
    pub inner_iterations: usize,
}

/// Parameters of a weight update.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WeightUpdate {
    pub rho: f64,
    pub alpha: f64,
    pub reg: WeightRegulariser,
    pub inner: InnerSolve,
    /// `||U||^2` of the target, for the coupling value at the new weights.
    pub target_norm2: f64,
}

/// Joint weight and bias update of layer `l`: with `Vt = [V_{l-1}; 1^T]`, `Wt = [W_l b_l]`,
/// `G = Vt Vt^T` and `C = U_l Vt^T`, minimises
/// `r(W) + rho/2 ||U - Wt Vt||^2 + alpha/2 ||Wt - Wt^old||^2`.
///
/// Without a regulariser or with `lambda/2 ||W||^2`, solves
/// `(alpha I + rho G + lambda D) Wt^T = (alpha Wt^old + rho C)^T` by Cholesky in `f64`, where
/// `D` is the identity without its bias entry. With the other regularisers, runs monotone FISTA
/// on `G` and `C`. With `use_input_gram`, `ws.input_gram` already contains `G`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weights<T: Real>(
    update: WeightUpdate,
    prev: MatRef<'_, T>,
    u: &ColMatrix<T>,
    weights: &mut ColMatrix<T>,
    bias: &mut [T],
    use_input_gram: bool,
    ws: &mut Workspace<T>,
    threads: usize,
) -> Result<WeightSums, NotPositiveDefinite> {
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

    let WeightUpdate { rho, alpha, reg, target_norm2, .. } = update;
    let reg_old = weight_penalty(reg, weights.as_slice());
    let lambda = match reg {
        WeightRegulariser::None => Some(0.0),
        WeightRegulariser::L2 { lambda } => Some(lambda),
        _ => None,
    };
    let Some(lambda) = lambda else {
        let fista = ws.fista.as_mut().expect("the workspace allocates FISTA buffers when a layer needs them");
        return Ok(weights_by_fista(update, G, C, weights, bias, fista, reg_old));
    };

    // H = alpha I + rho G + lambda D, lower triangle, in f64
    {
        let mut H = ws.spd.matrix_mut(dim);
        for j in 0..dim {
            for i in j..dim {
                H[(i, j)] = rho * G[(i, j)].to_f64();
            }
            H[(j, j)] += alpha + if j < m { lambda } else { 0.0 };
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

    // Write back, accumulating the step and the inner products the new coupling value needs:
    // at the solution, rho <Wt, Wt G> = alpha <Wt, Wt^old> + rho <Wt, C> - alpha ||Wt||^2 - lambda ||W||^2,
    // so ||U - Wt Vt||^2 = ||U||^2 - <Wt, C> + (alpha (<Wt, Wt^old> - ||Wt||^2) - lambda ||W||^2) / rho.
    let (mut step, mut dot_c, mut dot_old, mut norm2_w, mut norm2_b) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut W = weights.view_mut();
    for r in 0..d {
        let column = &R[r * dim..(r + 1) * dim];
        for (j, &value) in column.iter().enumerate() {
            let old = if j < m { W[(r, j)].to_f64() } else { bias[r].to_f64() };
            let new = T::from_f64(value);
            let new64 = new.to_f64();
            step += (new64 - old).powi(2);
            dot_c += new64 * C[(r, j)].to_f64();
            dot_old += new64 * old;
            if j < m {
                norm2_w += new64 * new64;
                W[(r, j)] = new;
            } else {
                norm2_b += new64 * new64;
                bias[r] = new;
            }
        }
    }
    let coupling_new = target_norm2 - dot_c + (alpha * (dot_old - norm2_w - norm2_b) - lambda * norm2_w) / rho;
    Ok(WeightSums {
        step,
        coupling_new: coupling_new.max(0.0),
        reg_old,
        reg_new: weight_penalty(reg, weights.as_slice()),
        inner_iterations: 0,
    })
}

/// Weight update with a regulariser that has no closed form, by monotone FISTA on the `f64`
/// copies of `G` (made symmetric) and `C`.
fn weights_by_fista<T: Real>(
    update: WeightUpdate,
    G: MatRef<'_, T>,
    C: MatRef<'_, T>,
    weights: &mut ColMatrix<T>,
    bias: &mut [T],
    fista: &mut WeightFista,
    reg_old: f64,
) -> WeightSums {
    let (d, dim) = (C.nrows(), C.ncols());
    let m = dim - 1;
    {
        let mut g = fista.gram_mut(dim);
        for j in 0..dim {
            for i in j..dim {
                let value = G[(i, j)].to_f64();
                g[(i, j)] = value;
                g[(j, i)] = value;
            }
        }
        let mut c = fista.cross_mut(d, dim);
        for j in 0..dim {
            for i in 0..d {
                c[(i, j)] = C[(i, j)].to_f64();
            }
        }
        let mut w = fista.old_mut(d, dim);
        for j in 0..m {
            for i in 0..d {
                w[(i, j)] = weights.view()[(i, j)].to_f64();
            }
        }
        for (i, &b) in bias.iter().enumerate() {
            w[(i, m)] = b.to_f64();
        }
    }
    let report = fista.solve(update.reg, update.rho, update.alpha, update.inner);
    let solution = fista.solution(d, dim);
    let (mut step, mut prox) = (0.0, 0.0);
    let mut W = weights.view_mut();
    for j in 0..dim {
        for i in 0..d {
            let new = T::from_f64(solution[(i, j)]);
            let old = if j < m { W[(i, j)] } else { bias[i] };
            let change = (new - old).to_f64().powi(2);
            step += change;
            prox += change;
            if j < m {
                W[(i, j)] = new;
            } else {
                bias[i] = new;
            }
        }
    }
    let reg_new = weight_penalty(update.reg, weights.as_slice());
    // objective = rho/2 (tr(Wt G Wt^T) - 2 tr(Wt C^T)) + alpha/2 ||Wt - Wt^old||^2 + r(W)
    let quadratic = report.objective_after - 0.5 * update.alpha * prox - reg_new;
    let coupling_new = update.target_norm2 + 2.0 * quadratic / update.rho;
    WeightSums { step, coupling_new: coupling_new.max(0.0), reg_old, reg_new, inner_iterations: report.iterations }
}

/// Flops per sample column of the two forms of the activation update of a layer of width `d`
/// followed by one of width `d_next`: `(direct, woodbury)`.
pub(crate) fn activation_costs(d: usize, d_next: usize) -> (f64, f64) {
    let (d, dn) = (d as f64, d_next as f64);
    (2.0 * d * dn + 2.0 * d * d, 4.0 * d * dn + 2.0 * dn * dn)
}

/// Everything the activation update of hidden layer `l` reads.
pub(crate) struct HiddenActivation<'a, T> {
    /// `gamma` of layer `l`, and of layer `l + 1` (used with a skip on layer `l + 1`).
    pub gamma: f64,
    pub gamma_next: f64,
    /// `rho` of layer `l + 1`.
    pub rho: f64,
    pub activation: Activation,
    pub activation_next: Activation,
    pub reg: ActivationRegulariser,
    pub inner: InnerSolve,
    pub w_next: &'a ColMatrix<T>,
    pub b_next: &'a [T],
    pub u_next: &'a ColMatrix<T>,
    pub u: &'a ColMatrix<T>,
    /// `V_{l-1}` when layer `l` has a skip connection.
    pub skip_input: Option<&'a [T]>,
    /// `V_{l+1}` when layer `l + 1` has a skip connection.
    pub skip_output: Option<&'a ColMatrix<T>>,
}

impl<T> HiddenActivation<'_, T> {
    /// `c = gamma_l + S_{l+1} gamma_{l+1}`, the weight of `||V||^2` in the block objective.
    fn c(&self) -> f64 {
        self.gamma + if self.skip_output.is_some() { self.gamma_next } else { 0.0 }
    }
}

/// Sums of an activation update: terms of `Lbar` involving `V_l`, before and after.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HiddenSums {
    pub step: f64,
    /// `||V_l - S_l V_{l-1} - sigma(U_l)||^2`.
    pub link_old: f64,
    pub link_new: f64,
    /// `||V_{l+1} - V_l - sigma(U_{l+1})||^2` (0 without a skip on layer `l + 1`).
    pub link_next_old: f64,
    pub link_next_new: f64,
    /// `s_l(V_l)`.
    pub reg_old: f64,
    pub reg_new: f64,
    /// `||U_{l+1} - W_{l+1} V_l - b_{l+1} 1^T||^2` at the new `V_l`.
    pub coupling_next_new: f64,
    pub inner_iterations: usize,
}

/// Hidden activation update of layer `l < N`. With `W = W_{l+1}`, `b = b_{l+1}`,
/// `c = gamma_l + S_{l+1} gamma_{l+1}`, `A = c I + rho W^T W` and
/// `Q = gamma_l (S_l V_{l-1} + sigma(U_l)) + S_{l+1} gamma_{l+1} (V_{l+1} - sigma(U_{l+1}))`:
/// `V_l = A^{-1} (rho W^T (U_{l+1} - b 1^T) + Q)`.
///
/// Without a regulariser the inverse is precomputed (in `f64`, then rounded) and applied as
/// a product, in the direct form or, when cheaper, the Woodbury form
/// `V = Q / c + W^T K`, `K = (c I + rho W W^T)^{-1} (rho (U_{l+1} - b 1^T) - (rho / c) W Q)`.
/// With a regulariser `s_l`, each tile runs monotone FISTA on
/// `1/2 <V, A V> - <R, V> + s_l(V)` from the current `V_l`.
pub(crate) fn hidden_activation<T: Real>(
    block: &HiddenActivation<'_, T>,
    v: &mut ColMatrix<T>,
    grid: TileGrid,
    ws: &mut Workspace<T>,
    threads: usize,
) -> Result<HiddenSums, NotPositiveDefinite> {
    let d = v.rows();
    let dn = block.w_next.rows();
    let (direct_cost, woodbury_cost) = activation_costs(d, dn);
    let direct = direct_cost <= woodbury_cost;
    let W = block.w_next.view();
    let (c, rho) = (block.c(), block.rho);
    let regularised = block.reg != ActivationRegulariser::None;

    if direct {
        // A (regularised) or A^{-1}, with W^T W formed in `factor` first
        let WtW = faer::MatMut::from_column_major_slice_mut(&mut ws.factor.as_mut_slice()[..d * d], d, d);
        gram_lower(WtW, W.transpose(), Par::Seq);
        if regularised {
            let lipschitz = c + rho * largest_eigenvalue(&ws.factor.as_slice()[..d * d], d, &mut ws.inverse);
            let factor = &mut ws.factor.as_mut_slice()[..d * d];
            for j in 0..d {
                for i in j..d {
                    let value = T::from_f64(rho * factor[i + j * d].to_f64() + if i == j { c } else { 0.0 });
                    factor[i + j * d] = value;
                    factor[j + i * d] = value;
                }
            }
            ws.lipschitz = lipschitz;
        } else {
            small_inverse(ws, d, c, rho, 1.0, threads)?;
        }
    } else {
        // F = rho M^{-1} with M = c I + rho W W^T, and E = F W / c
        let WWt = faer::MatMut::from_column_major_slice_mut(&mut ws.factor.as_mut_slice()[..dn * dn], dn, dn);
        gram_lower(WWt, W, Par::Seq);
        if regularised {
            ws.lipschitz = c + rho * largest_eigenvalue(&ws.factor.as_slice()[..dn * dn], dn, &mut ws.inverse);
        } else {
            small_inverse(ws, dn, c, rho, rho, threads)?;
            let F = faer::MatRef::from_column_major_slice(&ws.factor.as_slice()[..dn * dn], dn, dn);
            let E = faer::MatMut::from_column_major_slice_mut(&mut ws.woodbury_e.as_mut_slice()[..dn * d], dn, d);
            matmul(E, false, F, W, T::from_f64(1.0 / c), Par::Seq);
        }
    }

    // Constant columns: -rho W^T b (direct) or -F b (Woodbury)
    if direct || regularised {
        for (j, s) in ws.shift[..d].iter_mut().enumerate() {
            let acc: f64 = (0..dn).map(|r| W[(r, j)].to_f64() * block.b_next[r].to_f64()).sum();
            *s = T::from_f64(-rho * acc);
        }
    } else {
        let F = faer::MatRef::from_column_major_slice(&ws.factor.as_slice()[..dn * dn], dn, dn);
        for (r, s) in ws.shift[..dn].iter_mut().enumerate() {
            let acc: f64 = (0..dn).map(|k| F[(r, k)].to_f64() * block.b_next[k].to_f64()).sum();
            *s = T::from_f64(-acc);
        }
    }

    let factor = &ws.factor.as_slice()[..if direct { d * d } else { dn * dn }];
    let woodbury_e = faer::MatRef::from_column_major_slice(&ws.woodbury_e.as_slice()[..dn * d], dn, d);
    let shift = &ws.shift[..if direct || regularised { d } else { dn }];
    let lipschitz = ws.lipschitz;
    let column_fista = &ws.column_fista;
    let inner = block.inner.kernels();
    let (gamma_t, gamma_next_t, rho_t) = (T::from_f64(block.gamma), T::from_f64(block.gamma_next), T::from_f64(rho));
    let skip_next = block.skip_output.is_some();
    for_each_tile_mut(grid, v.as_mut_slice(), d, &mut ws.partials, &ws.scratch, |columns, tile, slot| {
        let width = columns.len();
        let len = d * width;
        let (q1, rest) = slot.split_at_mut(len);
        let (q2, rest) = rest.split_at_mut(len);
        let (q, rest) = rest.split_at_mut(len);
        let (r, rest) = rest.split_at_mut(len);
        let (out, rest) = rest.split_at_mut(len);
        let start = columns.start * d;
        let next_start = columns.start * dn;
        let u_next = &block.u_next.as_slice()[next_start..next_start + dn * width];

        // q1 = S_l V_{l-1} + sigma(U_l), q2 = V_{l+1} - sigma(U_{l+1})
        T::activate(block.activation, q1, &block.u.as_slice()[start..start + len]);
        if let Some(input) = block.skip_input {
            for (q, &x) in q1.iter_mut().zip(&input[start..start + len]) {
                *q += x;
            }
        }
        if let Some(v_next) = block.skip_output {
            T::activate(block.activation_next, q2, &block.u_next.as_slice()[start..start + len]);
            for (q, &x) in q2.iter_mut().zip(&v_next.as_slice()[start..start + len]) {
                *q = x - *q;
            }
        }
        let q2: &[T] = q2;

        // Terms before the update
        let reg_old = activation_penalty(block.reg, tile);
        let target_norm2 = shifted_norm2(u_next, block.b_next);

        // R = rho W^T U_{l+1} first, so that one pass can add Q and the shift to it
        let forms_r = direct || regularised;
        if forms_r {
            matmul(slice_view_mut(r, d), false, W.transpose(), columns_view(u_next, dn, 0..width), rho_t, Par::Seq);
        }
        let [link_old, link_next_old] = form_q(
            tile,
            q1,
            skip_next.then_some(q2),
            q,
            forms_r.then_some((&mut r[..], shift)),
            d,
            (gamma_t, gamma_next_t),
        );
        let (q1, q): (&[T], &[T]) = (q1, q);

        let mut inner_iterations = 0;
        let coupling_next_new: Coupling;
        if direct || regularised {
            // R = rho W^T U_{l+1} + Q - rho W^T b 1^T, formed above
            let r: &[T] = r;
            if regularised {
                out.copy_from_slice(tile);
                let wx = &mut rest[..dn * width];
                let apply = |x: &[T], y: &mut [T]| {
                    if direct {
                        let A = faer::MatRef::from_column_major_slice(factor, d, d);
                        matmul(slice_view_mut(y, d), false, A, slice_view(x, d), T::one(), Par::Seq);
                    } else {
                        // A x = c x + rho W^T (W x)
                        let wx = &mut wx[..dn * (x.len() / d)];
                        matmul(slice_view_mut(wx, dn), false, W, slice_view(x, d), T::one(), Par::Seq);
                        let c_t = T::from_f64(c);
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = c_t * x;
                        }
                        matmul(slice_view_mut(y, d), true, W.transpose(), slice_view(wx, dn), rho_t, Par::Seq);
                    }
                };
                let slot_index = rayon::current_thread_index().unwrap_or(0) % column_fista.len();
                let mut scratch = column_fista[slot_index].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let report = fista_columns(out, r, apply, lipschitz, block.reg, &inner, &mut scratch);
                inner_iterations = report.iterations;
                // 1/2 <V, A V> - <R, V> = rho/2 ||U - b - W V||^2 - rho/2 ||U - b||^2 + c/2 ||V||^2 - <Q, V>
                let reg_new = activation_penalty(block.reg, out);
                let quadratic = report.objective_after - reg_new;
                coupling_next_new = Coupling::FromFista(quadratic);
            } else {
                // V = A^{-1} R; at the solution rho ||W V||^2 = <R, V> - c ||V||^2, so
                // rho/2 ||U - b - W V||^2 = rho/2 ||U - b||^2 - 1/2 <R, V> + <Q, V> - c/2 ||V||^2
                let A_inv = faer::MatRef::from_column_major_slice(factor, d, d);
                matmul(slice_view_mut(out, d), false, A_inv, slice_view(r, d), T::one(), Par::Seq);
                coupling_next_new = Coupling::FromSolution;
            }
        } else {
            // K = F U_{l+1} - E Q + k0 1^T, V = W^T K + Q / c
            let (k, _) = r.split_at_mut(dn * width);
            let F = faer::MatRef::from_column_major_slice(factor, dn, dn);
            matmul(slice_view_mut(k, dn), false, F, columns_view(u_next, dn, 0..width), T::one(), Par::Seq);
            matmul(slice_view_mut(k, dn), true, woodbury_e, slice_view(q, d), -T::one(), Par::Seq);
            for k_col in k.chunks_exact_mut(dn) {
                T::add_bias(k_col, shift);
            }
            matmul(slice_view_mut(out, d), false, W.transpose(), slice_view(k, dn), T::one(), Par::Seq);
            let inv_c = T::from_f64(1.0 / c);
            for (o, &qv) in out.iter_mut().zip(q) {
                *o += inv_c * qv;
            }
            // The next layer is narrow here, so W V is cheap to form: coupling explicitly
            let wv = &mut k[..dn * width];
            matmul(slice_view_mut(wv, dn), false, W, slice_view(out, d), T::one(), Par::Seq);
            let mut sum = 0.0;
            for (wv_col, u_col) in wv.chunks_exact(dn).zip(u_next.chunks_exact(dn)) {
                for ((&x, &u), &b) in wv_col.iter().zip(u_col).zip(block.b_next) {
                    sum += (u.to_f64() - b.to_f64() - x.to_f64()).powi(2);
                }
            }
            coupling_next_new = Coupling::Explicit(sum);
        }

        // Terms after the update, in one pass that also stores the result
        let out: &[T] = out;
        let reg_new = activation_penalty(block.reg, out);
        let after = finish_tile(tile, out, q1, skip_next.then_some(q2), q, forms_r.then_some(&r[..]), d);
        let [step, link_new, link_next_new, dot_q, dot_r, norm2] = after;
        // rho/2 ||U - b - W V||^2 = rho/2 ||U - b||^2 + (1/2 <V, A V> - <R, V>) + <Q, V> - c/2 ||V||^2,
        // and at the exact solution of A V = R, 1/2 <V, A V> - <R, V> = -1/2 <R, V>
        let coupling_next_new = match coupling_next_new {
            Coupling::Explicit(sum) => sum,
            Coupling::FromSolution => target_norm2 + 2.0 / rho * (-0.5 * dot_r + dot_q - 0.5 * c * norm2),
            Coupling::FromFista(quadratic) => target_norm2 + 2.0 / rho * (quadratic + dot_q - 0.5 * c * norm2),
        };
        partial(&[
            step,
            link_old,
            link_new,
            link_next_old,
            link_next_new,
            reg_old,
            reg_new,
            coupling_next_new,
            inner_iterations as f64,
        ])
    });
    let t = sum_partials(&ws.partials, grid.count());
    Ok(HiddenSums {
        step: t[0],
        link_old: t[1],
        link_new: t[2],
        link_next_old: t[3],
        link_next_new: t[4],
        reg_old: t[5],
        reg_new: t[6],
        coupling_next_new: t[7].max(0.0),
        inner_iterations: t[8] as usize,
    })
}

/// Source of `||U_{l+1} - b - W_{l+1} V_l||^2` after a tile of the activation update.
enum Coupling {
    /// Summed explicitly from `W V`.
    Explicit(f64),
    /// From the optimality of the exact solve `A V = R`.
    FromSolution,
    /// From FISTA's final value of `1/2 <V, A V> - <R, V>`.
    FromFista(f64),
}

/// `||U - b 1^T||^2` of a tile of columns of `bias.len()` rows.
fn shifted_norm2<T: Real>(u: &[T], bias: &[T]) -> f64 {
    u.chunks_exact(bias.len()).map(|column| T::dist2_activation(Activation::Linear, column, bias)).sum()
}

/// Forms `Q = gamma q1 + gamma_next q2` into `q` and `R += Q + shift` when `r` is given, in one
/// pass before the activation solve. Returns the link terms `[||V - q1||^2, ||q2 - V||^2]` at
/// the old `V` (the second is 0 without `q2`).
fn form_q<T: Real>(
    v: &[T],
    q1: &[T],
    q2: Option<&[T]>,
    q: &mut [T],
    r: Option<(&mut [T], &[T])>,
    rows: usize,
    (gamma, gamma_next): (T, T),
) -> [f64; 2] {
    // Without a skip on the next layer, q2 = V makes its term 0 and gamma_next = 0 drops it.
    let (q2, gamma_next) = match q2 {
        Some(q2) => (q2, gamma_next),
        None => (v, T::zero()),
    };
    let mut sums = [0.0; 2];
    let columns =
        q.chunks_exact_mut(rows).zip(v.chunks_exact(rows)).zip(q1.chunks_exact(rows)).zip(q2.chunks_exact(rows));
    for (((q, v), q1), q2) in columns {
        let [a, b] = T::activation_target(q, v, q1, q2, gamma, gamma_next);
        sums[0] += a;
        sums[1] += b;
    }
    if let Some((r, shift)) = r {
        for (r_col, q_col) in r.chunks_exact_mut(rows).zip(q.chunks_exact(rows)) {
            for ((x, &qv), &sv) in r_col.iter_mut().zip(q_col).zip(shift) {
                *x += qv + sv;
            }
        }
    }
    sums
}

/// Stores `out` into `v` in one pass after the activation solve and returns
/// `[||out - v_old||^2, ||out - q1||^2, ||q2 - out||^2, <Q, out>, <R, out>, ||out||^2]`. The
/// sums of an absent `q2` or `r` are meaningless.
fn finish_tile<T: Real>(
    v: &mut [T],
    out: &[T],
    q1: &[T],
    q2: Option<&[T]>,
    q: &[T],
    r: Option<&[T]>,
    rows: usize,
) -> [f64; 6] {
    let q2 = q2.unwrap_or(out);
    let r = r.unwrap_or(out);
    let mut sums = [0.0; 6];
    let columns = v
        .chunks_exact_mut(rows)
        .zip(out.chunks_exact(rows))
        .zip(q1.chunks_exact(rows))
        .zip(q2.chunks_exact(rows))
        .zip(q.chunks_exact(rows))
        .zip(r.chunks_exact(rows));
    for (((((v, out), q1), q2), q), r) in columns {
        let column = T::activation_finish(v, out, q1, q2, q, r);
        for (total, value) in sums.iter_mut().zip(column) {
            *total += value;
        }
    }
    sums
}

/// Largest eigenvalue of the symmetric matrix whose lower triangle is the leading
/// `dim x dim` block of `lower`, times a safety factor: a Lipschitz bound for FISTA. Power
/// iteration in `f64` on a fixed start vector; `scratch` needs `2 dim` entries.
fn largest_eigenvalue<T: Real>(lower: &[T], dim: usize, scratch: &mut [f64]) -> f64 {
    let (x, y) = scratch[..2 * dim].split_at_mut(dim);
    x.iter_mut().enumerate().for_each(|(i, v)| *v = 1.0 + (i % 7) as f64 * 0.1);
    let mut estimate = 0.0;
    for _ in 0..50 {
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        x.iter_mut().for_each(|v| *v /= norm);
        y.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..dim {
            for i in j..dim {
                let a = lower[i + j * dim].to_f64();
                y[i] += a * x[j];
                if i != j {
                    y[j] += a * x[i];
                }
            }
        }
        estimate = x.iter().zip(y.iter()).map(|(a, b)| a * b).sum::<f64>();
        x.copy_from_slice(y);
    }
    // Power iteration approaches lambda_max from below; a margin keeps the step safe, and
    // FISTA's monotone acceptance guards the rest.
    1.05 * estimate + 1e-12
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
