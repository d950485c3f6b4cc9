//! Summaries of latency samples: the median and the 95th and 99th
//! percentiles the report prints, plus the extremes. Pure functions on plain numbers.

/// What the report says about one set of samples (same unit as the samples).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// Middle value; the mean of the two middle ones for an even count.
    pub median: f64,
    /// Nearest-rank 95th percentile: the smallest sample with at least 95 %
    /// of the samples at or below it (with 20 samples, the 19th smallest).
    pub p95: f64,
    /// Nearest-rank 99th percentile (with 20 samples, the largest): a tail
    /// one run in twenty shows.
    pub p99: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// Summarises `samples`; `None` when there are none (NaNs are ignored).
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Summary {
        n,
        median,
        p95: percentile(&sorted, 95),
        p99: percentile(&sorted, 99),
        min: sorted[0],
        max: sorted[n - 1],
    })
}

/// Nearest-rank percentile of already sorted, non-empty samples.
fn percentile(sorted: &[f64], pct: usize) -> f64 {
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_counts_have_the_usual_median() {
        let odd = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(odd.median, 2.0);
        let even = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert_eq!((even.min, even.max, even.n), (1.0, 4.0, 4));
    }

    #[test]
    fn p95_is_nearest_rank() {
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(summarize(&twenty).unwrap().p95, 19.0);
        assert_eq!(summarize(&twenty).unwrap().p99, 20.0);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(summarize(&hundred).unwrap().p99, 99.0);
        let five: Vec<f64> = (1..=5).map(f64::from).collect();
        assert_eq!(summarize(&five).unwrap().p95, 5.0);
        assert_eq!(summarize(&[7.0]).unwrap().p95, 7.0);
    }

    #[test]
    fn nothing_to_summarise() {
        assert!(summarize(&[]).is_none());
        assert!(summarize(&[f64::NAN]).is_none());
    }
}
