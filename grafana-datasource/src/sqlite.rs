//! The embedded `MetricsStore`: one SQLite database file, the default when
//! no other store is configured.
//!
//! Layout: `series(id, metric, tags)` names each series once (tags as the
//! JSON of their sorted map, so equal tag sets are equal text);
//! `points(series, time_ms, value)` is a `WITHOUT ROWID` table keyed by
//! `(series, time_ms)`, so a range query of one series is one index range
//! scan and rewriting a point replaces it; `annotations` is indexed by time.
//!
//! Writes of a batch are one transaction (all or nothing). SQLite calls
//! block, so every operation runs on tokio's blocking pool, one at a time
//! behind a mutex (SQLite serialises writers anyway). Retention: points and
//! annotations older than the retention limit are deleted after a write, at
//! most once a minute.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::metrics::{Annotation, Point, Tags};
use rusqlite::{Connection, params};

use crate::store::{MetricsStore, Series, SeriesQuery, StoreError, StoreFuture, bucket};

/// How long points are kept by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// How often retention runs at most.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// The embedded store (see the module doc).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
}

struct Inner {
    conn: Connection,
    /// `(metric, tags JSON)` → series id.
    series: HashMap<(String, String), i64>,
    retention: Duration,
    last_retention: Option<Instant>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, keeping points for
    /// `retention`.
    pub fn open(path: &Path, retention: Duration) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| {
            StoreError::Database(format!("cannot configure {}: {e}", path.display()))
        })?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS series (
                 id INTEGER PRIMARY KEY,
                 metric TEXT NOT NULL,
                 tags TEXT NOT NULL,
                 UNIQUE (metric, tags));
             CREATE TABLE IF NOT EXISTS points (
                 series INTEGER NOT NULL,
                 time_ms INTEGER NOT NULL,
                 value REAL NOT NULL,
                 PRIMARY KEY (series, time_ms)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS annotations (
                 time_ms INTEGER NOT NULL,
                 title TEXT NOT NULL,
                 text TEXT NOT NULL,
                 tags TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS annotations_time ON annotations (time_ms);",
        )
        .map_err(|e| StoreError::Database(format!("cannot set up {}: {e}", path.display())))?;
        let mut series = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT id, metric, tags FROM series")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (id, metric, tags) = row.map_err(db)?;
                series.insert((metric, tags), id);
            }
        }
        Ok(SqliteStore {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                series,
                retention,
                last_retention: None,
            })),
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on the blocking pool.
    fn run<T, F>(&self, f: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = inner
                    .lock()
                    .map_err(|_| StoreError::Database("a previous operation panicked".into()))?;
                f(&mut guard)
            })
            .await
            .map_err(|e| StoreError::Database(format!("store task failed: {e}")))?
        })
    }
}

fn tags_json(tags: &Tags) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".to_owned())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Inner {
    fn write(&mut self, points: &[Point]) -> Result<(), StoreError> {
        if let Some(p) = points.iter().find(|p| !p.value.is_finite()) {
            return Err(StoreError::Invalid(format!(
                "{} at {} has the value {}; only finite values are stored",
                p.metric, p.time_ms, p.value
            )));
        }
        let mut created = Vec::new();
        let result = self.write_batch(points, &mut created);
        if result.is_err() {
            // Their rows rolled back with the batch: forget their ids too.
            for key in created {
                self.series.remove(&key);
            }
        }
        result?;
        self.enforce_retention()
    }

    /// One transaction; `created` collects the series it added to the cache.
    fn write_batch(
        &mut self,
        points: &[Point],
        created: &mut Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut insert_series = tx
                .prepare_cached("INSERT INTO series (metric, tags) VALUES (?1, ?2)")
                .map_err(db)?;
            let mut insert_point = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO points (series, time_ms, value) VALUES (?1, ?2, ?3)",
                )
                .map_err(db)?;
            for p in points {
                let key = (p.metric.clone(), tags_json(&p.tags));
                let id = match self.series.get(&key) {
                    Some(id) => *id,
                    None => {
                        insert_series.execute(params![key.0, key.1]).map_err(db)?;
                        let id = tx.last_insert_rowid();
                        self.series.insert(key.clone(), id);
                        created.push(key);
                        id
                    }
                };
                insert_point
                    .execute(params![id, p.time_ms, p.value])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn enforce_retention(&mut self) -> Result<(), StoreError> {
        if self
            .last_retention
            .is_some_and(|t| t.elapsed() < RETENTION_INTERVAL)
        {
            return Ok(());
        }
        self.last_retention = Some(Instant::now());
        let cutoff = now_ms() - self.retention.as_millis() as i64;
        self.conn
            .execute("DELETE FROM points WHERE time_ms < ?1", params![cutoff])
            .map_err(db)?;
        self.conn
            .execute(
                "DELETE FROM annotations WHERE time_ms < ?1",
                params![cutoff],
            )
            .map_err(db)?;
        Ok(())
    }

    fn query(&mut self, q: &SeriesQuery) -> Result<Vec<Series>, StoreError> {
        if q.from_ms > q.to_ms {
            return Err(StoreError::Invalid(format!(
                "the range starts ({}) after it ends ({})",
                q.from_ms, q.to_ms
            )));
        }
        let mut matching: Vec<(i64, Tags)> = Vec::new();
        for ((metric, tags), id) in &self.series {
            if metric != &q.metric {
                continue;
            }
            let tags: Tags = serde_json::from_str(tags).map_err(|e| {
                StoreError::Database(format!("series {id} has unreadable tags: {e}"))
            })?;
            if q.filters.iter().all(|f| f.matches(&tags)) {
                matching.push((*id, tags));
            }
        }
        matching.sort_by(|a, b| a.1.cmp(&b.1));
        let mut out = Vec::with_capacity(matching.len());
        for (id, tags) in matching {
            // Rows come in key order, (series, time): bucketing them here is
            // one pass, where GROUP BY on a computed bucket sorts them first.
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT time_ms, value FROM points
                     WHERE series = ?1 AND time_ms BETWEEN ?2 AND ?3 ORDER BY time_ms",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![id, q.from_ms, q.to_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(db)?;
            let raw = rows.collect::<Result<Vec<(i64, f64)>, _>>().map_err(db)?;
            let points = match q.step_ms {
                Some(step) => bucket(&raw, step, q.aggregation),
                None => raw,
            };
            // A series with no point in range is no answer.
            if !points.is_empty() {
                out.push(Series {
                    metric: q.metric.clone(),
                    tags,
                    points,
                });
            }
        }
        Ok(out)
    }

    fn all_tags(&self) -> Result<Vec<Tags>, StoreError> {
        self.series
            .iter()
            .map(|((_, tags), id)| {
                serde_json::from_str(tags).map_err(|e| {
                    StoreError::Database(format!("series {id} has unreadable tags: {e}"))
                })
            })
            .collect()
    }
}

