//! The model options of `bcdnn train` (activations, loss, regularisers, skips, splitting,
//! order) and the TOML file that can hold any `train` option.
//!
//! Per-layer options take one value for every layer (`tanh`) or groups of `LAYERS=VALUE`
//! separated by `;`. `LAYERS` is a 1-based layer, a range `2-9` or a list `2,4`. Groups apply
//! in order, so `relu;10=tanh` sets every layer to ReLU and then layer 10 to tanh.

use anyhow::{bail, Context, Result};
use bcdnn::{
    Activation, ActivationRegulariser, Algorithm, Block, ConfigBuilder, InnerSolve, Loss, LossScale, UpdateOrder,
    WeightRegulariser,
};
use std::ffi::OsString;
use std::path::Path;

/// Parses a finite number, naming the option in the error.
fn number(text: &str, what: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("'{text}' is not a number ({what})"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{what} is {value}; give a finite number"))
    }
}

/// `relu`, `leaky-relu[:SLOPE]` (slope 0.01 by default), `sigmoid`, `tanh`, `softplus`,
/// `linear`.
pub fn parse_activation(text: &str) -> Result<Activation, String> {
    let text = text.trim();
    let (name, argument) = text.split_once(':').map_or((text, None), |(n, a)| (n, Some(a)));
    let plain = |activation| match argument {
        None => Ok(activation),
        Some(_) => Err(format!("activation '{name}' takes no parameter, but '{text}' gives one")),
    };
    match name.to_ascii_lowercase().as_str() {
        "relu" => plain(Activation::Relu),
        "leaky-relu" | "leaky" => {
            let slope = argument.map_or(Ok(0.01), |a| number(a, "leaky ReLU slope"))?;
            Ok(Activation::LeakyRelu { slope })
        }
        "sigmoid" => plain(Activation::Sigmoid),
        "tanh" => plain(Activation::Tanh),
        "softplus" => plain(Activation::Softplus),
        "linear" | "identity" => plain(Activation::Linear),
        _ => {
            Err(format!("unknown activation '{name}'; use relu, leaky-relu[:SLOPE], sigmoid, tanh, softplus or linear"))
        }
    }
}

/// `squared`, `hinge`, `cross-entropy`, `logistic`.
pub fn parse_loss(text: &str) -> Result<Loss, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "squared" | "square" | "mse" => Ok(Loss::Squared),
        "hinge" => Ok(Loss::Hinge),
        "cross-entropy" | "crossentropy" | "softmax" => Ok(Loss::CrossEntropy),
        "logistic" => Ok(Loss::Logistic),
        other => Err(format!("unknown loss '{other}'; use squared, hinge, cross-entropy or logistic")),
    }
}

/// `sum` or `mean`.
pub fn parse_loss_scale(text: &str) -> Result<LossScale, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "sum" => Ok(LossScale::Sum),
        "mean" => Ok(LossScale::Mean),
        other => Err(format!("unknown loss scale '{other}'; use sum or mean")),
    }
}

/// `three` or `two` (also `three-splitting`, `two-splitting`).
pub fn parse_splitting(text: &str) -> Result<Algorithm, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "three" | "three-splitting" | "3" => Ok(Algorithm::ThreeSplitting),
        "two" | "two-splitting" | "2" => Ok(Algorithm::TwoSplitting),
        other => Err(format!("unknown splitting '{other}'; use three or two")),
    }
}

/// Splits `KIND:A,B` into the kind and its numbers. Box bounds may be `inf` or `-inf`.
fn kind_and_numbers<'t>(text: &'t str, what: &str) -> Result<(&'t str, Vec<f64>), String> {
    let text = text.trim();
    match text.split_once(':') {
        None => Ok((text, Vec::new())),
        Some((kind, args)) => {
            let bound = kind.trim().eq_ignore_ascii_case("box");
            let parse = |a: &str| -> Result<f64, String> {
                match a.trim().to_ascii_lowercase().as_str() {
                    "inf" | "+inf" if bound => Ok(f64::INFINITY),
                    "-inf" if bound => Ok(f64::NEG_INFINITY),
                    _ => number(a, what),
                }
            };
            let numbers = args.split(',').map(parse).collect::<Result<Vec<_>, _>>()?;
            Ok((kind, numbers))
        }
    }
}

