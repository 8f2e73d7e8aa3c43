//! The `MetricsStore` contract: what the collector writes and the Grafana
//! API reads, whatever database holds the points.
//!
//! A store keeps series (a metric name plus its tags) of points (Unix
//! milliseconds, value) and annotations. Implementations must:
//!
//! - make `write` idempotent: writing the same point (series, time) twice
//!   leaves one point, with the later value;
//! - answer `query` with every matching series, each with its points in time
//!   order within `[from_ms, to_ms]` (both inclusive), bucketed by `step_ms`
//!   when given: one point per bucket, at the bucket's start, aggregated as
//!   asked;
//! - list metric names, tag keys and tag values sorted and without repeats;
//! - never lose a batch silently: a write either stores every point or fails.
//!
//! [`conformance`] checks all of this against any implementation.

use std::future::Future;
use std::pin::Pin;

use api::metrics::{Annotation, Point, Tags};

/// What a store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// How the points of one step bucket become one value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Aggregation {
    /// The mean (the default).
    #[default]
    Avg,
    /// The smallest.
    Min,
    /// The largest.
    Max,
    /// The sum.
    Sum,
    /// The latest.
    Last,
}

impl Aggregation {
    /// Parses `avg`, `min`, `max`, `sum`, `last`.
    pub fn parse(s: &str) -> Option<Aggregation> {
        Some(match s {
            "avg" => Aggregation::Avg,
            "min" => Aggregation::Min,
            "max" => Aggregation::Max,
            "sum" => Aggregation::Sum,
            "last" => Aggregation::Last,
            _ => return None,
        })
    }

    /// Folds `values` (in time order, not empty) into one.
    pub fn fold(self, values: &[f64]) -> f64 {
        match self {
            Aggregation::Avg => values.iter().sum::<f64>() / values.len().max(1) as f64,
            Aggregation::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregation::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Aggregation::Sum => values.iter().sum(),
            Aggregation::Last => values.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// A condition on one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// The tag is present with this value.
    Equal(String, String),
    /// The tag is absent or has another value.
    NotEqual(String, String),
}

impl TagFilter {
    /// Whether a series with `tags` passes.
    pub fn matches(&self, tags: &Tags) -> bool {
        match self {
            TagFilter::Equal(k, v) => tags.get(k) == Some(v),
            TagFilter::NotEqual(k, v) => tags.get(k) != Some(v),
        }
    }
}

/// A range query of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    /// The metric.
    pub metric: String,
    /// Start, Unix ms, inclusive.
    pub from_ms: i64,
    /// End, Unix ms, inclusive.
    pub to_ms: i64,
    /// Every filter must pass.
    pub filters: Vec<TagFilter>,
    /// Bucket width in ms; `None` returns the raw points.
    pub step_ms: Option<i64>,
    /// How a bucket's points combine.
    pub aggregation: Aggregation,
}

/// The points of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric.
    pub metric: String,
    /// The series' tags.
    pub tags: Tags,
    /// `(time_ms, value)` in time order.
    pub points: Vec<(i64, f64)>,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the operation.
    #[error("metrics database error: {0}")]
    Database(String),
    /// The request cannot be answered as asked.
    #[error("invalid metrics request: {0}")]
    Invalid(String),
    /// The database did not answer in time or is throttling us.
    #[error("metrics database unavailable: {0}")]
    Unavailable(String),
}

/// Where metric points and annotations are kept (see the module doc).
pub trait MetricsStore: Send + Sync + 'static {
    /// Stores a batch of points.
    fn write<'a>(&'a self, points: &'a [Point]) -> StoreFuture<'a, ()>;
    /// The series of a metric over a range.
    fn query<'a>(&'a self, query: &'a SeriesQuery) -> StoreFuture<'a, Vec<Series>>;
    /// Every metric name with at least one series.
    fn metric_names(&self) -> StoreFuture<'_, Vec<String>>;
    /// Every tag key of any series.
    fn tag_keys(&self) -> StoreFuture<'_, Vec<String>>;
    /// Every value of tag `key` in any series.
    fn tag_values<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>>;
    /// Stores annotations.
    fn write_annotations<'a>(&'a self, annotations: &'a [Annotation]) -> StoreFuture<'a, ()>;
    /// Annotations within `[from_ms, to_ms]`, oldest first, at most `limit`.
    fn annotations(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Annotation>>;
}

