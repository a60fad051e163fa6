//! The exact scalar proximal step of every hidden activation, in `f64`.
//!
//! It minimises `f(u) = 1/2 (sigma(u) - a)^2 + g/2 (u - b)^2` over all real `u`, for `g > 0`:
//!
//! - Linear: `u = (a + g b) / (1 + g)`.
//! - ReLU and leaky ReLU: the best of three candidates, see
//!   [`crate::elementwise::scalar::prox_leaky_relu`].
//! - Sigmoid, tanh and softplus: every stationary point lies in a bracket `[low, high]`
//!   derived from bounds on `sigma` and `sigma'` ([`bracket`]). Where `f` is provably strictly
//!   convex on the bracket, safeguarded Newton finds its single stationary point. Otherwise a
//!   local minimiser from the centre is kept if `f'' > 0` on the region where any point with a
//!   smaller or equal `f` lies ([`improvement_region`]). Failing that, every sign change of
//!   `f'` on a subdivision of that region is refined to a root and the candidate with the
//!   smallest `f` wins.

use crate::model::Activation;

use crate::elementwise::scalar::prox_leaky_relu;

/// Maximum iterations of safeguarded Newton. Each iteration either takes a Newton step inside
/// the bracket or halves the bracket, so a run of bisections alone shrinks it by `2^200`.
const MAX_NEWTON_ITERATIONS: usize = 200;

/// Width of the subintervals of the region where `f` may be non-convex. `sigma''` and
/// `sigma'''` change on a scale of about 1 in `u` for sigmoid, tanh and softplus, so two roots
/// of `f'` closer than this would need `f''` to change sign twice within it.
const SUBDIVISION_WIDTH: f64 = 1.0 / 32.0;

/// Maximum number of subintervals of the non-convex region, a guard against wide regions.
const MAX_SUBINTERVALS: usize = 16_384;

/// Returns the global minimiser of `f(u) = 1/2 (sigma(u) - a)^2 + g/2 (u - b)^2` for `g > 0`.
///
/// ReLU and leaky ReLU may have two minimisers with equal `f`; either may be returned. A NaN
/// input gives NaN. Infinite `a` or `b` are outside the contract.
pub fn prox(act: Activation, a: f64, b: f64, g: f64) -> f64 {
    debug_assert!(g > 0.0, "prox: g = {g} must be positive");
    match act {
        Activation::Linear => (a + g * b) / (1.0 + g),
        Activation::Relu => prox_leaky_relu(a, b, g, 0.0),
        Activation::LeakyRelu { slope } => prox_leaky_relu(a, b, g, slope),
        Activation::Sigmoid | Activation::Tanh | Activation::Softplus => prox_smooth(act, a, b, g),
    }
}

/// Evaluates `f(u) = 1/2 (sigma(u) - a)^2 + g/2 (u - b)^2`.
pub fn prox_objective(act: Activation, a: f64, b: f64, g: f64, u: f64) -> f64 {
    let link = act.value(u) - a;
    0.5 * link * link + 0.5 * g * (u - b) * (u - b)
}

/// `f'(u) = (sigma(u) - a) sigma'(u) + g (u - b)` and `f''(u) = sigma'^2 + (sigma - a) sigma'' + g`.
fn derivatives(act: Activation, a: f64, b: f64, g: f64, u: f64) -> (f64, f64) {
    let link = act.value(u) - a;
    let slope = act.derivative(u);
    let first = link * slope + g * (u - b);
    let second = slope * slope + link * act.second_derivative(u) + g;
    (first, second)
}

/// Bounds of a smooth activation used by the bracket and the convexity test.
struct SmoothBounds {
    /// `sup sigma'` over the real line.
    max_slope: f64,
    /// `sup |sigma''|` over the real line.
    max_curvature: f64,
    /// `c` and `k` with `|sigma''(u)| <= c exp(-k |u|)` for all `u`.
    curvature_scale: f64,
    curvature_decay: f64,
}

