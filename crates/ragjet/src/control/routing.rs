//! Model routing: send simple requests to a cheap, fast model and complex
//! ones to a capable one.
//!
//! A request's complexity is a score in 0..=1 from its length in tokens
//! (half the weight, saturating at `long_tokens`) and its question form
//! ([`Intent`]: factual 0.1, procedural 0.5,
//! exploratory 0.7, comparison 0.9; the other half). A user rule may pick
//! a route outright. Otherwise the router takes the cheapest route rated
//! for the score and within the request's latency budget; when none is,
//! the most capable route (a complex request served slowly beats one
//! served badly).

use std::sync::Arc;

use metrics::counter;
use ragjet_telemetry::metrics::{labels, ROUTE_DECISIONS_TOTAL};
use serde::Serialize;

use super::{ControlError, Result};
use crate::query::Intent;

/// One model a router can send requests to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRoute {
    /// Route name (the `route` label).
    pub name: String,
    /// Model identifier handed to the caller.
    pub model: String,
    /// Highest complexity score this model is trusted with (0..=1).
    pub max_complexity: f64,
    /// Price, USD per 1k tokens.
    pub cost_per_1k_tokens: f64,
    /// Typical (p95) latency in milliseconds.
    pub p95_latency_ms: f64,
}

impl ModelRoute {
    /// A route to `model` for complexity up to `max_complexity`.
    pub fn new(
        name: impl Into<String>,
        model: impl Into<String>,
        max_complexity: f64,
        cost_per_1k_tokens: f64,
        p95_latency_ms: f64,
    ) -> Self {
        Self {
            name: name.into(),
            model: model.into(),
            max_complexity,
            cost_per_1k_tokens,
            p95_latency_ms,
        }
    }
}

/// What the router is asked about.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest<'a> {
    /// The request's text (question or prompt).
    pub text: &'a str,
    /// Its length in the model's tokens; `None`: estimated from words.
    pub tokens: Option<usize>,
    /// Longest acceptable latency in milliseconds.
    pub latency_budget_ms: Option<f64>,
    /// Who asks (for rules).
    pub user: Option<&'a str>,
}

/// The complexity estimate of a request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Complexity {
    /// Tokens counted or estimated.
    pub tokens: usize,
    /// Question form.
    #[serde(serialize_with = "intent_name")]
    pub intent: Intent,
    /// Score in 0..=1.
    pub score: f64,
}

fn intent_name<S: serde::Serializer>(i: &Intent, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(match i {
        Intent::Factual => "factual",
        Intent::Comparison => "comparison",
        Intent::Procedural => "procedural",
        Intent::Exploratory => "exploratory",
    })
}

/// Why a route was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteReason {
    /// A user rule picked it.
    Rule,
    /// The cheapest route rated for the request's complexity.
    Complexity,
    /// Rated routes were too slow for the budget; the cheapest fast one.
    Latency,
    /// No route fits: the most capable one.
    Fallback,
}

impl RouteReason {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Rule => "rule",
            RouteReason::Complexity => "complexity",
            RouteReason::Latency => "latency",
            RouteReason::Fallback => "fallback",
        }
    }
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteDecision {
    /// Route chosen.
    pub route: String,
    /// Its model.
    pub model: String,
    /// The request's complexity.
    pub complexity: Complexity,
    /// Why.
    pub reason: RouteReason,
}

