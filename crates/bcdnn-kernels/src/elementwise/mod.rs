//! Fused elementwise steps of a BCD iteration, one matrix column at a time.
//!
//! Every step reads and writes each entry once and accumulates, in the same pass, the
//! objective terms and the squared step length `||P^k - P^{k-1}||^2` that the trainer reports.
//! Partial sums come back as `f64`. Every kernel has a plain scalar version in [`scalar`],
//! which is the reference the SIMD versions are tested against.
//!
//! A column of a `d x n` state matrix is one sample; `bias` vectors have length `d` and are
//! broadcast over columns without being materialised.

pub mod scalar;
pub mod simd;

#[cfg(test)]
mod tests;

/// Partial sums returned by a pre-activation (`U`) update of one column.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct USums {
    /// `||U_old - P||^2` with `P = W V + b` computed from the previous iterate: the coupling
    /// term of the objective at the previous iterate, before the `rho / 2` factor.
    pub coupling_old: f64,
    /// `||U_new - P||^2`: the coupling term at the new iterate, before the `rho / 2` factor.
    pub coupling_new: f64,
    /// `||a - sigma(U_old)||^2`: the activation coupling term at the previous iterate, before
    /// the `gamma / 2` factor. In the output layer `sigma` is the identity and `a = V_N`.
    pub link_old: f64,
    /// `||a - sigma(U_new)||^2`: the activation coupling term at the new iterate, before the
    /// `gamma / 2` factor.
    pub link_new: f64,
    /// `||U_new - U_old||^2`.
    pub step: f64,
}

impl USums {
    pub fn add(&mut self, other: USums) {
        self.coupling_old += other.coupling_old;
        self.coupling_new += other.coupling_new;
        self.link_old += other.link_old;
        self.link_new += other.link_new;
        self.step += other.step;
    }
}

/// Partial sums returned by the squared-loss output activation (`V_N`) update of one column.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutputVSums {
    /// `||V_old - Y||^2`, before the `w/2` factor of the squared loss.
    pub residual_old: f64,
    /// `||V_new - Y||^2`, before the `w/2` factor of the squared loss.
    pub residual_new: f64,
    /// `||V_old - U||^2`.
    pub dist_old: f64,
    /// `||V_new - U||^2`.
    pub dist_new: f64,
    /// `||V_new - V_old||^2`.
    pub step: f64,
}

impl OutputVSums {
    pub fn add(&mut self, other: OutputVSums) {
        self.residual_old += other.residual_old;
        self.residual_new += other.residual_new;
        self.dist_old += other.dist_old;
        self.dist_new += other.dist_new;
        self.step += other.step;
    }
}

/// Elementwise kernels for one scalar type. `f64` runs the scalar references in [`scalar`];
/// `f32` runs the SIMD versions in [`simd`], dispatched to the instruction set detected at run
/// time, except on columns shorter than [`simd::MIN_SIMD_LEN`].
///
/// Slices passed together must have equal lengths (checked by `debug_assert!` in the scalar
/// versions and by `assert!` in the SIMD versions).
pub trait Elementwise: Sized + Copy {
    /// `dst = max(src, 0)`.
    fn relu(dst: &mut [Self], src: &[Self]);

    /// `x = max(x + bias, 0)`: the hidden-layer epilogue of the plain forward pass.
    fn add_bias_relu(x: &mut [Self], bias: &[Self]);

    /// `x = x + bias`: the output-layer epilogue of the plain forward pass.
    fn add_bias(x: &mut [Self], bias: &[Self]);

    /// Output activation update for the squared loss `w/2 ||v - y||^2` with one-hot target
    /// `y = e_label` (no target row if `label >= v.len()`):
    /// `v = (w y + gamma u + alpha v) / (w + gamma + alpha)`.
    fn output_v_step(v: &mut [Self], u: &[Self], label: usize, weight: Self, gamma: Self, alpha: Self) -> OutputVSums;

    /// Output pre-activation update `u = (gamma v + rho (p + bias)) / (gamma + rho)`, where `p`
    /// contains `W_N V_{N-1}` for this column. `link_old` is `||v - u_old||^2` and `link_new`
    /// is `||v - u_new||^2`.
    fn output_u_step(u: &mut [Self], p: &[Self], bias: &[Self], v: &[Self], gamma: Self, rho: Self) -> USums;