fn expect_count(kind: &str, numbers: &[f64], count: usize, form: &str) -> Result<(), String> {
    let noun = if count == 1 { "number" } else { "numbers" };
    if numbers.len() == count {
        Ok(())
    } else {
        Err(format!("regulariser '{kind}' takes {count} {noun}, as in {form}, but {} given", numbers.len()))
    }
}

/// `none`, `l2:LAMBDA`, `l1:LAMBDA`, `elastic:L1,L2`, `nonneg`, `box:LOWER,UPPER`.
pub fn parse_weight_reg(text: &str) -> Result<WeightRegulariser, String> {
    let (kind, n) = kind_and_numbers(text, "weight regulariser parameter")?;
    Ok(match kind.to_ascii_lowercase().as_str() {
        "none" => {
            expect_count(kind, &n, 0, "none")?;
            WeightRegulariser::None
        }
        "l2" => {
            expect_count(kind, &n, 1, "l2:1e-4")?;
            WeightRegulariser::L2 { lambda: n[0] }
        }
        "l1" => {
            expect_count(kind, &n, 1, "l1:1e-5")?;
            WeightRegulariser::L1 { lambda: n[0] }
        }
        "elastic" | "elastic-net" => {
            expect_count(kind, &n, 2, "elastic:1e-5,1e-4")?;
            WeightRegulariser::ElasticNet { l1: n[0], l2: n[1] }
        }
        "nonneg" | "nonnegative" => {
            expect_count(kind, &n, 0, "nonneg")?;
            WeightRegulariser::NonNegative
        }
        "box" => {
            expect_count(kind, &n, 2, "box:-1,1 (bounds may be inf or -inf)")?;
            WeightRegulariser::Box { lower: n[0], upper: n[1] }
        }
        other => {
            return Err(format!(
                "unknown weight regulariser '{other}'; use none, l2:LAMBDA, l1:LAMBDA, elastic:L1,L2, nonneg or box:LOWER,UPPER"
            ))
        }
    })
}

/// `none`, `l1:LAMBDA`, `nonneg`, `box:LOWER,UPPER`.
pub fn parse_activation_reg(text: &str) -> Result<ActivationRegulariser, String> {
    let (kind, n) = kind_and_numbers(text, "activation regulariser parameter")?;
    Ok(match kind.to_ascii_lowercase().as_str() {
        "none" => {
            expect_count(kind, &n, 0, "none")?;
            ActivationRegulariser::None
        }
        "l1" => {
            expect_count(kind, &n, 1, "l1:1e-4")?;
            ActivationRegulariser::L1 { lambda: n[0] }
        }
        "nonneg" | "nonnegative" => {
            expect_count(kind, &n, 0, "nonneg")?;
            ActivationRegulariser::NonNegative
        }
        "box" => {
            expect_count(kind, &n, 2, "box:0,1 (bounds may be inf or -inf)")?;
            ActivationRegulariser::Box { lower: n[0], upper: n[1] }
        }
        other => {
            return Err(format!(
                "unknown activation regulariser '{other}'; use none, l1:LAMBDA, nonneg or box:LOWER,UPPER"
            ))
        }
    })
}

/// 1-based layers: `3`, `2-9`, `2,4,7-8`.
pub fn parse_layers(text: &str) -> Result<Vec<usize>, String> {
    let mut layers = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let parse = |t: &str| -> Result<usize, String> {
            t.trim().parse::<usize>().map_err(|_| format!("'{t}' in '{text}' is not a layer number"))
        };
        match item.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (parse(from)?, parse(to)?);
                if from > to {
                    return Err(format!("layer range '{item}' runs backwards; write {to}-{from}"));
                }
                layers.extend(from..=to);
            }
            None => layers.push(parse(item)?),
        }
    }
    if let Some(&zero) = layers.iter().find(|&&l| l == 0) {
        return Err(format!("layer {zero} in '{text}' does not exist; layers are numbered from 1"));
    }
    Ok(layers)
}

