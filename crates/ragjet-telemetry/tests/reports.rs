//! Latency percentiles against a naive sorted reference, SLO verdicts and
//! error budget, cost and budget alerts — all on a manual clock.

use ragjet_telemetry::{
    BudgetPeriod, Budgets, CostTracker, LatencyRecorder, ManualClock, ModelPrice, Outcome,
    SloReport, SloTargets, TelemetryError,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// 2026-11-25T10:00:00Z.
const START: Duration = Duration::from_secs(20_782 * 86_400 + 10 * 3600);

fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

#[test]
fn percentiles_match_sorted_reference() {
    let clock = ManualClock::new(START);
    let rec =
        LatencyRecorder::with_clock(Duration::from_secs(60), Arc::new(clock.clone())).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut us = Vec::new();
    for _ in 0..20_000 {
        // Log-uniform from 50 µs to 5 s: a heavy tail like real queries.
        let v = (50.0 * (1e5f64).powf(rng.random::<f64>())) as u64;
        us.push(v);
        rec.record(Duration::from_micros(v), Outcome::Ok);
        clock.advance(Duration::from_micros(1500));
    }
    us.sort_unstable();
    let snap = rec.snapshot();
    assert_eq!(snap.count, 20_000);
    for (q, got) in [(0.5, snap.p50_ms), (0.95, snap.p95_ms), (0.99, snap.p99_ms)] {
        let want = nearest_rank(&us, q) as f64 / 1e3;
        // 3 significant digits: within 0.1 % (+1 µs for tiny values).
        assert!(
            (got - want).abs() <= want * 1e-3 + 1e-3,
            "p{q}: got {got} ms, reference {want} ms"
        );
    }
    assert_eq!(snap.max_ms, *us.last().unwrap() as f64 / 1e3);
    let mean = us.iter().sum::<u64>() as f64 / us.len() as f64 / 1e3;
    assert!((snap.mean_ms - mean).abs() < 1e-9);
    // 20k requests over 30 s of clock time.
    assert!(
        (snap.throughput_per_second - 20_000.0 / 30.0).abs() < 1.0,
        "{}",
        snap.throughput_per_second
    );
}

#[test]
fn old_samples_leave_the_window() {
    let clock = ManualClock::new(START);
    let rec =
        LatencyRecorder::with_clock(Duration::from_secs(10), Arc::new(clock.clone())).unwrap();
    for _ in 0..100 {
        rec.record(Duration::from_secs(2), Outcome::Error);
    }
    clock.advance(Duration::from_secs(6));
    for _ in 0..50 {
        rec.record(Duration::from_millis(10), Outcome::Ok);
    }
    let s = rec.snapshot();
    assert_eq!((s.count, s.errors), (150, 100));
    // 12 s after the slow burst, only the fast one is left.
    clock.advance(Duration::from_secs(6));
    let s = rec.snapshot();
    assert_eq!((s.count, s.errors), (50, 0));
    assert!((s.max_ms - 10.0).abs() < 1e-9);
    // The window is whole slots: 12 s sits on a slot boundary, so the
    // current slot is empty and nine full ones are covered.
    assert_eq!(s.window_seconds, 9.0);
    assert!((s.throughput_per_second - 50.0 / 9.0).abs() < 1e-9, "{s:?}");
    clock.advance(Duration::from_secs(60));
    assert_eq!(rec.snapshot().count, 0);
    assert_eq!(rec.snapshot().p99_ms, 0.0);
}

#[test]
fn too_short_window_is_rejected() {
    let err = LatencyRecorder::new(Duration::from_nanos(5)).unwrap_err();
    assert!(matches!(err, TelemetryError::InvalidConfig(_)));
}

fn window_with(ok_ms: &[u64], errors: u64, unavailable: u64) -> ragjet_telemetry::LatencySnapshot {
    let clock = ManualClock::new(START);
    let rec =
        LatencyRecorder::with_clock(Duration::from_secs(60), Arc::new(clock.clone())).unwrap();
    for &ms in ok_ms {
        rec.record(Duration::from_millis(ms), Outcome::Ok);
    }
    for _ in 0..errors {
        rec.record(Duration::from_millis(5), Outcome::Error);
    }
    for _ in 0..unavailable {
        rec.record(Duration::from_millis(5), Outcome::Unavailable);
    }
    clock.advance(Duration::from_secs(1));
    rec.snapshot()
}

#[test]
fn slo_defaults_and_error_budget() {
    let t = SloTargets::default();
    assert_eq!(t.p50, Duration::from_millis(200));
    assert_eq!(t.p95, Duration::from_millis(500));
    assert_eq!(t.p99, Duration::from_secs(1));
    assert_eq!((t.max_error_rate, t.availability), (0.001, 0.9995));

    // 10 000 fast requests, 2 unavailable: error rate 0.02 % (< 0.1 %),
    // availability 99.98 % (≥ 99.95 %); budget 5 requests, 2 spent → 60 %.
    let w = window_with(&vec![50; 9_998], 0, 2);
    let r = SloReport::evaluate(&w, &t);
    assert!(r.all_met, "{r}");
    assert!(
        (r.error_budget_remaining - 0.6).abs() < 1e-9,
        "{}",
        r.error_budget_remaining
    );

    // 8 unavailable of 10 000: availability 99.92 % misses, budget overspent.
    let w = window_with(&vec![50; 9_992], 0, 8);
    let r = SloReport::evaluate(&w, &t);
    let avail = r.checks.iter().find(|c| c.name == "availability").unwrap();
    assert!(!avail.met && !r.all_met);
    assert!((r.error_budget_remaining + 0.6).abs() < 1e-9);
    assert!(
        r.checks
            .iter()
            .find(|c| c.name == "error_rate")
            .unwrap()
            .met
    );

    // 11 errors of 10 000 is 0.11 %: error rate misses, availability holds.
    let w = window_with(&vec![50; 9_989], 11, 0);
    let r = SloReport::evaluate(&w, &t);
    assert!(
        !r.checks
            .iter()
            .find(|c| c.name == "error_rate")
            .unwrap()
            .met
    );
    assert_eq!(r.error_budget_remaining, 1.0);

    // A slow tail breaks p99 but not p50.
    let mut ms = vec![50; 980];
    ms.extend(vec![1500; 20]);
    let r = SloReport::evaluate(&window_with(&ms, 0, 0), &t);
    let met = |n: &str| r.checks.iter().find(|c| c.name == n).unwrap().met;
    assert!(met("p50") && met("p95") && !met("p99"));

    // Reports as JSON and text.
    let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert_eq!(json["all_met"], false);
    assert_eq!(json["window"]["count"], 1000);
    let text = r.to_string();
    assert!(
        text.starts_with("SLO MISSED") && text.contains("MISS p99"),
        "{text}"
    );
}

fn prices() -> HashMap<String, ModelPrice> {
    HashMap::from([(
        "gpt".to_string(),
        ModelPrice {
            input_per_million: 2.0,
            output_per_million: 8.0,
        },
    )])
}

#[test]
fn cost_per_request_and_budget_alerts() {
    let clock = ManualClock::new(START);
    let budgets = Budgets {
        daily_usd: Some(1.0),
        monthly_usd: Some(2.5),
    };
    let tracker = CostTracker::with_clock(prices(), budgets, Arc::new(clock.clone())).unwrap();
    let alerts = tracker.alert_channel();

    // 100k in + 25k out = 0.2 + 0.2 = $0.40 per request.
    assert!((tracker.record("gpt", 100_000, 25_000).unwrap() - 0.4).abs() < 1e-12);
    assert!(alerts.try_recv().is_err());
    tracker.record("gpt", 100_000, 25_000).unwrap(); // $0.80: daily 80 %
    let a = alerts.try_recv().unwrap();
    assert_eq!((a.period, a.threshold), (BudgetPeriod::Daily, 0.8));
    assert_eq!(a.period_label, "2026-11-25");
    assert!(alerts.try_recv().is_err(), "one alert per threshold");
    tracker.record("gpt", 100_000, 25_000).unwrap(); // $1.20: daily 100 %
    let a = alerts.try_recv().unwrap();
    assert_eq!((a.period, a.threshold), (BudgetPeriod::Daily, 1.0));
    tracker.record("gpt", 1, 0).unwrap();
    assert!(alerts.try_recv().is_err(), "no repeat within the day");

    // Next day: the daily budget starts again; the month carries on.
    clock.advance(Duration::from_secs(86_400));
    tracker.record("gpt", 100_000, 25_000).unwrap(); // day $0.40, month $1.60
    assert!(alerts.try_recv().is_err());
    tracker.record("gpt", 100_000, 25_000).unwrap(); // day $0.80, month $2.00
    let got: Vec<_> = alerts.try_iter().map(|a| (a.period, a.threshold)).collect();
    assert_eq!(
        got,
        vec![(BudgetPeriod::Daily, 0.8), (BudgetPeriod::Monthly, 0.8)]
    );

    let r = tracker.report();
    assert_eq!(r.requests, 6);
    assert!((r.total_usd - 2.0).abs() < 1e-5);
    assert!((r.cost_per_1k_requests_usd - 2.0 / 6.0 * 1000.0).abs() < 1e-2);
    assert_eq!(r.daily.period, "2026-11-26");
    assert!((r.daily.used_fraction.unwrap() - 0.8).abs() < 1e-9);
    assert_eq!(r.monthly.period, "2026-11");
    let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert_eq!(json["by_model"][0]["model"], "gpt");
    assert_eq!(json["by_model"][0]["output_tokens"], 125_000);
    assert_eq!(json["by_model"][0]["input_tokens"], 500_001);
    assert!(r.to_string().contains("per 1k requests"));

    // Next month: the monthly figure restarts.
    clock.advance(Duration::from_secs(6 * 86_400));
    assert_eq!(tracker.report().monthly.period, "2026-12");
    assert_eq!(tracker.report().monthly.spent_usd, 0.0);
}

#[test]
fn callbacks_and_bad_input() {
    let clock = ManualClock::new(START);
    let budgets = Budgets {
        daily_usd: Some(0.1),
        monthly_usd: None,
    };
    let tracker = CostTracker::with_clock(prices(), budgets, Arc::new(clock)).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    tracker.on_alert(move |a| sink.lock().unwrap().push(a.threshold));
    // One big request crosses both thresholds at once.
    tracker.record("gpt", 1_000_000, 0).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0.8, 1.0]);

    assert!(matches!(
        tracker.record("nope", 1, 1),
        Err(TelemetryError::UnknownModel(_))
    ));
    let bad = HashMap::from([(
        "x".to_string(),
        ModelPrice {
            input_per_million: -1.0,
            output_per_million: 0.0,
        },
    )]);
    assert!(CostTracker::new(bad, Budgets::default()).is_err());
    assert!(CostTracker::new(
        prices(),
        Budgets {
            daily_usd: Some(f64::NAN),
            monthly_usd: None
        }
    )
    .is_err());
}

#[test]
fn cost_counter_carries_fractions_of_a_microdollar() {
    let (recorder, handle) = ragjet_telemetry::build_recorder().unwrap();
    let tracker = CostTracker::with_clock(
        HashMap::from([(
            "embed".to_string(),
            ModelPrice {
                input_per_million: 0.02,
                output_per_million: 0.0,
            },
        )]),
        Budgets::default(),
        Arc::new(ManualClock::new(START)),
    )
    .unwrap();
    // 15 tokens at $0.02 per million is $0.0000003: under a micro-dollar
    // each, so rounding every request alone would count nothing at all.
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..10_000 {
            tracker.record("embed", 15, 0).unwrap();
        }
    });
    let total_usd = tracker.report().total_usd;
    assert!((total_usd - 0.003).abs() < 1e-12, "{total_usd}");
    let text = handle.render();
    assert!(
        text.contains("\nragjet_cost_microdollars_total{model=\"embed\"} 3000\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE ragjet_cost_microdollars_total counter"));
}