/// A user rule: the name of a route for this request, or `None` to let the
/// router decide.
pub type RouteRule = Arc<dyn Fn(&RouteRequest<'_>, &Complexity) -> Option<String> + Send + Sync>;

/// A model router; `Send + Sync`.
///
/// ```
/// use ragjet::control::{ControlError, ModelRoute, RouteReason, RouteRequest, Router};
///
/// # fn main() -> Result<(), ControlError> {
/// let router = Router::new(
///     "answers",
///     vec![
///         ModelRoute::new("small", "gpt-4o-mini", 0.4, 0.15, 800.0),
///         ModelRoute::new("large", "gpt-4o", 1.0, 2.5, 2500.0),
///     ],
/// )?
/// .rule(|req, _| (req.user == Some("vip")).then(|| "large".to_string()));
/// let ask = |text: &'static str, user: Option<&'static str>| {
///     router.route(&RouteRequest { text, user, ..Default::default() })
/// };
/// assert_eq!(ask("what is a kludge", None)?.model, "gpt-4o-mini");
/// let hard = ask("compare the jargon of MIT versus Stanford hackers", None)?;
/// assert_eq!((hard.model.as_str(), hard.reason), ("gpt-4o", RouteReason::Complexity));
/// assert_eq!(ask("what is a kludge", Some("vip"))?.reason, RouteReason::Rule);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Router {
    name: String,
    routes: Vec<ModelRoute>,
    rules: Vec<RouteRule>,
    long_tokens: usize,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Router {
    /// A router named `name` over `routes` (at least one).
    pub fn new(name: impl Into<String>, routes: Vec<ModelRoute>) -> Result<Self> {
        if routes.is_empty() {
            return Err(ControlError::InvalidConfig("a router needs a route".into()));
        }
        for (i, r) in routes.iter().enumerate() {
            if r.name.is_empty() || routes[..i].iter().any(|o| o.name == r.name) {
                return Err(ControlError::InvalidConfig(format!(
                    "route names must be non-empty and unique: {:?}",
                    r.name
                )));
            }
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !(0.0..=1.0).contains(&r.max_complexity)
                || !ok(r.cost_per_1k_tokens)
                || !ok(r.p95_latency_ms)
            {
                return Err(ControlError::InvalidConfig(format!(
                    "route {:?}: max_complexity must be within 0..=1, cost and latency finite and >= 0",
                    r.name
                )));
            }
        }
        Ok(Self {
            name: name.into(),
            routes,
            rules: Vec::new(),
            long_tokens: 512,
        })
    }

    /// Adds a rule, asked before the complexity rule (in order added).
    pub fn rule(
        mut self,
        rule: impl Fn(&RouteRequest<'_>, &Complexity) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.rules.push(Arc::new(rule));
        self
    }

    /// Tokens at which length alone counts as fully complex (default 512).
    pub fn long_tokens(mut self, tokens: usize) -> Self {
        self.long_tokens = tokens.max(1);
        self
    }

    /// The routes.
    pub fn routes(&self) -> &[ModelRoute] {
        &self.routes
    }

    /// The complexity estimate of a request.
    pub fn complexity(&self, req: &RouteRequest<'_>) -> Complexity {
        // About 4 tokens per 3 English words for WordPiece/BPE models.
        let tokens = req
            .tokens
            .unwrap_or_else(|| (req.text.split_whitespace().count() * 4).div_ceil(3));
        let intent = Intent::classify(req.text);
        let form = match intent {
            Intent::Factual => 0.1,
            Intent::Procedural => 0.5,
            Intent::Exploratory => 0.7,
            Intent::Comparison => 0.9,
        };
        let length = (tokens as f64 / self.long_tokens as f64).min(1.0);
        Complexity {
            tokens,
            intent,
            score: 0.5 * length + 0.5 * form,
        }
    }

    /// Chooses a route for `req`; counts the decision.
    pub fn route(&self, req: &RouteRequest<'_>) -> Result<RouteDecision> {
        let complexity = self.complexity(req);
        let (route, reason) = self.choose(req, &complexity)?;
        counter!(ROUTE_DECISIONS_TOTAL,
            labels::ROUTER => self.name.clone(),
            labels::ROUTE => route.name.clone(),
            labels::REASON => reason.as_str())
        .increment(1);
        Ok(RouteDecision {
            route: route.name.clone(),
            model: route.model.clone(),
            complexity,
            reason,
        })
    }

    fn choose(&self, req: &RouteRequest<'_>, c: &Complexity) -> Result<(&ModelRoute, RouteReason)> {
        for rule in &self.rules {
            if let Some(name) = rule(req, c) {
                let route = self.routes.iter().find(|r| r.name == name).ok_or_else(|| {
                    ControlError::InvalidConfig(format!(
                        "a routing rule named unknown route {name:?}"
                    ))
                })?;
                return Ok((route, RouteReason::Rule));
            }
        }
        let cheapest = |it: &mut dyn Iterator<Item = &'_ ModelRoute>| {
            it.min_by(|a, b| {
                a.cost_per_1k_tokens
                    .total_cmp(&b.cost_per_1k_tokens)
                    .then(a.p95_latency_ms.total_cmp(&b.p95_latency_ms))
            })
            .cloned()
        };
        let fast = |r: &ModelRoute| req.latency_budget_ms.is_none_or(|b| r.p95_latency_ms <= b);
        let rated = |r: &ModelRoute| r.max_complexity >= c.score;
        if let Some(r) = cheapest(&mut self.routes.iter().filter(|r| rated(r) && fast(r))) {
            return Ok((self.find(&r.name), RouteReason::Complexity));
        }
        if self.routes.iter().any(rated) {
            // Rated routes exist but are too slow: the most capable fast one.
            if let Some(r) = self
                .routes
                .iter()
                .filter(|r| fast(r))
                .max_by(|a, b| a.max_complexity.total_cmp(&b.max_complexity))
            {
                return Ok((r, RouteReason::Latency));
            }
        }
        let best = self
            .routes
            .iter()
            .max_by(|a, b| {
                a.max_complexity
                    .total_cmp(&b.max_complexity)
                    .then(b.cost_per_1k_tokens.total_cmp(&a.cost_per_1k_tokens))
            })
            .expect("a router has routes");
        Ok((best, RouteReason::Fallback))
    }

    fn find(&self, name: &str) -> &ModelRoute {
        self.routes
            .iter()
            .find(|r| r.name == name)
            .expect("chosen among the routes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(
            "chat",
            vec![
                ModelRoute::new("simple", "small-llm", 0.4, 0.1, 300.0),
                ModelRoute::new("complex", "big-llm", 1.0, 2.0, 2000.0),
            ],
        )
        .unwrap()
    }

    fn req(text: &str) -> RouteRequest<'_> {
        RouteRequest {
            text,
            ..Default::default()
        }
    }

    #[test]
    fn simple_questions_go_cheap_and_complex_ones_capable() {
        let r = router();
        let d = r.route(&req("what is the capital of France?")).unwrap();
        assert_eq!(
            (d.route.as_str(), d.reason),
            ("simple", RouteReason::Complexity)
        );
        assert_eq!(d.model, "small-llm");
        let d = r
            .route(&req(
                "compare the memory models of Rust and C++ with examples",
            ))
            .unwrap();
        assert_eq!(d.route, "complex");
        assert!(d.complexity.score > 0.4, "{:?}", d.complexity);
        // Length alone makes a factual question complex.
        let long = format!("what is {}", "word ".repeat(600));
        assert_eq!(r.route(&req(&long)).unwrap().route, "complex");
        let d = r
            .route(&RouteRequest {
                text: "what is x",
                tokens: Some(10_000),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(d.complexity.tokens, 10_000);
        assert_eq!(d.route, "complex");
    }

    #[test]
    fn rules_budgets_and_fallback() {
        let r = router().rule(|req, _| (req.user == Some("vip")).then(|| "complex".into()));
        let d = r
            .route(&RouteRequest {
                text: "what is x",
                user: Some("vip"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!((d.route.as_str(), d.reason), ("complex", RouteReason::Rule));
        let d = r
            .route(&RouteRequest {
                text: "compare a and b in depth",
                latency_budget_ms: Some(500.0),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (d.route.as_str(), d.reason),
            ("simple", RouteReason::Latency)
        );
        let strict = Router::new("x", vec![ModelRoute::new("only", "m", 0.05, 0.0, 1.0)]).unwrap();
        let d = strict.route(&req("compare a and b")).unwrap();
        assert_eq!(
            (d.route.as_str(), d.reason),
            ("only", RouteReason::Fallback)
        );
        let bad = router().rule(|_, _| Some("nope".into()));
        assert!(bad.route(&req("x")).is_err());
    }

    #[test]
    fn bad_routes_are_refused_and_decisions_counted() {
        assert!(Router::new("x", vec![]).is_err());
        assert!(Router::new("x", vec![ModelRoute::new("a", "m", 1.5, 0.0, 1.0)]).is_err());
        assert!(Router::new(
            "x",
            vec![
                ModelRoute::new("a", "m", 1.0, 0.0, 1.0),
                ModelRoute::new("a", "n", 1.0, 0.0, 1.0)
            ]
        )
        .is_err());
        let (recorder, handle) = ragjet_telemetry::build_recorder().unwrap();
        metrics::with_local_recorder(&recorder, || {
            let r = router();
            r.route(&req("what is x")).unwrap();
            r.route(&req("who is y")).unwrap();
        });
        assert!(handle.render().contains(
            "ragjet_route_decisions_total{router=\"chat\",route=\"simple\",reason=\"complexity\"} 2"
        ));
    }
}