/// Buckets time-ordered `points` by `step_ms` (bucket start = time rounded
/// down to a multiple of the step) and folds each bucket.
pub fn bucket(points: &[(i64, f64)], step_ms: i64, aggregation: Aggregation) -> Vec<(i64, f64)> {
    let step = step_ms.max(1);
    let mut out = Vec::new();
    let mut values = Vec::new();
    let mut current = None;
    for &(t, v) in points {
        let start = t.div_euclid(step) * step;
        if current != Some(start) {
            if let Some(s) = current {
                out.push((s, aggregation.fold(&values)));
            }
            values.clear();
            current = Some(start);
        }
        values.push(v);
    }
    if let Some(s) = current {
        out.push((s, aggregation.fold(&values)));
    }
    out
}

/// The behaviour every `MetricsStore` must show, as one async check that
/// panics with a message on the first violation. Run it against a fresh,
/// empty store.
pub mod conformance {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn query(metric: &str, from_ms: i64, to_ms: i64) -> SeriesQuery {
        SeriesQuery {
            metric: metric.to_owned(),
            from_ms,
            to_ms,
            filters: Vec::new(),
            step_ms: None,
            aggregation: Aggregation::Avg,
        }
    }

    /// Runs every check against `store`, with points of the last hour (so
    /// that no retention limit of a day or more touches them).
    pub async fn run(store: &dyn MetricsStore) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let t0 = (now - 3_600_000).div_euclid(60_000) * 60_000;
        assert!(
            store.metric_names().await.expect("names").is_empty(),
            "a fresh store lists no metric"
        );

        // Two series of one metric, one of another; written out of order and
        // in two batches, with one point written twice.
        let mut batch = Vec::new();
        for i in (0..60).rev() {
            batch.push(Point::new(
                "mkube_raft_term",
                &[("master", "m1")],
                t0 + i * 1000,
                i as f64,
            ));
            batch.push(Point::new(
                "mkube_raft_term",
                &[("master", "m2")],
                t0 + i * 1000,
                100.0 + i as f64,
            ));
        }
        store.write(&batch).await.expect("first batch");
        let second = vec![
            Point::new("mkube_pods", &[("phase", "Running")], t0, 7.0),
            Point::new("mkube_raft_term", &[("master", "m1")], t0 + 5000, 55.0),
        ];
        store.write(&second).await.expect("second batch");
        store.write(&[]).await.expect("an empty batch is fine");

        let mut all = store
            .query(&query("mkube_raft_term", t0, t0 + 59_000))
            .await
            .expect("query");
        all.sort_by(|a, b| a.tags.cmp(&b.tags));
        assert_eq!(all.len(), 2, "two series: {all:?}");
        assert_eq!(all[0].tags, tags(&[("master", "m1")]));
        assert_eq!(all[0].metric, "mkube_raft_term");
        assert_eq!(
            all[0].points.len(),
            60,
            "one point per time, the rewrite replaced one"
        );
        assert!(
            all[0].points.windows(2).all(|w| w[0].0 < w[1].0),
            "time order"
        );
        assert_eq!(all[0].points[5], (t0 + 5000, 55.0), "the later write wins");
        assert_eq!(all[1].points[0], (t0, 100.0));

        // The range is inclusive at both ends.
        let edge = store
            .query(&query("mkube_raft_term", t0 + 10_000, t0 + 12_000))
            .await
            .expect("edge");
        assert!(
            edge.iter().all(|s| s.points.len() == 3),
            "inclusive range: {edge:?}"
        );

