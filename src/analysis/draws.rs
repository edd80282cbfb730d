//! Seeded random draws and shared settings for the statistics' tests.

use super::sequential::{Counts, Settings};

/// The settings of the worked examples: alpha 0.01, tolerate 1, detect 2.
pub const S: Settings = Settings {
    alpha: 0.01,
    tolerate: 1.0,
    detect: 2.0,
};

pub fn counts(requests: f64, errors: f64) -> Counts {
    Counts { requests, errors }
}

/// xorshift64*: deterministic draws for the simulations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Poisson(lambda): Knuth's product method, in chunks for large lambda.
    pub fn poisson(&mut self, lambda: f64) -> f64 {
        let mut left = lambda;
        let mut n = 0.0;
        while left > 0.0 {
            let step = left.min(30.0);
            left -= step;
            let limit = (-step).exp();
            let mut p = self.uniform();
            while p > limit {
                n += 1.0;
                p *= self.uniform();
            }
        }
        n
    }

    /// Binomial(n, p) for small p, as Poisson(n p) capped at n.
    pub fn errors(&mut self, n: f64, p: f64) -> f64 {
        if p >= 1.0 {
            n
        } else {
            self.poisson(n * p).min(n)
        }
    }
}
