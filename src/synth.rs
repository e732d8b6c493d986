//! Portable deterministic synthetic weights: the same bits here and in `golden/synth.py`.
//!
//! Committed goldens cannot use real checkpoints, so their weights are drawn from this generator at
//! the real models' shapes. Full-size models then cost no stored weights: Rust regenerates every
//! tensor from (seed, tensor name, scale), and the golden metadata carries a checksum per tensor
//! that a test compares.
//!
//! Only integer arithmetic and exactly rounded IEEE operations are used, so any language gets the
//! same bits:
//! ```text
//! name_hash   = FNV-1a 64 of the tensor name's UTF-8 bytes
//! h(i)        = splitmix64 finaliser of (name_hash ^ seed * G) + (i + 1) * G      (wrapping u64, G = 0x9E3779B97F4A7C15)
//! unit(i)     = (a + b + c + d - 2^17) / 2^17, a..d the four 16-bit fields of h(i)  (exact in f32; in [-1, 1),
//!               bell-shaped, standard deviation 1/sqrt(12) = 0.2887)
//! value(i)    = bf16_rne(unit(i) * scale)                                           (one f32 multiply, one rounding)
//! checksum    = wrapping sum over i of mix(CHECKSUM_KEY ^ bits(i), i)               (order-free, so vectorisable)
//! ```
//! `scale` is an f32. Decimal scales are parsed as f64 and then rounded to f32 in both languages.

/// The golden constant of splitmix64.
const G: u64 = 0x9E37_79B9_7F4A_7C15;
/// Keys the checksum's hash apart from the generator's.
const CHECKSUM_KEY: u64 = 0x5143_4b53_554d_0001;

/// FNV-1a, 64-bit.
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser of `key + (index + 1) * G`.
fn mix(key: u64, index: u64) -> u64 {
    let mut z = key.wrapping_add(index.wrapping_add(1).wrapping_mul(G));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator's key for one tensor.
pub fn tensor_key(seed: u64, name: &str) -> u64 {
    name_hash(name) ^ seed.wrapping_mul(G)
}

/// Element `index` of the unit-scale stream of `key`: in [-1, 1), standard deviation 0.2887.
pub fn unit(key: u64, index: u64) -> f32 {
    let h = mix(key, index);
    let sum = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48);
    // |sum - 2^17| < 2^18: exact in f32; dividing by a power of two is exact.
    (sum as i64 - (1 << 17)) as f32 / (1u32 << 17) as f32
}

/// Round a finite f32 to bf16 bits, to nearest, ties to even.
pub fn bf16_bits_rne(x: f32) -> u16 {
    let bits = x.to_bits();
    let bias = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(bias) >> 16) as u16
}

/// `numel` bf16 values (as bits) of the tensor `name`: `bf16_rne(unit(i) * scale)`.
pub fn tensor_bf16_bits(seed: u64, name: &str, numel: usize, scale: f32) -> Vec<u16> {
    let key = tensor_key(seed, name);
    (0..numel as u64).map(|i| bf16_bits_rne(unit(key, i) * scale)).collect()
}

/// The same tensor as f32 values (each exactly a bf16 value).
pub fn tensor_f32(seed: u64, name: &str, numel: usize, scale: f32) -> Vec<f32> {
    tensor_bf16_bits(seed, name, numel, scale).into_iter().map(|b| f32::from_bits((b as u32) << 16)).collect()
}

/// Order-free checksum of bf16 bits, as recorded in golden metadata.
pub fn checksum(bits: &[u16]) -> u64 {
    bits.iter()
        .enumerate()
        .fold(0u64, |acc, (i, &b)| acc.wrapping_add(mix(CHECKSUM_KEY ^ b as u64, i as u64)))
}

/// A decimal scale as both generators read it: parsed to f64, then rounded to f32.
pub fn parse_scale(text: &str) -> Option<f32> {
    text.trim().parse::<f64>().ok().map(|v| v as f32)
}