        // Filters.
        let mut q = query("mkube_raft_term", t0, t0 + 59_000);
        q.filters = vec![TagFilter::Equal("master".into(), "m2".into())];
        let only = store.query(&q).await.expect("filtered");
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].tags, tags(&[("master", "m2")]));
        q.filters = vec![TagFilter::NotEqual("master".into(), "m2".into())];
        let not = store.query(&q).await.expect("not-equal");
        assert_eq!(not.len(), 1);
        assert_eq!(not[0].tags, tags(&[("master", "m1")]));
        q.filters = vec![TagFilter::Equal("master".into(), "nobody".into())];
        assert!(store.query(&q).await.expect("none").is_empty());

        // Steps: 10 s buckets of m2's 100..159.
        let mut q = query("mkube_raft_term", t0, t0 + 59_000);
        q.filters = vec![TagFilter::Equal("master".into(), "m2".into())];
        q.step_ms = Some(10_000);
        let stepped = store.query(&q).await.expect("stepped");
        let base = t0.div_euclid(10_000) * 10_000;
        assert_eq!(stepped.len(), 1);
        let first = stepped[0].points[0];
        assert_eq!(first.0, base, "buckets start at multiples of the step");
        assert!(stepped[0].points.iter().all(|(t, _)| t % 10_000 == 0));
        q.aggregation = Aggregation::Max;
        let max = store.query(&q).await.expect("max");
        assert_eq!(max[0].points.last().map(|p| p.1), Some(159.0));
        q.aggregation = Aggregation::Sum;
        let sum = store.query(&q).await.expect("sum");
        let total: f64 = sum[0].points.iter().map(|p| p.1).sum();
        assert_eq!(
            total,
            (100..160).sum::<i64>() as f64,
            "sums add up to every point"
        );

        // An unknown metric has no series; listings.
        assert!(
            store
                .query(&query("mkube_nothing", t0, t0 + 1))
                .await
                .expect("unknown")
                .is_empty()
        );
        assert_eq!(
            store.metric_names().await.expect("names"),
            vec!["mkube_pods".to_owned(), "mkube_raft_term".to_owned()]
        );
        assert_eq!(
            store.tag_keys().await.expect("keys"),
            vec!["master".to_owned(), "phase".to_owned()]
        );
        assert_eq!(
            store.tag_values("master").await.expect("values"),
            vec!["m1".to_owned(), "m2".to_owned()]
        );
        assert!(
            store
                .tag_values("nope")
                .await
                .expect("no values")
                .is_empty()
        );

        // Annotations.
        let notes = vec![
            Annotation {
                time_ms: t0 + 2000,
                title: "Evicted".into(),
                text: "pod b".into(),
                tags: vec!["node:w1".into()],
            },
            Annotation {
                time_ms: t0 + 1000,
                title: "LeaderElected".into(),
                text: "m1 leads".into(),
                tags: vec![],
            },
            Annotation {
                time_ms: t0 + 9000,
                title: "Late".into(),
                text: "out of range".into(),
                tags: vec![],
            },
        ];
        store.write_annotations(&notes).await.expect("annotations");
        let got = store
            .annotations(t0, t0 + 5000, 10)
            .await
            .expect("read annotations");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].title, "LeaderElected", "oldest first");
        assert_eq!(got[1].tags, vec!["node:w1".to_owned()]);
        assert_eq!(
            store
                .annotations(t0, t0 + 9000, 1)
                .await
                .expect("limit")
                .len(),
            1
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fold_by_step_start() {
        let points = [(0, 1.0), (999, 3.0), (1000, 5.0), (2500, 7.0)];
        assert_eq!(
            bucket(&points, 1000, Aggregation::Avg),
            vec![(0, 2.0), (1000, 5.0), (2000, 7.0)]
        );
        assert_eq!(
            bucket(&points, 1000, Aggregation::Last),
            vec![(0, 3.0), (1000, 5.0), (2000, 7.0)]
        );
        assert_eq!(
            bucket(&[(-1, 1.0)], 1000, Aggregation::Min),
            vec![(-1000, 1.0)]
        );
        assert!(bucket(&[], 1000, Aggregation::Sum).is_empty());
    }
}
