//! Rust's synthetic weights reproduce golden/synth.py's bit for bit (vectors written by
//! `python3 golden/synth_vectors.py` into golden/data/synth_vectors.json).

use qwen_kernels::synth::{bf16_bits_rne, checksum, name_hash, parse_scale, tensor_bf16_bits, tensor_f32, unit};

#[test]
fn rust_reproduces_the_python_generator() {
    let path = qwen_kernels::golden::file::data_dir().join("synth_vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate: python3 golden/synth_vectors.py)", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 6);
    for v in vectors {
        let seed: u64 = v["seed"].as_str().unwrap().parse().unwrap();
        let name = v["name"].as_str().unwrap();
        let numel = v["numel"].as_u64().unwrap() as usize;
        let scale = parse_scale(v["scale"].as_str().unwrap()).unwrap();
        let bits = tensor_bf16_bits(seed, name, numel, scale);
        let first: Vec<u16> = v["first_bits"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u16).collect();
        assert_eq!(&bits[..first.len()], &first[..], "{name}");
        let expected: u64 = v["checksum"].as_str().unwrap().parse().unwrap();
        assert_eq!(checksum(&bits), expected, "{name} ({numel} elements)");
    }
}

#[test]
fn fnv1a_matches_its_published_test_values() {
    // From the FNV reference test suite: FNV-1a 64 of "" and "a".
    assert_eq!(name_hash(""), 0xcbf29ce484222325);
    assert_eq!(name_hash("a"), 0xaf63dc4c8601ec8c);
}

#[test]
fn unit_stream_is_bell_shaped_in_minus_one_to_one() {
    let key = 99;
    let n = 200_000;
    let values: Vec<f32> = (0..n).map(|i| unit(key, i)).collect();
    assert!(values.iter().all(|&v| (-1.0..1.0).contains(&v)));
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    // Sum of four uniform 16-bit fields: standard deviation 1/sqrt(12) = 0.2887; the sample estimate
    // over 2e5 draws is within 1% of it with overwhelming probability.
    assert!(mean.abs() < 0.005, "mean {mean}");
    assert!((var.sqrt() - 0.288675).abs() < 0.003, "std {}", var.sqrt());
}

#[test]
fn bf16_rounding_is_to_nearest_even() {
    assert_eq!(bf16_bits_rne(1.0), 0x3F80);
    // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even -> 1.0.
    assert_eq!(bf16_bits_rne(1.0 + 2f32.powi(-8)), 0x3F80);
    // 1 + 3 * 2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even) -> 1.015625.
    assert_eq!(bf16_bits_rne(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
    assert_eq!(bf16_bits_rne(-2.0), 0xC000);
    for x in [0.1f32, -3.7, 1e-20, 12345.678] {
        assert_eq!(bf16_bits_rne(x), half::bf16::from_f32(x).to_bits(), "{x}");
    }
    let v = tensor_f32(5, "t", 64, 0.5);
    assert!(v.iter().all(|&x| x == half::bf16::from_f32(x).to_f32()));
}

#[test]
fn checksum_sees_every_bit_and_position() {
    let bits = tensor_bf16_bits(3, "x", 1000, 1.0);
    let base = checksum(&bits);
    let mut flipped = bits.clone();
    flipped[500] ^= 1;
    assert_ne!(checksum(&flipped), base);
    let mut swapped = bits.clone();
    swapped.swap(1, 2);
    assert_ne!(checksum(&swapped), base);
    assert_ne!(tensor_bf16_bits(4, "x", 1000, 1.0), bits, "seed must matter");
    assert_ne!(tensor_bf16_bits(3, "y", 1000, 1.0), bits, "name must matter");
}
