//! Which snapshots to keep (`backup.retention`), as a pure function of
//! their times and `now`, both Unix seconds on the taker's clock.
//!
//! Every snapshot younger than `all_hours`; then, younger than
//! `hourly_hours`, the newest of each hour (`taken_at / 3600`); then,
//! younger than `daily_days`, the newest of each UTC day
//! (`taken_at / 86400`); the newest snapshot always, however old. A
//! snapshot "from the future" (a clock stepped back) has age 0 and is kept.

use std::collections::BTreeMap;

use deckhand_model::backup::RetentionConfig;

/// For each of `taken_at` (verified snapshots of one cluster, in any
/// order), whether to keep it. Same length and order as `taken_at`.
pub fn keep(now: u64, taken_at: &[u64], policy: &RetentionConfig) -> Vec<bool> {
    let newest_of = |bucket: u64| {
        let mut m: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, &t) in taken_at.iter().enumerate() {
            let e = m.entry(t / bucket).or_insert(i);
            if t > taken_at[*e] || (t == taken_at[*e] && i < *e) {
                *e = i;
            }
        }
        m
    };
    let hours = newest_of(3600);
    let days = newest_of(86_400);
    let newest = (0..taken_at.len()).max_by_key(|&i| (taken_at[i], std::cmp::Reverse(i)));
    taken_at
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let age = now.saturating_sub(t);
            Some(i) == newest
                || age < policy.all_hours * 3600
                || (age < policy.hourly_hours * 3600 && hours.get(&(t / 3600)) == Some(&i))
                || (age < policy.daily_days * 86_400 && days.get(&(t / 86_400)) == Some(&i))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: RetentionConfig = RetentionConfig {
        all_hours: 2,
        hourly_hours: 6,
        daily_days: 3,
    };

    #[test]
    fn tiers() {
        let now = 1000 * 86_400 + 1800;
        let h = 3600;
        let times = [
            now - 10,          // all
            now - h - 10,      // all
            now - 3 * h,       // hourly, newest of its hour
            now - 3 * h - 60,  // hourly, older in the same hour: gone
            now - 5 * h,       // hourly
            now - 30 * h,      // daily: newest of its day
            now - 30 * h - 60, // same day: gone
            now - 10 * 86_400, // past daily: gone
        ];
        assert_eq!(
            keep(now, &times, &P),
            [true, true, true, false, true, true, false, false]
        );
        assert_eq!(
            keep(now, &[now - 400 * 86_400], &P),
            [true],
            "the newest stays"
        );
        assert_eq!(
            keep(now, &[now + 50, now - 400 * 86_400], &P),
            [true, false]
        );
        assert!(keep(now, &[], &P).is_empty());
    }

    proptest! {
        #[test]
        fn never_drops_the_newest_or_the_recent_and_is_idempotent(
            now in 10_000_000u64..20_000_000,
            ages in proptest::collection::vec(0u64..40 * 86_400, 0..60),
            all in 0u64..10, hourly in 0u64..100, daily in 0u64..30,
        ) {
            let p = RetentionConfig { all_hours: all, hourly_hours: hourly, daily_days: daily };
            let times: Vec<u64> = ages.iter().map(|a| now - a).collect();
            let k = keep(now, &times, &p);
            prop_assert_eq!(k.len(), times.len());
            if let Some(max) = times.iter().max() {
                prop_assert!(times.iter().zip(&k).any(|(t, &kept)| kept && t == max));
            }
            for (t, &kept) in times.iter().zip(&k) {
                if now - t < all * 3600 { prop_assert!(kept); }
            }
            // Every hour (day) with a snapshot inside its tier keeps one.
            for (bucket, limit) in [(3600, hourly * 3600), (86_400, daily * 86_400)] {
                for t in times.iter().filter(|&&t| now - t < limit) {
                    prop_assert!(times.iter().zip(&k).any(|(u, &kept)| kept && u / bucket == t / bucket));
                }
            }
            let kept: Vec<u64> = times.iter().zip(&k).filter(|(_, k)| **k).map(|(t, _)| *t).collect();
            prop_assert!(keep(now, &kept, &p).iter().all(|&x| x));
            let recent = times.iter().filter(|&&t| now - t < all * 3600).count();
            prop_assert!(kept.len() <= recent + hourly as usize + daily as usize + 3);
        }
    }
}
