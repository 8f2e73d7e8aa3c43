//! The Azure Cosmos DB `MetricsStore`, through the official SDK
//! (`azure_data_cosmos` 1.x).
//!
//! One container, partition key path `/pk`, holding three kinds of items:
//!
//! | item | `pk` | `id` |
//! |---|---|---|
//! | a point | `p|<metric>|<day>` | `<series>-<time_ms>` |
//! | a series (catalogue) | `series` | `<series>` |
//! | an annotation | `a|<day>` | `<time_ms>-<hash>` |
//!
//! `<day>` is the Unix day of the point; `<series>` a stable hash (FNV-1a)
//! of the metric and its sorted tags. So a dashboard query of one metric
//! over 24 h reads at most two partitions, each with a single-partition
//! query (the SDK refuses cross-partition aggregates), and
//! listings read the one small `series` partition. Ids are deterministic,
//! so writes are upserts and writing a point twice leaves one item.
//!
//! Writes go as transactional batches (≤ 100 upserts of one partition
//! each). The SDK retries throttled (429) requests itself; a batch still
//! throttled after that is retried here after the service's `retry-after`
//! (or a doubling back-off), up to [`MAX_THROTTLE_RETRIES`] times, then
//! reported as `Unavailable`. Retention is the items' `ttl` (the container
//! needs `defaultTtl: -1`, as the deployment templates create it).
//! Buckets and filters are computed here, as for the embedded store.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::metrics::{Annotation, Point, Tags};
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::{CosmosError, FeedScope, Query, TransactionalBatch};
use cloud::cosmos::fnv1a;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::store::{MetricsStore, Series, SeriesQuery, StoreError, StoreFuture, bucket};

/// Operations in one transactional batch at most (the service's limit).
const BATCH_OPERATIONS: usize = 100;
/// Retries of a batch still throttled after the SDK's own retries.
pub const MAX_THROTTLE_RETRIES: u32 = 5;
const DAY_MS: i64 = 86_400_000;
const SERIES_PK: &str = "series";

pub use cloud::cosmos::CosmosAuth;

/// Where the store lives.
#[derive(Debug, Clone)]
pub struct CosmosConfig {
    /// `https://ACCOUNT.documents.azure.com/`.
    pub endpoint: String,
    /// The region the client is in (for routing), e.g. `westeurope`.
    pub region: String,
    /// The database.
    pub database: String,
    /// The container (partition key path `/pk`).
    pub container: String,
    /// How to authenticate.
    pub auth: CosmosAuth,
    /// How long items live.
    pub retention: Duration,
}

/// The Cosmos DB store (see the module doc).
#[derive(Clone)]
pub struct CosmosStore {
    container: ContainerClient,
    ttl_s: i64,
    /// Series already written to the catalogue by this process.
    catalogued: Arc<Mutex<HashSet<String>>>,
}

fn sdk(what: &str, e: CosmosError) -> StoreError {
    let status = e.status();
    if status.is_throttled()
        || status.status_code() == azure_core::http::StatusCode::ServiceUnavailable
    {
        StoreError::Unavailable(format!("{what}: {e}"))
    } else {
        StoreError::Database(format!("{what}: {e}"))
    }
}

impl CosmosStore {
    /// Connects to the account and container of `config`.
    pub async fn connect(config: &CosmosConfig) -> Result<CosmosStore, StoreError> {
        Ok(CosmosStore::from_container(
            open_container(config, &config.container).await?,
            config.retention,
        ))
    }

    /// A store over an already opened container (tests build one over the
    /// SDK's emulator).
    pub fn from_container(container: ContainerClient, retention: Duration) -> CosmosStore {
        CosmosStore {
            container,
            ttl_s: retention.as_secs().clamp(1, i32::MAX as u64) as i64,
            catalogued: Arc::new(Mutex::new(HashSet::new())),
        }
    }
}

