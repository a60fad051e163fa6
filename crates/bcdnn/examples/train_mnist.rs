//! Trains the 784-1500-1500-1500-10 ReLU network (alpha = 5) of Zeng, Lau, Lin and Yao,
//! "Global Convergence of Block Coordinate Descent in Deep Learning" (ICML 2019), on MNIST
//! through the library API.
//!
//! `cargo run --release -p bcdnn --example train_mnist -- [ITERATIONS] [TRAIN_SAMPLES]`

use bcdnn::{Config, Trainer};
use bcdnn_data::{load_mnist, MnistOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let iterations: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let train_samples: usize = args.next().map_or(Ok(60_000), |s| s.parse())?;

    let mnist = load_mnist(&MnistOptions::default())?;
    let train = mnist.train.view().head(train_samples);
    let config = Config::builder(784, &[1500, 1500, 1500], 10).alpha(5.0).seed(1).build()?;
    let mut trainer: Trainer<f32> = Trainer::new(config, train)?;
    for _ in 0..iterations {
        let report = trainer.step()?;
        let start = std::time::Instant::now();
        let train_eval = trainer.evaluate(train)?;
        let test_eval = trainer.evaluate(mnist.test.view())?;
        println!(
            "iteration {:3}  update {:6.2} s (W {:.2} U {:.2} V {:.2})  eval {:5.2} s  train {:.4}  test {:.4}  Lbar(prev) {:.6e}",
            report.iteration,
            report.update_seconds,
            report.seconds_w,
            report.seconds_u,
            report.seconds_v,
            start.elapsed().as_secs_f64(),
            train_eval.accuracy,
            test_eval.accuracy,
            report.previous_objective.map_or(f64::NAN, |t| t.total()),
        );
    }
    Ok(())
}
