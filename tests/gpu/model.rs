//! The whole model on the device (src/model/device.rs) against the goldens and the CPU reference.

use crate::GpuTest;
use qwen_kernels::golden::GoldenFile;
use qwen_kernels::model::{DeviceModel, ModelOptions, ModelWeights, Qwen2Config};
use qwen_kernels::{DType, Gpu};

pub const TESTS: &[GpuTest] = &[("model::greedy_f32_equals_the_truth_qwen", greedy_f32_equals_the_truth_qwen)];

fn golden_model(name: &str) -> (GoldenFile, ModelWeights) {
    let cfg = Qwen2Config::preset(name).unwrap();
    let file = GoldenFile::open(cfg.name, "model").unwrap();
    let w = ModelWeights::from_recipes(&cfg, &file).unwrap();
    (file, w)
}

fn ids(file: &GoldenFile, name: &str) -> Vec<u32> {
    file.tensor(name).unwrap().values.iter().map(|&v| v as u32).collect()
}

fn greedy_f32_equals_the_truth_qwen(gpu: &Gpu) {
    let t0 = std::time::Instant::now();
    let (file, w) = golden_model("qwen2.5-0.5b");
    let prompt = ids(&file, "prompt");
    let truth = ids(&file, "greedy.tokens.truth");
    let mut m = DeviceModel::new(gpu, &w, ModelOptions::new(DType::F32, 1, prompt.len() + truth.len())).unwrap();
    eprintln!("built in {:?}: {:?}", t0.elapsed(), m.memory());
    let t1 = std::time::Instant::now();
    let ours = m.greedy(gpu, 0, &prompt, truth.len()).unwrap();
    eprintln!("greedy in {:?}", t1.elapsed());
    assert_eq!(ours, truth);
}
