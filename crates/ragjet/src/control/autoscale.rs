//! Autoscaling advice: a pure function from observed signals and a policy
//! to "scale up / down / hold" with the reason, for an operator or an
//! autoscaler (Kubernetes HPA through a custom metric, KEDA) to act on.
//!
//! Rules, first match wins:
//! 1. within `cooldown` of the last change: hold (avoid flapping);
//! 2. utilisation above `scale_up_utilisation`, p95 above its target while
//!    utilisation is above the target band's low end, or more queued work
//!    per replica than `max_queue_per_replica`: up, to the replicas that
//!    bring utilisation to the middle of the target band;
//! 3. error rate above `max_error_rate` (with no capacity signal): hold, as
//!    more replicas do not fix failing requests;
//! 4. utilisation below `scale_down_utilisation` with an empty queue and
//!    p95 within target: down, to the replicas that bring utilisation back
//!    to the band's middle;
//! 5. otherwise hold.
//!
//! Replicas stay within `min_replicas..=max_replicas`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ControlError, Result};

/// What is observed, over the last few minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleSignals {
    /// Replicas running now.
    pub replicas: u32,
    /// Requests waiting, all replicas together.
    pub queue_depth: u64,
    /// 95th percentile latency in milliseconds.
    pub p95_ms: f64,
    /// Busy share of capacity, 0..=1 (mean over replicas).
    pub utilisation: f64,
    /// Share of failed requests, 0..=1.
    pub error_rate: f64,
    /// Seconds since the replica count last changed; `None`: long ago.
    #[serde(default)]
    pub seconds_since_last_scale: Option<f64>,
}

/// The policy; defaults from ragjet's design.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalePolicy {
    /// Above this utilisation, scale up (0.85).
    pub scale_up_utilisation: f64,
    /// Below this utilisation, scale down (0.30).
    pub scale_down_utilisation: f64,
    /// Low end of the target band (0.70).
    pub target_low: f64,
    /// High end of the target band (0.80).
    pub target_high: f64,
    /// Least time between changes (5 minutes).
    #[serde(with = "secs")]
    pub cooldown: Duration,
    /// p95 latency target in milliseconds (500, the SLO's).
    pub p95_target_ms: f64,
    /// Queued requests per replica that call for another replica (50).
    pub max_queue_per_replica: u64,
    /// Error rate above which scaling is held (0.05).
    pub max_error_rate: f64,
    /// Fewest replicas (1).
    pub min_replicas: u32,
    /// Most replicas (20).
    pub max_replicas: u32,
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

impl Default for ScalePolicy {
    fn default() -> Self {
        Self {
            scale_up_utilisation: 0.85,
            scale_down_utilisation: 0.30,
            target_low: 0.70,
            target_high: 0.80,
            cooldown: Duration::from_secs(300),
            p95_target_ms: 500.0,
            max_queue_per_replica: 50,
            max_error_rate: 0.05,
            min_replicas: 1,
            max_replicas: 20,
        }
    }
}

impl ScalePolicy {
    /// Checks the thresholds' order and ranges.
    pub fn validate(&self) -> Result<()> {
        let ordered = 0.0 <= self.scale_down_utilisation
            && self.scale_down_utilisation < self.target_low
            && self.target_low <= self.target_high
            && self.target_high < self.scale_up_utilisation
            && self.scale_up_utilisation <= 1.0;
        if !ordered {
            return Err(ControlError::InvalidConfig(
                "autoscale thresholds must satisfy 0 <= scale_down < target_low <= target_high < scale_up <= 1".into(),
            ));
        }
        if self.min_replicas == 0 || self.min_replicas > self.max_replicas {
            return Err(ControlError::InvalidConfig(
                "autoscale replicas must satisfy 1 <= min_replicas <= max_replicas".into(),
            ));
        }
        let latency_ok = self.p95_target_ms.is_finite() && self.p95_target_ms > 0.0;
        if !latency_ok
            || !(0.0..=1.0).contains(&self.max_error_rate)
            || self.max_queue_per_replica == 0
        {
            return Err(ControlError::InvalidConfig(
                "autoscale p95_target_ms must be > 0, max_error_rate within 0..=1, max_queue_per_replica >= 1".into(),
            ));
        }
        Ok(())
    }
}

/// Which way to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleAction {
    /// Add replicas.
    Up,
    /// Remove replicas.
    Down,
    /// Keep the count.
    Hold,
}

/// The advice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleDecision {
    /// Which way.
    pub action: ScaleAction,
    /// Replicas to run.
    pub desired_replicas: u32,
    /// Why, in words.
    pub reason: String,
}