fn smooth_bounds(act: Activation) -> SmoothBounds {
    match act {
        // sigma'' = sigma' (1 - 2 sigma) with |1 - 2 sigma| < 1 and sigma' <= exp(-|u|).
        // The maximum of |sigma''| is 1 / (6 sqrt 3) at u = ln(2 +- sqrt 3).
        Activation::Sigmoid => SmoothBounds {
            max_slope: 0.25,
            max_curvature: 0.096_225_044_864_937_64,
            curvature_scale: 1.0,
            curvature_decay: 1.0,
        },
        // tanh'' = -2 tanh sech^2 with sech^2 <= 4 exp(-2 |u|). The maximum of |tanh''| is
        // 4 / (3 sqrt 3) at u = atanh(1 / sqrt 3).
        Activation::Tanh => SmoothBounds {
            max_slope: 1.0,
            max_curvature: 0.769_800_358_919_501_2,
            curvature_scale: 8.0,
            curvature_decay: 2.0,
        },
        // softplus'' = sigmoid' <= min(1/4, exp(-|u|)), and softplus' = sigmoid < 1.
        Activation::Softplus => {
            SmoothBounds { max_slope: 1.0, max_curvature: 0.25, curvature_scale: 1.0, curvature_decay: 1.0 }
        }
        _ => unreachable!("smooth_bounds: {} is not a smooth activation", act.name()),
    }
}

/// Returns `[low, high]` containing every stationary point of `f`, and `sup |sigma - a|` over
/// it.
///
/// At a stationary point `g (u - b) = (a - sigma(u)) sigma'(u)`.
///
/// - Sigmoid and tanh are bounded, so `|u - b| <= M / g` with
///   `M = sup |sigma - a| sup sigma'`, where `sup |sigma - a|` is taken over the range of sigma.
/// - Softplus is unbounded above but `sigma >= 0` and `0 < sigma' < 1`. Then
///   `(a - sigma) sigma' <= max(a, 0)`, so `u <= high = b + max(a, 0) / g`. Below `high`,
///   `sigma(u) sigma'(u) <= sigma(high)` because sigma increases and `sigma' < 1`, so
///   `(a - sigma) sigma' >= min(a, 0) - sigma(high)` and
///   `u >= low = b - (sigma(high) - min(a, 0)) / g`. Softplus increases, so
///   `sup |sigma - a|` over `[low, high]` is attained at an end.
pub fn bracket(act: Activation, a: f64, b: f64, g: f64) -> (f64, f64, f64) {
    match act {
        Activation::Sigmoid | Activation::Tanh => {
            let (range_low, range_high) = if act == Activation::Sigmoid { (0.0, 1.0) } else { (-1.0, 1.0) };
            let max_link = (a - range_low).abs().max((range_high - a).abs());
            let radius = max_link * smooth_bounds(act).max_slope / g;
            (b - radius, b + radius, max_link)
        }
        Activation::Softplus => {
            let high = b + a.max(0.0) / g;
            let low = b - (act.value(high) - a.min(0.0)) / g;
            let max_link = (act.value(low) - a).abs().max((act.value(high) - a).abs());
            (low, high, max_link)
        }
        _ => unreachable!("bracket: {} is not a smooth activation", act.name()),
    }
}

/// Returns whether `f'' > 0` on the whole real line, from `f'' >= g - sup |sigma''| sup |sigma - a|`.
pub fn provably_convex(act: Activation, g: f64, max_link: f64) -> bool {
    g > smooth_bounds(act).max_curvature * max_link
}

fn prox_smooth(act: Activation, a: f64, b: f64, g: f64) -> f64 {
    if a.is_nan() || b.is_nan() || g.is_nan() {
        return f64::NAN;
    }
    let (low, high, max_link) = bracket(act, a, b, g);
    if provably_convex(act, g, max_link) {
        return safeguarded_newton(act, a, b, g, low, high, b.clamp(low, high));
    }
    // A local minimiser from the centre, kept if it is certified global. Otherwise its value
    // still narrows the region that the exhaustive search has to scan.
    let candidate = local_minimiser(act, a, b, g, low, high);
    let region = improvement_region(act, a, b, g, low, high, candidate);
    if region.is_convex(g) {
        return candidate;
    }
    let best = global_minimum(act, a, b, g, region.low, region.high, max_link);
    if prox_objective(act, a, b, g, candidate) <= prox_objective(act, a, b, g, best) {
        candidate
    } else {
        best
    }
}

/// An interval that contains every global minimiser of `f`, with bounds on `sigma - a` and
/// `sigma''` over it.
pub struct ImprovementRegion {
    pub low: f64,
    pub high: f64,
    /// `[min, max]` of `sigma - a` over the points of the interval with `f <= f(u)`.
    pub link: (f64, f64),
    /// `[min, max]` of `sigma''` over the interval.
    pub curvature: (f64, f64),
}

impl ImprovementRegion {
    /// Returns whether `f'' = sigma'^2 + (sigma - a) sigma'' + g > 0` holds on the region, from
    /// `f'' >= g + min (sigma - a) sigma''` and the product of the two ranges. The margin of
    /// `2^-20` of the terms covers the rounding of the bounds.
    pub fn is_convex(&self, g: f64) -> bool {
        let (link_low, link_high) = self.link;
        let (curvature_low, curvature_high) = self.curvature;
        let lowest = (link_low * curvature_low)
            .min(link_low * curvature_high)
            .min(link_high * curvature_low)
            .min(link_high * curvature_high);
        g + lowest > (g + lowest.abs()) * (1.0 / 1_048_576.0)
    }
}