impl MetricsStore for SqliteStore {
    fn write<'a>(&'a self, points: &'a [Point]) -> StoreFuture<'a, ()> {
        if points.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let points = points.to_vec();
        self.run(move |inner| inner.write(&points))
    }

    fn query<'a>(&'a self, query: &'a SeriesQuery) -> StoreFuture<'a, Vec<Series>> {
        let query = query.clone();
        self.run(move |inner| inner.query(&query))
    }

    fn metric_names(&self) -> StoreFuture<'_, Vec<String>> {
        self.run(|inner| {
            let names: BTreeSet<String> = inner.series.keys().map(|(m, _)| m.clone()).collect();
            Ok(names.into_iter().collect())
        })
    }

    fn tag_keys(&self) -> StoreFuture<'_, Vec<String>> {
        self.run(|inner| {
            let keys: BTreeSet<String> = inner
                .all_tags()?
                .into_iter()
                .flat_map(|t| t.into_keys())
                .collect();
            Ok(keys.into_iter().collect())
        })
    }

    fn tag_values<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>> {
        let key = key.to_owned();
        self.run(move |inner| {
            let values: BTreeSet<String> = inner
                .all_tags()?
                .into_iter()
                .filter_map(|mut t| t.remove(&key))
                .collect();
            Ok(values.into_iter().collect())
        })
    }

    fn write_annotations<'a>(&'a self, annotations: &'a [Annotation]) -> StoreFuture<'a, ()> {
        let annotations = annotations.to_vec();
        self.run(move |inner| {
            let tx = inner.conn.transaction().map_err(db)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO annotations (time_ms, title, text, tags) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(db)?;
                for a in &annotations {
                    let tags = serde_json::to_string(&a.tags).unwrap_or_else(|_| "[]".into());
                    insert
                        .execute(params![a.time_ms, a.title, a.text, tags])
                        .map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
    }

    fn annotations(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Annotation>> {
        self.run(move |inner| {
            let mut stmt = inner
                .conn
                .prepare_cached(
                    "SELECT time_ms, title, text, tags FROM annotations
                     WHERE time_ms BETWEEN ?1 AND ?2 ORDER BY time_ms LIMIT ?3",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![from_ms, to_ms, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (time_ms, title, text, tags) = row.map_err(db)?;
                out.push(Annotation {
                    time_ms,
                    title,
                    text,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                });
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conforms() {
        let dir = tempdir();
        let store = SqliteStore::open(&dir.join("metrics.db"), DEFAULT_RETENTION).expect("open");
        crate::store::conformance::run(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn points_survive_a_reopen_and_old_ones_expire() {
        let dir = tempdir();
        let path = dir.join("metrics.db");
        let now = now_ms();
        {
            let store = SqliteStore::open(&path, Duration::from_secs(3600)).expect("open");
            store
                .write(&[
                    Point::new("mkube_pods", &[("phase", "Running")], now - 7_200_000, 1.0),
                    Point::new("mkube_pods", &[("phase", "Running")], now, 2.0),
                ])
                .await
                .expect("write");
        }
        let store = SqliteStore::open(&path, Duration::from_secs(3600)).expect("reopen");
        let series = store
            .query(&SeriesQuery {
                metric: "mkube_pods".into(),
                from_ms: 0,
                to_ms: now,
                filters: vec![],
                step_ms: None,
                aggregation: crate::Aggregation::Avg,
            })
            .await
            .expect("query");
        assert_eq!(series.len(), 1);
        assert_eq!(
            series[0].points,
            vec![(now, 2.0)],
            "the two-hour-old point is past retention"
        );
        // A new point written to the reopened store reuses the series.
        store
            .write(&[Point::new(
                "mkube_pods",
                &[("phase", "Running")],
                now + 1,
                3.0,
            )])
            .await
            .expect("write again");
        assert_eq!(
            store.metric_names().await.expect("names"),
            vec!["mkube_pods".to_owned()]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_with_a_bad_point_stores_nothing() {
        let dir = tempdir();
        let store = SqliteStore::open(&dir.join("m.db"), DEFAULT_RETENTION).expect("open");
        let err = store
            .write(&[
                Point::new("mkube_pods", &[], 1, 1.0),
                Point::new("mkube_nodes", &[], 1, f64::NAN),
            ])
            .await
            .expect_err("NaN refused");
        assert!(
            err.to_string()
                .contains("mkube_nodes at 1 has the value NaN"),
            "{err}"
        );
        assert!(
            store.metric_names().await.expect("names").is_empty(),
            "all or nothing"
        );
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mkube-sqlite-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("tempdir");
        dir
    }
}
