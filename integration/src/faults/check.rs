//! The quorum-window invariant, pure: times are seconds since the start of
//! the run (f64), so it is unit-tested without a cluster.

use std::collections::BTreeSet;

/// The set of nodes the schedule had down (killed or partitioned) from `at`
/// until the next event.
#[derive(Debug, Clone)]
pub struct DownEvent {
    pub at: f64,
    pub down: BTreeSet<String>,
}

/// The voters (member names, learners excluded) seen in a status poll at `at`.
#[derive(Debug, Clone)]
pub struct VoterObs {
    pub at: f64,
    pub voters: Vec<String>,
}

/// Do the voters `v` keep quorum with the nodes `down` gone?
pub fn quorum_lost(v: &[String], down: &BTreeSet<String>) -> bool {
    if v.is_empty() {
        return false;
    }
    let alive = v.iter().filter(|n| !down.contains(*n)).count();
    alive < v.len() / 2 + 1
}

/// Stretches of more than `min` seconds without an acknowledged write
/// between `start` and `end`, given the ack times (sorted).
pub fn gaps(acks: &[f64], start: f64, end: f64, min: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut prev = start;
    for &a in acks.iter().chain(std::iter::once(&end)) {
        if a - prev > min {
            out.push((prev, a));
        }
        prev = prev.max(a);
    }
    out
}

/// The intervals during which the schedule had a majority of the voters
/// down, each extended by `recovery` seconds after it ends (a restarted node
/// boots, its member starts, an election runs). A segment is judged against
/// the last voter set seen before it and every set seen during it or up to
/// `lookback` seconds before it (the voter set moves while faults happen).
/// Returns (from, to, why).
pub fn excused(
    down: &[DownEvent],
    voters: &[VoterObs],
    end: f64,
    lookback: f64,
    recovery: f64,
) -> Vec<(f64, f64, String)> {
    let mut out = Vec::new();
    for (i, ev) in down.iter().enumerate() {
        let seg_end = down.get(i + 1).map(|e| e.at).unwrap_or(end);
        if ev.down.is_empty() || seg_end <= ev.at {
            continue;
        }
        let before = voters.iter().rev().find(|o| o.at <= ev.at);
        let during = voters
            .iter()
            .filter(|o| o.at >= ev.at - lookback && o.at <= seg_end);
        for o in before.into_iter().chain(during) {
            if quorum_lost(&o.voters, &ev.down) {
                let d: Vec<&str> = ev.down.iter().map(String::as_str).collect();
                out.push((
                    ev.at,
                    seg_end + recovery,
                    format!(
                        "down {{{}}} of voters {{{}}} (seen at {:.1} s)",
                        d.join(","),
                        o.voters.join(","),
                        o.at
                    ),
                ));
                break;
            }
        }
    }
    out
}

/// The longest part of `gap` not covered by `intervals`, in seconds.
pub fn longest_uncovered(gap: (f64, f64), intervals: &[(f64, f64, String)]) -> f64 {
    let mut iv: Vec<(f64, f64)> = intervals
        .iter()
        .map(|(a, b, _)| (a.max(gap.0), b.min(gap.1)))
        .filter(|(a, b)| a < b)
        .collect();
    iv.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut longest = 0f64;
    let mut cur = gap.0;
    for (a, b) in iv {
        if a > cur {
            longest = longest.max(a - cur);
        }
        cur = cur.max(b);
    }
    longest.max(gap.1 - cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }
    fn v(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quorum() {
        let v3 = v(&["a", "b", "c"]);
        assert!(!quorum_lost(&v3, &set(&["a"])));
        assert!(quorum_lost(&v3, &set(&["a", "b"])));
        assert!(!quorum_lost(&v3, &set(&["d", "e"])));
        let v4 = v(&["a", "b", "c", "d"]);
        assert!(quorum_lost(&v4, &set(&["a", "e", "b"])));
        assert!(quorum_lost(&v4, &set(&["a", "b"])));
        assert!(!quorum_lost(&v4, &set(&["a"])));
    }

    #[test]
    fn gap_finding() {
        assert_eq!(gaps(&[1.0, 2.0, 30.0], 0.0, 31.0, 15.0), vec![(2.0, 30.0)]);
        assert_eq!(gaps(&[], 0.0, 20.0, 15.0), vec![(0.0, 20.0)]);
        assert!(gaps(&[5.0, 10.0], 0.0, 12.0, 15.0).is_empty());
    }

    #[test]
    fn windows() {
        let down = vec![
            DownEvent {
                at: 0.0,
                down: set(&[]),
            },
            DownEvent {
                at: 10.0,
                down: set(&["a"]),
            },
            DownEvent {
                at: 20.0,
                down: set(&["a", "b"]),
            },
            DownEvent {
                at: 40.0,
                down: set(&["b"]),
            },
            DownEvent {
                at: 50.0,
                down: set(&[]),
            },
        ];
        let voters = vec![VoterObs {
            at: 1.0,
            voters: v(&["a", "b", "c"]),
        }];
        let ex = excused(&down, &voters, 100.0, 10.0, 20.0);
        assert_eq!(ex.len(), 1);
        assert_eq!((ex[0].0, ex[0].1), (20.0, 60.0));
        // A gap inside the excused window passes; one that runs past it by
        // more than 15 s does not.
        assert!(longest_uncovered((19.0, 62.0), &ex) < 15.0);
        assert!(longest_uncovered((19.0, 80.0), &ex) > 15.0);
        assert!(longest_uncovered((0.0, 19.0), &ex) > 15.0);
    }
}
