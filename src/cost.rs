//! Cost of a request: tokens x price / 1e6, each token class at its own price. Pure.
//! Imports: `registry` (prices), `usage`. Nothing else.

use crate::registry::Price;
use crate::usage::Usage;

/// USD cost of `usage` at `price`.
pub fn cost_usd(usage: &Usage, price: &Price) -> f64 {
    (usage.input as f64 * price.input_per_mtok
        + usage.output as f64 * price.output_per_mtok
        + usage.cache_read as f64 * price.cache_read_per_mtok
        + usage.cache_write as f64 * price.cache_write_per_mtok)
        / 1e6
        + price.per_request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_at_its_own_price() {
        let price = Price {
            input_per_mtok: 1.25,
            output_per_mtok: 10.0,
            cache_read_per_mtok: 0.125,
            cache_write_per_mtok: 2.0,
            ..Price::default()
        };
        let u = Usage { input: 1_000_000, output: 500_000, cache_read: 2_000_000, cache_write: 100_000 };
        let c = cost_usd(&u, &price);
        assert!((c - (1.25 + 5.0 + 0.25 + 0.2)).abs() < 1e-9, "{c}");
    }
}
