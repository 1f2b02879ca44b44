//! Cost of a request or a media task, in exact integer money: each token class at its own price,
//! media units at theirs. Pure. The one place a price is applied: the ledger, the metrics, the
//! access log and the task objects all take their cost from here.
//! Imports: `money`, `registry` (prices), `usage`. Nothing else.

use crate::money::{self, Money};
use crate::registry::Price;
use crate::usage::Usage;

/// Billable media units of a finished task.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MediaUnits {
    /// Images generated.
    pub images: u64,
    /// Seconds of video or audio requested.
    pub seconds: u64,
}

/// Cost of a chat request: tokens × per-token price, plus the per-request price.
pub fn of_request(usage: &Usage, price: &Price) -> Money {
    let sum = i128::from(usage.input) * i128::from(price.input)
        + i128::from(usage.output) * i128::from(price.output)
        + i128::from(usage.cache_read) * i128::from(price.cache_read)
        + i128::from(usage.cache_write) * i128::from(price.cache_write)
        + i128::from(price.per_request);
    money::from_i128(sum)
}

/// Cost of a completed media task: per image, per second, per request.
pub fn of_task(units: &MediaUnits, price: &Price) -> Money {
    let sum = i128::from(units.images) * i128::from(price.per_image)
        + i128::from(units.seconds) * i128::from(price.per_second)
        + i128::from(price.per_request);
    money::from_i128(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price() -> Price {
        Price {
            input: 1_250_000,    // $1.25 / Mtok
            output: 10_000_000,  // $10 / Mtok
            cache_read: 125_000, // $0.125 / Mtok
            cache_write: 2_000_000,
            per_image: 40_000_000_000, // $0.04
            per_second: 50_000_000_000,
            per_request: 10_000_000_000,
        }
    }

    #[test]
    fn each_token_class_at_its_own_price_exactly() {
        let u = Usage { input: 1_000_000, output: 500_000, cache_read: 2_000_000, cache_write: 100_000 };
        // 1.25 + 5 + 0.25 + 0.2 + 0.01 per request = 6.71, to the last pico-dollar.
        assert_eq!(of_request(&u, &price()).usd(), "6.71");
        let one = Usage { input: 1, output: 1, cache_read: 1, cache_write: 1 };
        assert_eq!(
            of_request(&one, &Price { per_request: 0, ..price() }),
            Money(1_250_000 + 10_000_000 + 125_000 + 2_000_000)
        );
    }

    #[test]
    fn tasks_per_image_second_and_request() {
        assert_eq!(of_task(&MediaUnits { images: 3, seconds: 0 }, &price()).usd(), "0.13");
        assert_eq!(of_task(&MediaUnits { images: 0, seconds: 8 }, &price()).usd(), "0.41");
    }

    #[test]
    fn a_million_small_requests_sum_without_drift() {
        let u = Usage { input: 7, output: 3, cache_read: 0, cache_write: 0 };
        let p = Price { per_request: 0, ..price() };
        let one = of_request(&u, &p);
        let total: i128 = (0..1_000_000).map(|_| i128::from(of_request(&u, &p).0)).sum();
        assert_eq!(total, i128::from(one.0) * 1_000_000);
        assert_eq!(money::usd_string(total), "38.75");
    }
}