fn check(s: &ScaleSignals) -> Result<()> {
    let unit = |v: f64| (0.0..=1.0).contains(&v);
    let since_ok = s
        .seconds_since_last_scale
        .is_none_or(|t| t.is_finite() && t >= 0.0);
    let p95_ok = s.p95_ms.is_finite() && s.p95_ms >= 0.0;
    let ok = s.replicas > 0 && unit(s.utilisation) && unit(s.error_rate) && p95_ok && since_ok;
    if !ok {
        return Err(ControlError::InvalidInput(
            "signals: replicas >= 1, utilisation and error_rate within 0..=1, p95_ms and seconds_since_last_scale finite and >= 0".into(),
        ));
    }
    Ok(())
}

/// The decision for `signals` under `policy`.
///
/// ```
/// use ragjet::control::{advise, ControlError, ScaleAction, ScalePolicy, ScaleSignals};
///
/// # fn main() -> Result<(), ControlError> {
/// let busy = ScaleSignals {
///     replicas: 2,
///     queue_depth: 10,
///     p95_ms: 450.0,
///     utilisation: 0.95,
///     error_rate: 0.0,
///     seconds_since_last_scale: None,
/// };
/// let d = advise(&busy, &ScalePolicy::default())?;
/// // 2 replicas at 95 % is 1.9 replicas of work: 3 bring it to 63 %, below
/// // the 75 % band middle.
/// assert_eq!((d.action, d.desired_replicas), (ScaleAction::Up, 3));
/// let just_scaled = ScaleSignals { seconds_since_last_scale: Some(60.0), ..busy };
/// assert_eq!(advise(&just_scaled, &ScalePolicy::default())?.action, ScaleAction::Hold);
/// # Ok(()) }
/// ```
pub fn advise(signals: &ScaleSignals, policy: &ScalePolicy) -> Result<ScaleDecision> {
    policy.validate()?;
    check(signals)?;
    let s = signals;
    let p = policy;
    let n = s.replicas;
    let clamp = |r: u32| r.clamp(p.min_replicas, p.max_replicas);
    let hold = |reason: String| ScaleDecision {
        action: ScaleAction::Hold,
        desired_replicas: clamp(n),
        reason,
    };
    if let Some(t) = s.seconds_since_last_scale {
        if t < p.cooldown.as_secs_f64() {
            return Ok(hold(format!(
                "cooldown: last change {t:.0} s ago, {:.0} s needed",
                p.cooldown.as_secs_f64()
            )));
        }
    }
    let mid = (p.target_low + p.target_high) / 2.0;
    // Replicas that put the current load at the band's middle.
    let for_target = ((n as f64 * s.utilisation) / mid).ceil().max(1.0) as u32;
    let queue_per_replica = s.queue_depth as f64 / n as f64;
    let mut up_reason = None;
    if s.utilisation > p.scale_up_utilisation {
        up_reason = Some(format!(
            "utilisation {:.0} % above {:.0} %",
            s.utilisation * 100.0,
            p.scale_up_utilisation * 100.0
        ));
    } else if s.p95_ms > p.p95_target_ms && s.utilisation >= p.target_low {
        up_reason = Some(format!(
            "p95 {:.0} ms above the {:.0} ms target at {:.0} % utilisation",
            s.p95_ms,
            p.p95_target_ms,
            s.utilisation * 100.0
        ));
    } else if queue_per_replica > p.max_queue_per_replica as f64 {
        up_reason = Some(format!(
            "{queue_per_replica:.0} queued per replica, above {}",
            p.max_queue_per_replica
        ));
    }
    if let Some(reason) = up_reason {
        let desired = clamp(for_target.max(n + 1));
        if desired <= n {
            return Ok(hold(format!(
                "{reason}, but already at max_replicas {}",
                p.max_replicas
            )));
        }
        return Ok(ScaleDecision {
            action: ScaleAction::Up,
            desired_replicas: desired,
            reason,
        });
    }
    if s.error_rate > p.max_error_rate {
        return Ok(hold(format!(
            "error rate {:.1} % above {:.1} % without a capacity signal: more replicas would not fix it",
            s.error_rate * 100.0,
            p.max_error_rate * 100.0
        )));
    }
    if s.utilisation < p.scale_down_utilisation && s.queue_depth == 0 && s.p95_ms <= p.p95_target_ms
    {
        let desired = clamp(for_target.min(n.saturating_sub(1)).max(1));
        if desired >= n {
            return Ok(hold(format!(
                "utilisation {:.0} % is low, but already at min_replicas {}",
                s.utilisation * 100.0,
                p.min_replicas
            )));
        }
        return Ok(ScaleDecision {
            action: ScaleAction::Down,
            desired_replicas: desired,
            reason: format!(
                "utilisation {:.0} % below {:.0} % with an empty queue",
                s.utilisation * 100.0,
                p.scale_down_utilisation * 100.0
            ),
        });
    }
    Ok(hold(format!(
        "utilisation {:.0} %, p95 {:.0} ms, queue {}: within policy",
        s.utilisation * 100.0,
        s.p95_ms,
        s.queue_depth
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(replicas: u32, util: f64, p95: f64, queue: u64, err: f64) -> ScaleSignals {
        ScaleSignals {
            replicas,
            queue_depth: queue,
            p95_ms: p95,
            utilisation: util,
            error_rate: err,
            seconds_since_last_scale: None,
        }
    }

    /// A recorded trace: one sample a minute over a traffic peak, the
    /// replica count following the advice, as an autoscaler would.
    #[test]
    fn follows_a_recorded_traffic_peak() {
        let p = ScalePolicy::default();
        // (minute, load in replica-equivalents of work, p95 ms, queue)
        let trace = [
            (0, 1.2, 180.0, 0),
            (1, 1.4, 190.0, 0),
            (2, 2.7, 650.0, 40),
            (3, 2.9, 700.0, 80),
            (4, 3.1, 520.0, 30),
            (6, 3.0, 300.0, 0),
            (9, 3.0, 250.0, 0),
            (12, 2.8, 240.0, 0),
            (20, 0.8, 120.0, 0),
            (26, 0.7, 110.0, 0),
            (40, 0.6, 100.0, 0),
        ];
        let mut replicas = 2u32;
        let mut last_change: Option<u32> = None;
        let mut log = Vec::new();
        for (minute, load, p95, queue) in trace {
            let util = (load / replicas as f64).min(1.0);
            let s = ScaleSignals {
                seconds_since_last_scale: last_change.map(|m| ((minute - m) * 60) as f64),
                ..sig(replicas, util, p95, queue, 0.0)
            };
            let d = advise(&s, &p).unwrap();
            log.push((minute, replicas, d.action));
            if d.desired_replicas != replicas {
                replicas = d.desired_replicas;
                last_change = Some(minute);
            }
        }
        use ScaleAction::*;
        assert_eq!(
            log,
            vec![
                (0, 2, Hold),  // 60 %
                (1, 2, Hold),  // 70 %
                (2, 2, Up),    // saturated: one more, to 3
                (3, 3, Hold),  // cooldown (1 min)
                (4, 3, Hold),  // cooldown (2 min)
                (6, 3, Hold),  // cooldown (4 min), still saturated
                (9, 3, Up),    // 100 %: to ceil(3 × 1.0 / 0.75) = 4
                (12, 4, Hold), // 70 %, in cooldown anyway
                (20, 4, Down), // 20 %: to ceil(4 × 0.2 / 0.75) = 2
                (26, 2, Hold), // 35 %
                (40, 2, Hold), // 30 %: not below
            ]
        );
        assert_eq!(replicas, 2);
    }

    #[test]
    fn each_rule_and_its_reason() {
        let p = ScalePolicy::default();
        let d = advise(&sig(4, 0.9, 200.0, 0, 0.0), &p).unwrap();
        assert_eq!((d.action, d.desired_replicas), (ScaleAction::Up, 5));
        assert!(d.reason.contains("utilisation 90 %"), "{}", d.reason);
        let d = advise(&sig(4, 0.75, 900.0, 0, 0.0), &p).unwrap();
        assert_eq!((d.action, d.desired_replicas), (ScaleAction::Up, 5));
        assert!(d.reason.contains("p95"), "{}", d.reason);
        // Slow but idle: latency is not a capacity problem.
        assert_eq!(
            advise(&sig(4, 0.2, 900.0, 0, 0.0), &p).unwrap().action,
            ScaleAction::Hold
        );
        let d = advise(&sig(2, 0.6, 200.0, 500, 0.0), &p).unwrap();
        assert_eq!(d.action, ScaleAction::Up);
        assert!(d.reason.contains("queued"), "{}", d.reason);
        let d = advise(&sig(4, 0.2, 200.0, 0, 0.2), &p).unwrap();
        assert_eq!(d.action, ScaleAction::Hold);
        assert!(d.reason.contains("error rate"), "{}", d.reason);
        let d = advise(&sig(10, 0.1, 100.0, 0, 0.0), &p).unwrap();
        assert_eq!((d.action, d.desired_replicas), (ScaleAction::Down, 2));
        let d = advise(&sig(1, 0.1, 100.0, 0, 0.0), &p).unwrap();
        assert_eq!((d.action, d.desired_replicas), (ScaleAction::Hold, 1));
        let d = advise(&sig(20, 0.99, 100.0, 0, 0.0), &p).unwrap();
        assert_eq!((d.action, d.desired_replicas), (ScaleAction::Hold, 20));
        assert!(d.reason.contains("max_replicas"));
    }

    #[test]
    fn bad_signals_and_policies_are_errors() {
        let p = ScalePolicy::default();
        assert!(advise(&sig(0, 0.5, 1.0, 0, 0.0), &p).is_err());
        assert!(advise(&sig(1, 1.5, 1.0, 0, 0.0), &p).is_err());
        assert!(advise(&sig(1, 0.5, f64::NAN, 0, 0.0), &p).is_err());
        let bad = ScalePolicy {
            scale_down_utilisation: 0.9,
            ..ScalePolicy::default()
        };
        assert!(advise(&sig(1, 0.5, 1.0, 0, 0.0), &bad).is_err());
    }
}