    /// Hidden ReLU pre-activation update. With `P = p + bias` and
    /// `B = (rho P + alpha u_old) / (rho + alpha)`, each entry becomes
    /// `argmin_u 1/2 (relu(u) - a)^2 + g/2 (u - B)^2` with `g = (rho + alpha) / gamma`.
    fn hidden_u_step_relu(
        u: &mut [Self],
        p: &[Self],
        bias: &[Self],
        a: &[Self],
        rho: Self,
        alpha: Self,
        gamma: Self,
    ) -> USums;

    /// `dst = scale * max(u, 0)`.
    fn scaled_relu(dst: &mut [Self], u: &[Self], scale: Self);

    /// `acc = acc + scale * max(u, 0) + shift`.
    fn add_scaled_relu_shift(acc: &mut [Self], u: &[Self], scale: Self, shift: &[Self]);

    /// `v = x`; returns `||x - v_old||^2`.
    fn assign_with_step(v: &mut [Self], x: &[Self]) -> f64;

    /// `v = x + beta y`; returns `||v_new - v_old||^2`.
    fn combine_with_step(v: &mut [Self], x: &[Self], y: &[Self], beta: Self) -> f64;

    /// Column pass before the activation update's solve: `q = gamma q1 + gamma_next q2`, and
    /// returns `[||v - q1||^2, ||q2 - v||^2]` at the old activations `v`.
    fn activation_target(
        q: &mut [Self],
        v: &[Self],
        q1: &[Self],
        q2: &[Self],
        gamma: Self,
        gamma_next: Self,
    ) -> [f64; 2];

    /// Column pass after the activation update's solve: `v = out`, and returns
    /// `[||out - v_old||^2, ||out - q1||^2, ||q2 - out||^2, <q, out>, <r, out>, ||out||^2]`.
    fn activation_finish(v: &mut [Self], out: &[Self], q1: &[Self], q2: &[Self], q: &[Self], r: &[Self]) -> [f64; 6];

    /// [`Elementwise::output_v_step`] on every column of a tile: `v` and `u` hold
    /// `labels.len()` columns of `rows` entries. Returns the sums over the tile.
    fn output_v_step_tile(
        v: &mut [Self],
        u: &[Self],
        labels: &[u8],
        rows: usize,
        weight: Self,
        gamma: Self,
        alpha: Self,
    ) -> OutputVSums {
        let mut total = OutputVSums::default();
        for ((v, u), &label) in v.chunks_exact_mut(rows.max(1)).zip(u.chunks_exact(rows.max(1))).zip(labels) {
            total.add(Self::output_v_step(v, u, label as usize, weight, gamma, alpha));
        }
        total
    }

    /// [`Elementwise::output_u_step`] on every column of a tile: `u`, `p` and `v` hold
    /// columns of `bias.len()` entries. Returns the sums over the tile.
    fn output_u_step_tile(u: &mut [Self], p: &[Self], bias: &[Self], v: &[Self], gamma: Self, rho: Self) -> USums {
        let rows = bias.len().max(1);
        let mut total = USums::default();
        for ((u, p), v) in u.chunks_exact_mut(rows).zip(p.chunks_exact(rows)).zip(v.chunks_exact(rows)) {
            total.add(Self::output_u_step(u, p, bias, v, gamma, rho));
        }
        total
    }
}

/// Index of the largest entry (the first one on ties); 0 for an empty slice.
pub fn argmax<T: PartialOrd + Copy>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in values.iter().enumerate() {
        if x > values[best] {
            best = i;
        }
    }
    best
}

