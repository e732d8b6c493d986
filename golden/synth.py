"""Portable deterministic synthetic weights: the same bits here and in src/synth.rs.

Only integer arithmetic (wrapping uint64) and exactly rounded IEEE float32 operations, so numpy and
Rust agree bit for bit:

    name_hash   = FNV-1a 64 of the tensor name's UTF-8 bytes
    h(i)        = splitmix64 finaliser of (name_hash ^ seed * G) + (i + 1) * G     (G = 0x9E3779B97F4A7C15)
    unit(i)     = (a + b + c + d - 2**17) / 2**17, a..d the four 16-bit fields of h(i)   (exact in float32)
    value(i)    = bf16_rne(unit(i) * scale)                                         (one float32 multiply)
    checksum    = wrapping sum over i of mix(CHECKSUM_KEY ^ bits(i), i)

Decimal scales are parsed as float64, then rounded to float32 (as Rust's `parse::<f64>() as f32`).
"""
import numpy as np

G = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
CHECKSUM_KEY = 0x51434B53554D0001
MASK64 = (1 << 64) - 1
CHUNK = 1 << 22


def name_hash(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & MASK64
    return h


def tensor_key(seed: int, name: str) -> int:
    return name_hash(name) ^ ((seed * 0x9E3779B97F4A7C15) & MASK64)


def _mix(key, index):
    """splitmix64 finaliser of key + (index + 1) * G, elementwise on uint64 arrays (wrapping)."""
    with np.errstate(over="ignore"):
        z = np.asarray(key, dtype=np.uint64) + (np.asarray(index, dtype=np.uint64) + np.uint64(1)) * G
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


def unit(key: int, index):
    h = _mix(np.uint64(key), index)
    f = np.uint64(0xFFFF)
    s = (h & f) + ((h >> np.uint64(16)) & f) + ((h >> np.uint64(32)) & f) + (h >> np.uint64(48))
    return (s.astype(np.int64) - (1 << 17)).astype(np.float32) / np.float32(1 << 17)


def bf16_bits_rne(x):
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    bias = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    with np.errstate(over="ignore"):
        return ((bits + bias) >> np.uint32(16)).astype(np.uint16)


def tensor_bf16_bits(seed: int, name: str, numel: int, scale) -> np.ndarray:
    key = tensor_key(seed, name)
    scale = np.float32(float(scale))
    out = np.empty(numel, dtype=np.uint16)
    for start in range(0, numel, CHUNK):
        idx = np.arange(start, min(numel, start + CHUNK), dtype=np.uint64)
        out[start:start + len(idx)] = bf16_bits_rne(unit(key, idx) * scale)
    return out


def bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def checksum(bits: np.ndarray) -> int:
    total = np.uint64(0)
    bits = np.asarray(bits, dtype=np.uint16).reshape(-1)
    with np.errstate(over="ignore"):
        for start in range(0, len(bits), CHUNK):
            b = bits[start:start + CHUNK].astype(np.uint64)
            idx = np.arange(start, start + len(b), dtype=np.uint64)
            total = total + np.sum(_mix(np.uint64(CHECKSUM_KEY) ^ b, idx), dtype=np.uint64)
    return int(total)