/// 1-based layer numbers given on the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerList(pub Vec<usize>);

fn parse_layer_list(text: &str) -> Result<LayerList, String> {
    parse_layers(text).map(LayerList)
}

/// A per-layer option: groups applied in order, each to every layer or to some layers.
#[derive(Clone, Debug, PartialEq)]
pub struct PerLayer<T> {
    pub groups: Vec<(Option<Vec<usize>>, T)>,
}

fn parse_per_layer<T>(text: &str, parse: fn(&str) -> Result<T, String>) -> Result<PerLayer<T>, String> {
    let mut groups = Vec::new();
    for group in text.split(';').filter(|g| !g.trim().is_empty()) {
        match group.split_once('=') {
            Some((layers, value)) => groups.push((Some(parse_layers(layers)?), parse(value)?)),
            None => groups.push((None, parse(group)?)),
        }
    }
    if groups.is_empty() {
        return Err("no value given".to_string());
    }
    Ok(PerLayer { groups })
}

pub fn parse_activations(text: &str) -> Result<PerLayer<Activation>, String> {
    parse_per_layer(text, parse_activation)
}

pub fn parse_weight_regs(text: &str) -> Result<PerLayer<WeightRegulariser>, String> {
    parse_per_layer(text, parse_weight_reg)
}

pub fn parse_activation_regs(text: &str) -> Result<PerLayer<ActivationRegulariser>, String> {
    parse_per_layer(text, parse_activation_reg)
}