/// Opens container `name` of the account and database `config` names.
pub async fn open_container(
    config: &CosmosConfig,
    name: &str,
) -> Result<ContainerClient, StoreError> {
    cloud::cosmos::open_container(&config.account(), name)
        .await
        .map_err(|e| match e {
            cloud::CloudError::Invalid(m) => StoreError::Invalid(m),
            other => StoreError::Database(other.to_string()),
        })
}

impl CosmosConfig {
    /// The account and database, without the container.
    pub fn account(&self) -> cloud::cosmos::CosmosAccount {
        cloud::cosmos::CosmosAccount {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            database: self.database.clone(),
            auth: self.auth.clone(),
        }
    }
}

impl CosmosStore {
    /// Upserts `items` of partition `pk` in batches, retrying throttled ones.
    async fn upsert_all<T: Serialize>(&self, pk: &str, items: &[T]) -> Result<(), StoreError> {
        for chunk in items.chunks(BATCH_OPERATIONS) {
            let mut attempt = 0;
            loop {
                let mut batch = TransactionalBatch::new(pk.to_owned());
                for item in chunk {
                    batch = batch
                        .upsert_item(item, None)
                        .map_err(|e| sdk("encoding an item", e))?;
                }
                let throttled_for = match self
                    .container
                    .execute_transactional_batch(batch, None)
                    .await
                {
                    Ok(response) => {
                        let model = response
                            .into_model()
                            .map_err(|e| sdk("reading a batch answer", e))?;
                        let results = model.results();
                        if results.iter().all(|r| r.is_success()) {
                            break;
                        }
                        let throttled = results.iter().find(|r| r.status_code() == 429);
                        match throttled {
                            Some(r) => r.retry_after(),
                            None => {
                                let failed = results
                                    .iter()
                                    .find(|r| !r.is_success() && r.status_code() != 424);
                                return Err(StoreError::Database(format!(
                                    "a batch of {} items in partition {pk} failed: status {}",
                                    chunk.len(),
                                    failed.map_or(0, |r| r.status_code())
                                )));
                            }
                        }
                    }
                    Err(e) if e.status().is_throttled() => None,
                    Err(e) => return Err(sdk(&format!("writing partition {pk}"), e)),
                };
                attempt += 1;
                if attempt > MAX_THROTTLE_RETRIES {
                    return Err(StoreError::Unavailable(format!(
                        "Cosmos DB throttled a batch of partition {pk} {attempt} times; the account's RU/s are exhausted"
                    )));
                }
                let wait = throttled_for.unwrap_or(Duration::from_millis(50 << attempt));
                tracing::debug!(?wait, attempt, "cosmos: batch throttled; waiting");
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    async fn query_partition<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        pk: &str,
        query: Query,
    ) -> Result<Vec<T>, StoreError> {
        let mut items = self
            .container
            .query_items::<T>(query, FeedScope::partition(pk.to_owned()), None)
            .await
            .map_err(|e| sdk(&format!("querying partition {pk}"), e))?;
        let mut out = Vec::new();
        while let Some(item) = items
            .try_next()
            .await
            .map_err(|e| sdk(&format!("reading partition {pk}"), e))?
        {
            out.push(item);
        }
        Ok(out)
    }

    async fn catalogue(&self) -> Result<Vec<SeriesItem>, StoreError> {
        self.query_partition(SERIES_PK, Query::from("SELECT * FROM c"))
            .await
    }
}

/// FNV-1a, 64 bits: stable across processes and versions (ids depend on it).
fn series_id(metric: &str, tags: &Tags) -> String {
    let mut key = metric.as_bytes().to_vec();
    key.push(0);
    key.extend(serde_json::to_vec(tags).unwrap_or_default());
    format!("{:016x}", fnv1a(&key))
}

fn day(t_ms: i64) -> i64 {
    t_ms.div_euclid(DAY_MS)
}

fn point_pk(metric: &str, day: i64) -> String {
    format!("p|{metric}|{day}")
}

fn annotation_pk(day: i64) -> String {
    format!("a|{day}")
}

#[derive(Debug, Serialize, Deserialize)]
struct PointItem {
    id: String,
    pk: String,
    s: String,
    metric: String,
    tags: Tags,
    t: i64,
    v: f64,
    ttl: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SeriesItem {
    id: String,
    pk: String,
    metric: String,
    tags: Tags,
}

#[derive(Debug, Serialize, Deserialize)]
struct AnnotationItem {
    id: String,
    pk: String,
    t: i64,
    title: String,
    text: String,
    tags: Vec<String>,
    ttl: i64,
}

impl CosmosStore {
    async fn write_points(&self, points: &[Point]) -> Result<(), StoreError> {
        if let Some(p) = points.iter().find(|p| !p.value.is_finite()) {
            return Err(StoreError::Invalid(format!(
                "{} at {} has the value {}; only finite values are stored",
                p.metric, p.time_ms, p.value
            )));
        }
        let mut by_pk: BTreeMap<String, Vec<PointItem>> = BTreeMap::new();
        let mut new_series: BTreeMap<String, SeriesItem> = BTreeMap::new();
        {
            let known = self.catalogued.lock().unwrap_or_else(|e| e.into_inner());
            for p in points {
                let s = series_id(&p.metric, &p.tags);
                if !known.contains(&s) {
                    new_series.entry(s.clone()).or_insert_with(|| SeriesItem {
                        id: s.clone(),
                        pk: SERIES_PK.into(),
                        metric: p.metric.clone(),
                        tags: p.tags.clone(),
                    });
                }
                let pk = point_pk(&p.metric, day(p.time_ms));
                by_pk.entry(pk.clone()).or_default().push(PointItem {
                    id: format!("{s}-{}", p.time_ms),
                    pk,
                    s,
                    metric: p.metric.clone(),
                    tags: p.tags.clone(),
                    t: p.time_ms,
                    v: p.value,
                    ttl: self.ttl_s,
                });
            }
        }
        // The catalogue first: a series is listed before its points can be read.
        let catalogue: Vec<SeriesItem> = new_series.into_values().collect();
        self.upsert_all(SERIES_PK, &catalogue).await?;
        self.catalogued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(catalogue.into_iter().map(|s| s.id));
        for (pk, items) in by_pk {
            // Two points of one series and time in a batch would be two
            // operations on one item: keep the later one.
            let mut unique: BTreeMap<String, PointItem> = BTreeMap::new();
            for item in items {
                unique.insert(item.id.clone(), item);
            }
            let items: Vec<PointItem> = unique.into_values().collect();
            self.upsert_all(&pk, &items).await?;
        }
        Ok(())
    }

    async fn query_series(&self, q: &SeriesQuery) -> Result<Vec<Series>, StoreError> {
        if q.from_ms > q.to_ms {
            return Err(StoreError::Invalid(format!(
                "the range starts ({}) after it ends ({})",
                q.from_ms, q.to_ms
            )));
        }
        let (first, last) = (day(q.from_ms), day(q.to_ms));
        if last - first > 400 {
            return Err(StoreError::Invalid(format!(
                "a range of {} days is more than this store keeps; ask for at most 400",
                last - first
            )));
        }
        let mut by_series: BTreeMap<String, (Tags, Vec<(i64, f64)>)> = BTreeMap::new();
        for d in first..=last {
            let query = Query::from(
                "SELECT c.s, c.tags, c.t, c.v FROM c WHERE c.t >= @from AND c.t <= @to",
            )
            .with_parameter("@from", q.from_ms)
            .and_then(|query| query.with_parameter("@to", q.to_ms))
            .map_err(|e| sdk("building a query", e))?;
            let rows: Vec<PointRow> = self.query_partition(&point_pk(&q.metric, d), query).await?;
            for row in rows {
                if !q.filters.iter().all(|f| f.matches(&row.tags)) {
                    continue;
                }
                by_series
                    .entry(row.s)
                    .or_insert_with(|| (row.tags, Vec::new()))
                    .1
                    .push((row.t, row.v));
            }
        }
        let mut out: Vec<Series> = by_series
            .into_values()
            .map(|(tags, mut points)| {
                points.sort_by_key(|p| p.0);
                points.dedup_by_key(|p| p.0);
                let points = match q.step_ms {
                    Some(step) => bucket(&points, step, q.aggregation),
                    None => points,
                };
                Series {
                    metric: q.metric.clone(),
                    tags,
                    points,
                }
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        out.sort_by(|a, b| a.tags.cmp(&b.tags));
        Ok(out)
    }
}

#[derive(Debug, Deserialize)]
struct PointRow {
    s: String,
    tags: Tags,
    t: i64,
    v: f64,
}

impl MetricsStore for CosmosStore {
    fn write<'a>(&'a self, points: &'a [Point]) -> StoreFuture<'a, ()> {
        Box::pin(self.write_points(points))
    }

    fn query<'a>(&'a self, query: &'a SeriesQuery) -> StoreFuture<'a, Vec<Series>> {
        Box::pin(self.query_series(query))
    }

    fn metric_names(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let names: BTreeSet<String> = self
                .catalogue()
                .await?
                .into_iter()
                .map(|s| s.metric)
                .collect();
            Ok(names.into_iter().collect())
        })
    }

    fn tag_keys(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let keys: BTreeSet<String> = self
                .catalogue()
                .await?
                .into_iter()
                .flat_map(|s| s.tags.into_keys())
                .collect();
            Ok(keys.into_iter().collect())
        })
    }

    fn tag_values<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let values: BTreeSet<String> = self
                .catalogue()
                .await?
                .into_iter()
                .filter_map(|mut s| s.tags.remove(key))
                .collect();
            Ok(values.into_iter().collect())
        })
    }

    fn write_annotations<'a>(&'a self, annotations: &'a [Annotation]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut by_pk: BTreeMap<String, Vec<AnnotationItem>> = BTreeMap::new();
            for a in annotations {
                let pk = annotation_pk(day(a.time_ms));
                let hash =
                    fnv1a(format!("{}\0{}\0{}", a.title, a.text, a.tags.join(",")).as_bytes());
                by_pk.entry(pk.clone()).or_default().push(AnnotationItem {
                    id: format!("{}-{hash:016x}", a.time_ms),
                    pk,
                    t: a.time_ms,
                    title: a.title.clone(),
                    text: a.text.clone(),
                    tags: a.tags.clone(),
                    ttl: self.ttl_s,
                });
            }
            for (pk, items) in by_pk {
                self.upsert_all(&pk, &items).await?;
            }
            Ok(())
        })
    }

    fn annotations(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Annotation>> {
        Box::pin(async move {
            let (first, last) = (day(from_ms), day(to_ms));
            let mut out = Vec::new();
            for d in first..=last.min(first + 400) {
                let query = Query::from("SELECT * FROM c WHERE c.t >= @from AND c.t <= @to")
                    .with_parameter("@from", from_ms)
                    .and_then(|query| query.with_parameter("@to", to_ms))
                    .map_err(|e| sdk("building a query", e))?;
                let items: Vec<AnnotationItem> =
                    self.query_partition(&annotation_pk(d), query).await?;
                out.extend(items.into_iter().map(|a| Annotation {
                    time_ms: a.t,
                    title: a.title,
                    text: a.text,
                    tags: a.tags,
                }));
            }
            out.sort_by_key(|a| a.time_ms);
            out.truncate(limit);
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_partitions_are_stable() {
        let tags: Tags = [("master".to_owned(), "m1".to_owned())]
            .into_iter()
            .collect();
        // Fixed values: changing the hash would orphan every stored item.
        assert_eq!(
            series_id("mkube_raft_term", &tags),
            format!("{:016x}", fnv1a(b"mkube_raft_term\0{\"master\":\"m1\"}"))
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            point_pk("mkube_pods", day(86_400_000 * 3 + 5)),
            "p|mkube_pods|3"
        );
        assert_eq!(day(-1), -1);
    }
}
