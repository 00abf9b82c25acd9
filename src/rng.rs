//! A counter-based random number generator: value `i` of stream `key` is a pure function of
//! `(key, i)`, so results never depend on the order in which things are drawn, and a device
//! kernel can compute the same numbers independently per element.

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stream key from a seed and a name (FNV-1a of the name, mixed with the seed).
pub fn key(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h ^ mix64(seed))
}

/// The `i`-th raw 64-bit value of stream `key`.
pub fn bits(key: u64, i: u64) -> u64 {
    mix64(key.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// The `i`-th uniform value in `[0, 1)` of stream `key` (24 random bits, exact in f32).
pub fn uniform(key: u64, i: u64) -> f32 {
    (bits(key, i) >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// The `i`-th standard normal value of stream `key` (Box–Muller on two 53-bit uniforms).
pub fn normal(key: u64, i: u64) -> f32 {
    let u1 = ((bits(key, 2 * i) >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64); // (0, 1]
    let u2 = (bits(key, 2 * i + 1) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A small sequential generator on top of the counter-based one, for host-side shuffling.
#[derive(Clone, Debug)]
pub struct Rng {
    key: u64,
    counter: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng {
            key: mix64(seed ^ 0x5eed),
            counter: 0,
        }
    }

    /// The next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.counter += 1;
        bits(self.key, self.counter)
    }

    /// A uniform integer in `0..n` (n > 0), without modulo bias worth mentioning for n ≪ 2^64.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A uniform value in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// A standard normal value.
    pub fn normal(&mut self) -> f32 {
        self.counter += 1;
        normal(self.key, self.counter)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// A 32-bit integer hash with strong avalanche (Wellons' "lowbias32"): cheap in WGSL, where
/// 64-bit integers are not available, so device kernels reproduce it bit for bit.
pub fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The uniform in `[0, 1)` that element `i` of dropout mask `key` draws at step `t` under
/// `seed`: 24 bits of `hash32` chained over (seed, t, key, i).
pub fn dropout_uniform(seed: u32, t: u32, key: u32, i: u32) -> f32 {
    let k = hash32(key.wrapping_add(hash32(t.wrapping_add(hash32(seed)))));
    (hash32(i ^ k) >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// The per-step stream key of on-device randomness: `hash32` chained over (seed, t, key), the
/// chain [`dropout_uniform`] starts from. Value `i` of the stream is `hash32(i ^ step_key(..))`.
pub fn step_key(seed: u32, t: u32, key: u32) -> u32 {
    hash32(key.wrapping_add(hash32(t.wrapping_add(hash32(seed)))))
}

/// The uniform in `[0, 1)` made of a hash's top 24 bits (exact in f32 on every backend).
pub fn unit24(h: u32) -> f32 {
    (h >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_right() {
        let k = key(7, "w");
        let n = 200_000;
        let (mut su, mut sn, mut sn2) = (0.0f64, 0.0f64, 0.0f64);
        for i in 0..n {
            su += uniform(k, i) as f64;
            let z = normal(k, i) as f64;
            sn += z;
            sn2 += z * z;
        }
        let n = n as f64;
        assert!((su / n - 0.5).abs() < 0.005);
        assert!((sn / n).abs() < 0.01);
        assert!((sn2 / n - 1.0).abs() < 0.01);
        assert_ne!(key(7, "w"), key(8, "w"));
        assert_ne!(key(7, "w"), key(7, "b"));
    }
}