/// `backward`, `forward`, or a comma-separated permutation of blocks such as
/// `V2,U2,W2,V1,U1,W1`.
pub fn parse_order(text: &str) -> Result<UpdateOrder, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "backward" => Ok(UpdateOrder::Backward),
        "forward" => Ok(UpdateOrder::Forward),
        _ => {
            let blocks = text
                .split(',')
                .map(|b| {
                    Block::parse(b).ok_or_else(|| {
                        format!("'{b}' is not a block; name blocks as V3, U3 or W3 (kind and 1-based layer), or use backward or forward")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(UpdateOrder::Custom(blocks))
        }
    }
}

/// The model options of `bcdnn train`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ModelArgs {
    /// Hidden activation: relu, leaky-relu[:SLOPE], sigmoid, tanh, softplus or linear; per
    /// layer as LAYERS=NAME groups separated by ';', later groups overriding earlier ones,
    /// e.g. 'relu;10=tanh' [default: relu]
    #[arg(long, value_name = "SPEC", value_parser = parse_activations)]
    pub activation: Option<PerLayer<Activation>>,

    /// Output loss: squared, hinge (one-vs-rest), cross-entropy (softmax) or logistic
    /// (one-vs-rest) [default: squared]
    #[arg(long, value_name = "NAME", value_parser = parse_loss)]
    pub loss: Option<Loss>,

    /// Sum or mean of the loss over samples [default: sum]
    #[arg(long, value_name = "SCALE", value_parser = parse_loss_scale)]
    pub loss_scale: Option<LossScale>,

    /// Hidden layers with an identity skip connection V_i = sigma(U_i) + V_{i-1}, e.g. 2-9 or
    /// 2,4; each needs the width of its input
    #[arg(long, value_name = "LAYERS", value_parser = parse_layer_list)]
    pub skip: Option<LayerList>,

    /// Weight regulariser: none, l2:LAMBDA, l1:LAMBDA, elastic:L1,L2, nonneg or box:LOWER,UPPER;
    /// per layer as LAYERS=SPEC groups separated by ';' [default: none]
    #[arg(long, value_name = "SPEC", value_parser = parse_weight_regs)]
    pub weight_reg: Option<PerLayer<WeightRegulariser>>,

    /// Regulariser on the hidden activations: none, l1:LAMBDA, nonneg or box:LOWER,UPPER; per
    /// layer as LAYERS=SPEC groups separated by ';' (layer N is the output) [default: none]
    #[arg(long, value_name = "SPEC", value_parser = parse_activation_regs)]
    pub activation_reg: Option<PerLayer<ActivationRegulariser>>,

    /// BCD splitting: three (U and V blocks, every block exact) or two (V blocks only, inner
    /// iterations for the hidden layers) [default: three]
    #[arg(long, value_name = "KIND", value_parser = parse_splitting)]
    pub splitting: Option<Algorithm>,

    /// Block order of an iteration: backward, forward, or a permutation such as
    /// V2,U2,W2,V1,U1,W1 [default: backward]
    #[arg(long, value_name = "ORDER", value_parser = parse_order)]
    pub order: Option<UpdateOrder>,

    /// Maximum number of inner iterations of a block without a closed form [default: 50]
    #[arg(long, value_name = "N")]
    pub inner_iterations: Option<usize>,

    /// Relative decrease below which inner iterations stop [default: 1e-6]
    #[arg(long, value_name = "TOL")]
    pub inner_tolerance: Option<f64>,

    /// Evaluate the objective explicitly after every block, so that largest_block_increase
    /// in the record is exact (one extra pass over the training set per block)
    #[arg(long)]
    pub exact_block_check: bool,
}

impl ModelArgs {
    /// Applies the options to a configuration builder; the builder's `build` validates them.
    pub fn apply(&self, mut builder: ConfigBuilder, hidden_layers: usize) -> ConfigBuilder {
        let depth = hidden_layers + 1;
        if let Some(spec) = &self.activation {
            for (layers, activation) in &spec.groups {
                builder = match layers {
                    None => builder.activation(*activation),
                    Some(layers) => layers.iter().fold(builder, |b, &l| b.layer_activation(l, *activation)),
                };
            }
        }
        if let Some(loss) = self.loss {
            builder = builder.loss(loss);
        }
        if let Some(scale) = self.loss_scale {
            builder = builder.loss_scale(scale);
        }
        if let Some(layers) = &self.skip {
            builder = layers.0.iter().fold(builder, |b, &l| b.skip(l));
        }
        if let Some(spec) = &self.weight_reg {
            for (layers, reg) in &spec.groups {
                builder = match layers {
                    None => builder.weight_regulariser(*reg),
                    Some(layers) => layers.iter().fold(builder, |b, &l| b.layer_weight_regulariser(l, *reg)),
                };
            }
        }
        if let Some(spec) = &self.activation_reg {
            for (layers, reg) in &spec.groups {
                builder = match layers {
                    None => (1..depth).fold(builder, |b, l| b.layer_activation_regulariser(l, *reg)),
                    Some(layers) => layers.iter().fold(builder, |b, &l| b.layer_activation_regulariser(l, *reg)),
                };
            }
        }
        if let Some(splitting) = self.splitting {
            builder = builder.algorithm(splitting);
        }
        if let Some(order) = &self.order {
            builder = builder.order(order.clone());
        }
        if self.inner_iterations.is_some() || self.inner_tolerance.is_some() {
            let default = InnerSolve::default();
            builder = builder.inner(InnerSolve {
                max_iterations: self.inner_iterations.unwrap_or(default.max_iterations),
                tolerance: self.inner_tolerance.unwrap_or(default.tolerance),
            });
        }
        builder
    }

    /// Returns whether no model option was given (the plain ReLU, squared-loss,
    /// three-splitting model).
    pub fn is_default(&self) -> bool {
        self.activation.is_none()
            && self.loss.is_none()
            && self.loss_scale.is_none()
            && self.skip.is_none()
            && self.weight_reg.is_none()
            && self.activation_reg.is_none()
            && self.splitting.is_none()
            && self.order.is_none()
            && self.inner_iterations.is_none()
            && self.inner_tolerance.is_none()
            && !self.exact_block_check
    }
}

/// Expands `--config FILE` in the arguments of `bcdnn train`: the file's keys become
/// `--key value` arguments placed before the user's own, so options on the command line
/// override the file (the parser keeps the last occurrence of an option).
///
/// Keys are the long option names without dashes (`hidden = "600x10"`, `epochs = 20`,
/// `activation = "tanh"`, `skip = "2-9"`, `quiet = true`); arrays are joined with commas.
///
/// `known` lists the long option names of `bcdnn train`; a key outside it is an error that
/// names the file.
pub fn expand_config_file(args: Vec<OsString>, known: &[String]) -> Result<Vec<OsString>> {
    // Only `bcdnn train ...` reads a configuration file; the subcommand is the first argument.
    let train = 1;
    if args.get(train).is_none_or(|a| a != "train") {
        return Ok(args);
    }

    let mut file = None;
    let mut rest = Vec::new();
    let mut iter = args[train + 1..].iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        let given = if text == "--config" {
            Some(iter.next().context("--config needs a file name, as in --config run.toml")?.clone())
        } else {
            text.strip_prefix("--config=").map(OsString::from)
        };
        if let Some(path) = given {
            if let Some(first) = &file {
                bail!(
                    "--config is given twice ({} and {}); give one file, and put other options on the command line",
                    Path::new(first).display(),
                    Path::new(&path).display()
                );
            }
            file = Some(path);
        } else {
            rest.push(arg.clone());
        }
    }

    let Some(file) = file else { return Ok(args) };
    let mut expanded: Vec<OsString> = args[..=train].to_vec();
    expanded.extend(config_file_arguments(Path::new(&file), known)?);
    expanded.extend(rest);
    Ok(expanded)
}