/// Returns the region where any point with `f` at most `f(u)` lies, for a `u` in the bracket
/// `[low, high]`.
///
/// Let `v` be a global minimiser, so `f(v) <= f(u) = F`. Both terms of `f` are non-negative,
/// so `|v - b| <= sqrt(2 F / g)` and `|sigma(v) - a| <= sqrt(2 F)`, and `v` is a stationary
/// point, so it lies in `[low, high]`. Sigma is monotone, so on the segment between `u` and
/// `v` the link `sigma - a` stays between its values at the ends, within `sqrt(2 F)` of 0.
/// If `f'' > 0` on that segment ([`ImprovementRegion::is_convex`]), `f'` increases on it and
/// has at most one root there, so a stationary `u` is the global minimiser.
pub fn improvement_region(act: Activation, a: f64, b: f64, g: f64, low: f64, high: f64, u: f64) -> ImprovementRegion {
    // The factor covers the rounding of F, so that the region only grows.
    let value = prox_objective(act, a, b, g, u) * (1.0 + 1e-9);
    let radius = (2.0 * value / g).sqrt();
    let max_link = (2.0 * value).sqrt();
    let region_low = low.max(b - radius).min(u);
    let region_high = high.min(b + radius).max(u);
    let link = ((act.value(region_low) - a).max(-max_link), (act.value(region_high) - a).min(max_link));
    let curvature = curvature_range(act, region_low, region_high);
    ImprovementRegion { low: region_low, high: region_high, link, curvature }
}

/// Returns `[min, max]` of `sigma''` over `[low, high]`.
///
/// Each `sigma''` is a polynomial in a monotone function `s` of `u`, so its extremes lie at
/// the ends or at the critical points of the polynomial inside the interval:
///
/// - tanh: `s = tanh u`, `sigma'' = -2 s (1 - s^2)`, critical at `s = +-1/sqrt 3`.
/// - sigmoid: `s = sigmoid u`, `sigma'' = s (1 - s) (1 - 2 s)`, critical at
///   `s = 1/2 +- sqrt(3) / 6`.
/// - softplus: `s = sigmoid u`, `sigma'' = s (1 - s)`, critical at `s = 1/2`.
pub fn curvature_range(act: Activation, low: f64, high: f64) -> (f64, f64) {
    let (at_low, at_high) = (act.second_derivative(low), act.second_derivative(high));
    let (mut min, mut max) = (at_low.min(at_high), at_low.max(at_high));
    let crosses = |s_low: f64, s_high: f64, s: f64| s_low < s && s < s_high;
    match act {
        Activation::Tanh => {
            let (s_low, s_high) = (low.tanh(), high.tanh());
            let critical = 1.0 / 3f64.sqrt();
            let extreme = smooth_bounds(act).max_curvature;
            if crosses(s_low, s_high, critical) {
                min = -extreme;
            }
            if crosses(s_low, s_high, -critical) {
                max = extreme;
            }
        }
        Activation::Sigmoid => {
            let (s_low, s_high) = (act.value(low), act.value(high));
            let offset = 3f64.sqrt() / 6.0;
            let extreme = smooth_bounds(act).max_curvature;
            if crosses(s_low, s_high, 0.5 + offset) {
                min = -extreme;
            }
            if crosses(s_low, s_high, 0.5 - offset) {
                max = extreme;
            }
        }
        Activation::Softplus => {
            if low < 0.0 && 0.0 < high {
                max = 0.25;
            }
        }
        _ => unreachable!("curvature_range: {} is not a smooth activation", act.name()),
    }
    (min, max)
}

/// Returns a local minimiser of `f` in `[low, high]` from safeguarded Newton started at `b`.
/// Where `f'' <= 0` it bisects, keeping `f'(low) <= 0 <= f'(high)`.
fn local_minimiser(act: Activation, a: f64, b: f64, g: f64, low: f64, high: f64) -> f64 {
    let (low_first, high_first) = (derivatives(act, a, b, g, low).0, derivatives(act, a, b, g, high).0);
    if low_first >= 0.0 {
        return low;
    }
    if high_first <= 0.0 {
        return high;
    }
    refine_root_from(act, a, b, g, low, high, b.clamp(low, high))
}