macro_rules! scalar_elementwise_impl {
    ($t:ty) => {
        impl Elementwise for $t {
            fn relu(dst: &mut [Self], src: &[Self]) {
                scalar::relu(dst, src)
            }
            fn add_bias_relu(x: &mut [Self], bias: &[Self]) {
                scalar::add_bias_relu(x, bias)
            }
            fn add_bias(x: &mut [Self], bias: &[Self]) {
                scalar::add_bias(x, bias)
            }
            fn output_v_step(
                v: &mut [Self],
                u: &[Self],
                label: usize,
                weight: Self,
                gamma: Self,
                alpha: Self,
            ) -> OutputVSums {
                scalar::output_v_step(v, u, label, weight, gamma, alpha)
            }
            fn output_u_step(u: &mut [Self], p: &[Self], bias: &[Self], v: &[Self], gamma: Self, rho: Self) -> USums {
                scalar::output_u_step(u, p, bias, v, gamma, rho)
            }
            fn hidden_u_step_relu(
                u: &mut [Self],
                p: &[Self],
                bias: &[Self],
                a: &[Self],
                rho: Self,
                alpha: Self,
                gamma: Self,
            ) -> USums {
                scalar::hidden_u_step_relu(u, p, bias, a, rho, alpha, gamma)
            }
            fn scaled_relu(dst: &mut [Self], u: &[Self], scale: Self) {
                scalar::scaled_relu(dst, u, scale)
            }
            fn add_scaled_relu_shift(acc: &mut [Self], u: &[Self], scale: Self, shift: &[Self]) {
                scalar::add_scaled_relu_shift(acc, u, scale, shift)
            }
            fn assign_with_step(v: &mut [Self], x: &[Self]) -> f64 {
                scalar::assign_with_step(v, x)
            }
            fn combine_with_step(v: &mut [Self], x: &[Self], y: &[Self], beta: Self) -> f64 {
                scalar::combine_with_step(v, x, y, beta)
            }
            fn activation_target(
                q: &mut [Self],
                v: &[Self],
                q1: &[Self],
                q2: &[Self],
                gamma: Self,
                gamma_next: Self,
            ) -> [f64; 2] {
                scalar::activation_target(q, v, q1, q2, gamma, gamma_next)
            }
            fn activation_finish(
                v: &mut [Self],
                out: &[Self],
                q1: &[Self],
                q2: &[Self],
                q: &[Self],
                r: &[Self],
            ) -> [f64; 6] {
                scalar::activation_finish(v, out, q1, q2, q, r)
            }
        }
    };
}

scalar_elementwise_impl!(f64);

impl Elementwise for f32 {
    fn relu(dst: &mut [Self], src: &[Self]) {
        simd::relu(dst, src)
    }
    fn add_bias_relu(x: &mut [Self], bias: &[Self]) {
        simd::add_bias_relu(x, bias)
    }
    fn add_bias(x: &mut [Self], bias: &[Self]) {
        simd::add_bias(x, bias)
    }
    fn output_v_step(v: &mut [Self], u: &[Self], label: usize, weight: Self, gamma: Self, alpha: Self) -> OutputVSums {
        simd::output_v_step(v, u, label, weight, gamma, alpha)
    }
    fn output_v_step_tile(
        v: &mut [Self],
        u: &[Self],
        labels: &[u8],
        rows: usize,
        weight: Self,
        gamma: Self,
        alpha: Self,
    ) -> OutputVSums {
        simd::output_v_step_tile(v, u, labels, rows, weight, gamma, alpha)
    }
    fn output_u_step_tile(u: &mut [Self], p: &[Self], bias: &[Self], v: &[Self], gamma: Self, rho: Self) -> USums {
        simd::output_u_step_tile(u, p, bias, v, gamma, rho)
    }
    fn output_u_step(u: &mut [Self], p: &[Self], bias: &[Self], v: &[Self], gamma: Self, rho: Self) -> USums {
        simd::output_u_step(u, p, bias, v, gamma, rho)
    }
    fn hidden_u_step_relu(
        u: &mut [Self],
        p: &[Self],
        bias: &[Self],
        a: &[Self],
        rho: Self,
        alpha: Self,
        gamma: Self,
    ) -> USums {
        simd::hidden_u_step_relu(u, p, bias, a, rho, alpha, gamma)
    }
    fn scaled_relu(dst: &mut [Self], u: &[Self], scale: Self) {
        simd::scaled_relu(dst, u, scale)
    }
    fn add_scaled_relu_shift(acc: &mut [Self], u: &[Self], scale: Self, shift: &[Self]) {
        simd::add_scaled_relu_shift(acc, u, scale, shift)
    }
    fn assign_with_step(v: &mut [Self], x: &[Self]) -> f64 {
        simd::assign_with_step(v, x)
    }
    fn combine_with_step(v: &mut [Self], x: &[Self], y: &[Self], beta: Self) -> f64 {
        simd::combine_with_step(v, x, y, beta)
    }
    fn activation_target(
        q: &mut [Self],
        v: &[Self],
        q1: &[Self],
        q2: &[Self],
        gamma: Self,
        gamma_next: Self,
    ) -> [f64; 2] {
        simd::activation_target(q, v, q1, q2, gamma, gamma_next)
    }
    fn activation_finish(v: &mut [Self], out: &[Self], q1: &[Self], q2: &[Self], q: &[Self], r: &[Self]) -> [f64; 6] {
        simd::activation_finish(v, out, q1, q2, q, r)
    }
}