/// Options of `bcdnn train` a configuration file may not set.
const FORBIDDEN_KEYS: [&str; 3] = ["config", "help", "version"];

/// Options whose values are `;`-separated groups, so a list in a file is joined with `;`.
const GROUPED_KEYS: [&str; 3] = ["activation", "weight-reg", "activation-reg"];

/// Reads a TOML file of `train` options into command-line arguments.
pub fn config_file_arguments(path: &Path, known: &[String]) -> Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not a valid TOML file", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        if FORBIDDEN_KEYS.contains(&key.as_str()) || key.starts_with('-') {
            bail!("{}: key '{key}' cannot be set in a configuration file", path.display());
        }
        let name = key.replace('_', "-");
        if !known.is_empty() && !known.contains(&name) {
            bail!(
                "{}: unknown key '{key}'; keys are the long options of `bcdnn train` (see bcdnn train --help)",
                path.display()
            );
        }
        let flag = format!("--{name}");
        let separator = if GROUPED_KEYS.contains(&name.as_str()) { ";" } else { "," };
        let scalar = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => bail!(
                    "{}: key '{key}' has a {} value; use a string, a number or a list of them",
                    path.display(),
                    other.type_str()
                ),
            })
        };
        match &value {
            toml::Value::Boolean(true) => out.push(OsString::from(flag)),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                let joined = items.iter().map(scalar).collect::<Result<Vec<_>>>()?.join(separator);
                out.push(OsString::from(flag));
                out.push(OsString::from(joined));
            }
            other => {
                out.push(OsString::from(flag));
                out.push(OsString::from(scalar(other)?));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_parse_with_parameters_and_groups() {
        assert_eq!(parse_activation("tanh"), Ok(Activation::Tanh));
        assert_eq!(parse_activation("leaky-relu:0.2"), Ok(Activation::LeakyRelu { slope: 0.2 }));
        assert_eq!(parse_activation("leaky-relu"), Ok(Activation::LeakyRelu { slope: 0.01 }));
        assert!(parse_activation("swish").unwrap_err().contains("unknown activation 'swish'"));
        assert!(parse_activation("tanh:2").unwrap_err().contains("takes no parameter"));
        let spec = parse_activations("relu;2-3=sigmoid").unwrap();
        assert_eq!(spec.groups, vec![(None, Activation::Relu), (Some(vec![2, 3]), Activation::Sigmoid)]);
    }

    #[test]
    fn regularisers_parse_and_reject_wrong_arity() {
        assert_eq!(parse_weight_reg("l2:1e-4"), Ok(WeightRegulariser::L2 { lambda: 1e-4 }));
        assert_eq!(parse_weight_reg("elastic:1,2"), Ok(WeightRegulariser::ElasticNet { l1: 1.0, l2: 2.0 }));
        assert_eq!(parse_weight_reg("box:-1,1"), Ok(WeightRegulariser::Box { lower: -1.0, upper: 1.0 }));
        assert!(parse_weight_reg("box:1").unwrap_err().contains("takes 2 numbers"));
        assert_eq!(
            parse_activation_reg("box:0,inf"),
            Ok(ActivationRegulariser::Box { lower: 0.0, upper: f64::INFINITY })
        );
        assert!(parse_weight_reg("l2:inf").unwrap_err().contains("finite"));
        assert!(parse_weight_reg("l3:1").unwrap_err().contains("unknown weight regulariser 'l3'"));
        assert!(parse_weight_reg("l2:abc").unwrap_err().contains("'abc' is not a number"));
        assert_eq!(parse_activation_reg("nonneg"), Ok(ActivationRegulariser::NonNegative));
        assert!(parse_activation_reg("l2:1").unwrap_err().contains("unknown activation regulariser"));
    }

    #[test]
    fn layers_and_orders_parse() {
        assert_eq!(parse_layers("2-4,7"), Ok(vec![2, 3, 4, 7]));
        assert!(parse_layers("0-2").unwrap_err().contains("numbered from 1"));
        assert!(parse_layers("5-2").unwrap_err().contains("runs backwards"));
        assert_eq!(parse_order("forward"), Ok(UpdateOrder::Forward));
        assert_eq!(parse_order("V2,W1").unwrap(), UpdateOrder::Custom(vec![Block::Activation(1), Block::Weights(0)]));
        assert!(parse_order("X2").unwrap_err().contains("'X2' is not a block"));
    }

    #[test]
    fn config_file_becomes_arguments_before_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, "hidden = \"600x2\"\nepochs = 3\nactivation = \"tanh\"\nquiet = true\nskip = [2]\n")
            .unwrap();
        let args: Vec<OsString> = ["bcdnn", "train", "--config", path.to_str().unwrap(), "--epochs", "5"]
            .iter()
            .map(OsString::from)
            .collect();
        let expanded: Vec<String> =
            expand_config_file(args, &[]).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let epochs_file = expanded.iter().position(|a| a == "3").unwrap();
        let epochs_cli = expanded.iter().position(|a| a == "5").unwrap();
        assert!(epochs_file < epochs_cli, "{expanded:?}");
        for expected in ["--hidden", "600x2", "--activation", "tanh", "--quiet", "--skip"] {
            assert!(expanded.iter().any(|a| a == expected), "{expected} missing from {expanded:?}");
        }
    }

    #[test]
    fn config_file_errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "hidden = \"600\"\n[layer]\ngamma = 1\n").unwrap();
        let error = config_file_arguments(&bad, &[]).unwrap_err().to_string();
        assert!(error.contains("bad.toml"), "{error}");
        assert!(error.contains("'layer'"), "{error}");
        let broken = dir.path().join("broken.toml");
        std::fs::write(&broken, "hidden = [600\n").unwrap();
        let error = format!("{:#}", config_file_arguments(&broken, &[]).unwrap_err());
        assert!(error.contains("not a valid TOML file"), "{error}");
        let missing = config_file_arguments(&dir.path().join("missing.toml"), &[]).unwrap_err().to_string();
        let unknown = dir.path().join("unknown.toml");
        std::fs::write(&unknown, "hiden = \"32\"\n").unwrap();
        let error = config_file_arguments(&unknown, &["hidden".to_string()]).unwrap_err().to_string();
        assert!(error.contains("unknown.toml"), "{error}");
        assert!(error.contains("unknown key 'hiden'"), "{error}");
        assert!(missing.contains("cannot read the configuration file"), "{missing}");
    }
}