/// Finds the root of the increasing `f'` on `[low, high]`, where `f'(low) <= 0 <= f'(high)`,
/// by Newton steps from `start`, falling back to bisection whenever a step leaves the bracket.
fn safeguarded_newton(act: Activation, a: f64, b: f64, g: f64, mut low: f64, mut high: f64, start: f64) -> f64 {
    let mut u = start;
    for _ in 0..MAX_NEWTON_ITERATIONS {
        let (first, second) = derivatives(act, a, b, g, u);
        if first == 0.0 {
            return u;
        }
        if first > 0.0 {
            high = u;
        } else {
            low = u;
        }
        let newton = u - first / second;
        // A Newton step that rounds to no change means convergence, also where u is a bracket end.
        if newton == u {
            return u;
        }
        let next = if newton > low && newton < high { newton } else { 0.5 * (low + high) };
        if next == u {
            return u;
        }
        let step = (next - u).abs();
        u = next;
        if step <= 4.0 * f64::EPSILON * u.abs() || high - low <= 4.0 * f64::EPSILON * u.abs() {
            return u;
        }
    }
    u
}

/// Finds every local minimiser of `f` in `[low, high]` and returns the one with the smallest
/// `f` (the bracket ends and subdivision points are candidates too).
///
/// `f'' >= g - |sigma - a| |sigma''| > 0` wherever `|sigma''(u)| < g / max_link`, which holds
/// for `|u| > radius` with `radius = ln(c max_link / g) / k` by `|sigma''| <= c exp(-k |u|)`.
/// Outside `[-radius, radius]` `f'` increases, so each outer piece of the bracket has at most
/// one root and its end points detect it. The inner part is cut into subintervals of width at
/// most [`SUBDIVISION_WIDTH`].
fn global_minimum(act: Activation, a: f64, b: f64, g: f64, low: f64, high: f64, max_link: f64) -> f64 {
    let bounds = smooth_bounds(act);
    let radius = ((bounds.curvature_scale * max_link / g).ln() / bounds.curvature_decay).max(0.0);
    let inner_low = low.max(-radius);
    let inner_high = high.min(radius);

    // NOTE: two roots of f' inside one subinterval, with no sign change at its ends, are not
    // detected. The subinterval's end points still bound f there to within the resolution.
    let mut points = Vec::with_capacity(64);
    points.push(low);
    if inner_low < inner_high {
        let count = ((inner_high - inner_low) / SUBDIVISION_WIDTH).ceil().clamp(1.0, MAX_SUBINTERVALS as f64) as usize;
        let width = (inner_high - inner_low) / count as f64;
        for i in 0..=count {
            points.push(inner_low + i as f64 * width);
        }
    }
    points.push(high);

    let mut best = low;
    let mut best_value = prox_objective(act, a, b, g, low);
    let mut consider = |u: f64| {
        let value = prox_objective(act, a, b, g, u);
        if value < best_value {
            best = u;
            best_value = value;
        }
    };

    let mut previous = (low, derivatives(act, a, b, g, low).0);
    for &x in &points[1..] {
        if x < previous.0 {
            continue;
        }
        let first = derivatives(act, a, b, g, x).0;
        // A local minimiser lies where f' changes from negative to positive.
        if previous.1 < 0.0 && first > 0.0 {
            consider(refine_root(act, a, b, g, previous.0, x));
        }
        consider(x);
        previous = (x, first);
    }
    best
}

/// Refines a root of `f'` in `[low, high]` with `f'(low) < 0 < f'(high)`: Newton steps that
/// stay inside the shrinking bracket, bisection otherwise.
fn refine_root(act: Activation, a: f64, b: f64, g: f64, low: f64, high: f64) -> f64 {
    refine_root_from(act, a, b, g, low, high, 0.5 * (low + high))
}

/// [`refine_root`] from the start point `start` in `[low, high]`.
fn refine_root_from(act: Activation, a: f64, b: f64, g: f64, mut low: f64, mut high: f64, start: f64) -> f64 {
    let mut u = start;
    for _ in 0..MAX_NEWTON_ITERATIONS {
        let (first, second) = derivatives(act, a, b, g, u);
        if first == 0.0 {
            return u;
        }
        if first > 0.0 {
            high = u;
        } else {
            low = u;
        }
        let newton = u - first / second;
        if second > 0.0 && newton == u {
            return u;
        }
        let next = if second > 0.0 && newton > low && newton < high { newton } else { 0.5 * (low + high) };
        if next == u {
            return u;
        }
        let step = (next - u).abs();
        u = next;
        if step <= 4.0 * f64::EPSILON * u.abs() || high - low <= 4.0 * f64::EPSILON * u.abs() {
            return u;
        }
    }
    u
}
