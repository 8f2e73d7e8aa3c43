//! The HTTP API that Grafana's JSON datasource (`simpod-json-datasource`)
//! calls, over any [`MetricsStore`]; conforms to
//! `specs/simpod-json-datasource-openapi.patched.yaml`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | health: `{"status": "ok"}` once the store answers |
//! | `POST /metrics` | the stored metric names, each with its payload options |
//! | `POST /metric-payload-options` | the options of one payload |
//! | `POST /query` | time series, a table (`payload.format = "table"`), or annotations (target `annotations`) |
//! | `POST /variable` | `metrics`, or the values of a tag key, as `__text`/`__value` |
//! | `POST /tag-keys`, `POST /tag-values` | ad hoc filter keys and values |
//!
//! A query target is a metric name. Its payload may carry `tags`
//! (`master=m1,phase!=Running`), `aggregate` (`avg` `min` `max` `sum`
//! `last`) and `format` (`time_series`, `table`). Points are bucketed by the
//! request's `intervalMs` (else range / `maxDataPoints`). Ad hoc filters
//! support the operators `=`, `!=`, `=~` and `!~`.
//!
//! Bodies are parsed strictly against the spec's types (a `null` where the
//! spec says string is refused) and leniently about extra fields, which
//! Grafana sends; every refusal is a `400` with `{"error": "..."}` that names
//! the field. Store failures are `503`.

use std::collections::BTreeMap;
use std::sync::Arc;

use api::metrics::Tags;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::store::{Aggregation, MetricsStore, SeriesQuery, StoreError, TagFilter};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The most annotations one query returns.
const MAX_ANNOTATIONS: usize = 1000;
/// The most points one series returns before bucketing kicks in.
const DEFAULT_MAX_POINTS: i64 = 2000;
/// The target that asks for annotations.
pub const ANNOTATIONS_TARGET: &str = "annotations";

/// The routes, over `store`.
pub fn router(store: Arc<dyn MetricsStore>) -> Router {
    Router::new()
        .route("/", get(health))
        .route("/metrics", post(metrics))
        .route("/metric-payload-options", post(payload_options))
        .route("/query", post(query))
        .route("/variable", post(variable))
        .route("/tag-keys", post(tag_keys))
        .route("/tag-values", post(tag_values))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(store)
}

type Store = State<Arc<dyn MetricsStore>>;

/// A refusal or failure, as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Invalid(m) => ApiError::bad(m),
            other => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: other.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(value: Value) -> ApiResult {
    Ok(axum::Json(value).into_response())
}

/// Parses a JSON object body into `T`; an empty body is `{}` when the spec
/// makes the body optional.
fn parse<T: DeserializeOwned>(body: &Bytes, optional: bool) -> Result<T, ApiError> {
    // Only a body that is absent counts as none: whitespace alone is not
    // JSON, and is refused as such (schemathesis sends ` `).
    let value: Value = if body.is_empty() {
        if !optional {
            return Err(ApiError::bad("the request needs a JSON object body"));
        }
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad(format!(
                "the body is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?
    };
    if !value.is_object() {
        return Err(ApiError::bad("the body must be a JSON object"));
    }
    // Strict: structs only as JSON objects (serde's derived structs would
    // also take an array of their fields in order, `"raw": []`, which the
    // spec does not allow).
    serde_path_to_error::deserialize(rpc::strict::Strict(value)).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad(format!("{path}: {}", e.into_inner()))
    })
}

/// For optional fields that, when present, must not be `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

async fn health(State(store): Store) -> ApiResult {
    store.metric_names().await?;
    ok(json!({ "status": "ok" }))
}

#[derive(Deserialize)]
struct MetricsRequest {
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)]
    metric: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)]
    payload: Option<serde_json::Map<String, Value>>,
}

const AGGREGATES: [&str; 5] = ["avg", "min", "max", "sum", "last"];
const FORMATS: [&str; 2] = ["time_series", "table"];

fn payload_specs() -> Value {
    let options = |values: &[&str]| -> Vec<Value> {
        values
            .iter()
            .map(|v| json!({ "label": v, "value": v }))
            .collect()
    };
    json!([
        { "label": "Tags", "name": "tags", "type": "input",
          "placeholder": "master=m1,phase!=Running", "width": 30 },
        { "label": "Aggregate", "name": "aggregate", "type": "select",
          "options": options(&AGGREGATES), "width": 10 },
        { "label": "Format", "name": "format", "type": "select",
          "options": options(&FORMATS), "width": 10 },
    ])
}

async fn metrics(State(store): Store, body: Bytes) -> ApiResult {
    let _request: MetricsRequest = parse(&body, true)?;
    let mut items: Vec<Value> = store
        .metric_names()
        .await?
        .into_iter()
        .map(|name| {
            let label =
                api::metrics::info(&name).map_or(name.clone(), |i| format!("{name} — {}", i.help));
            json!({ "label": label, "value": name, "payloads": payload_specs() })
        })
        .collect();
    items.push(json!({
        "label": "annotations — cluster events (leader changes, evictions, rollouts)",
        "value": ANNOTATIONS_TARGET,
        "payloads": [],
    }));
    ok(Value::Array(items))
}

#[derive(Deserialize)]
struct PayloadOptionsRequest {
    #[allow(dead_code)]
    metric: String,
    #[allow(dead_code)]
    payload: serde_json::Map<String, Value>,
    name: String,
}

async fn payload_options(State(store): Store, body: Bytes) -> ApiResult {
    // The body is optional; without one there is no payload to list.
    let name = if body.is_empty() {
        String::new()
    } else {
        parse::<PayloadOptionsRequest>(&body, false)?.name
    };
    let values: Vec<String> = match name.as_str() {
        "aggregate" => AGGREGATES.iter().map(|s| s.to_string()).collect(),
        "format" => FORMATS.iter().map(|s| s.to_string()).collect(),
        "tags" => {
            let mut pairs = Vec::new();
            for key in store.tag_keys().await? {
                for value in store.tag_values(&key).await? {
                    pairs.push(format!("{key}={value}"));
                }
            }
            pairs
        }
        _ => Vec::new(),
    };
    ok(Value::Array(
        values
            .into_iter()
            .map(|v| json!({ "label": v, "value": v }))
            .collect(),
    ))
}

/// `range` of a query or variable request.
#[derive(Deserialize)]
struct Range {
    #[serde(default, deserialize_with = "present")]
    from: Option<String>,
    #[serde(default, deserialize_with = "present")]
    to: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)]
    raw: Option<RawRange>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct RawRange {
    #[serde(default, deserialize_with = "present")]
    from: Option<String>,
    #[serde(default, deserialize_with = "present")]
    to: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct QueryRequest {
    #[serde(default, deserialize_with = "present")]
    panel_id: Option<PanelId>,
    #[serde(default, deserialize_with = "present")]
    range: Option<Range>,
    #[serde(default, deserialize_with = "present")]
    range_raw: Option<RawRange>,
    #[serde(default, deserialize_with = "present")]
    interval: Option<String>,
    #[serde(default, deserialize_with = "present")]
    interval_ms: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    max_data_points: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    targets: Option<Vec<Target>>,
    #[serde(default, deserialize_with = "present")]
    scoped_vars: Option<serde_json::Map<String, Value>>,
    #[serde(default, deserialize_with = "present")]
    filters: Option<Vec<AdHocFilter>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum PanelId {
    Text(String),
    Number(f64),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    target: String,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)]
    ref_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<serde_json::Map<String, Value>>,
    /// Grafana marks disabled queries.
    #[serde(default)]
    hide: Option<bool>,
}

#[derive(Deserialize)]
struct AdHocFilter {
    #[serde(default, deserialize_with = "present")]
    key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    operator: Option<String>,
    #[serde(default, deserialize_with = "present")]
    value: Option<String>,
}

fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    let ts: jiff::Timestamp = value.parse().map_err(|e| {
        ApiError::bad(format!(
            "{field}: `{value}` is not an RFC 3339 date-time: {e}"
        ))
    })?;
    Ok(ts.as_millisecond())
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The request's range in Unix ms; the last hour when it names none.
fn range_ms(range: Option<&Range>) -> Result<(i64, i64), ApiError> {
    let to = match range.and_then(|r| r.to.as_deref()) {
        Some(t) => parse_time("range.to", t)?,
        None => now_ms(),
    };
    let from = match range.and_then(|r| r.from.as_deref()) {
        Some(f) => parse_time("range.from", f)?,
        None => to - 3_600_000,
    };
    Ok((from, to))
}

/// A payload string field, if set.
fn payload_str<'a>(
    payload: Option<&'a serde_json::Map<String, Value>>,
    key: &str,
    target: &str,
) -> Result<Option<&'a str>, ApiError> {
    match payload.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::bad(format!(
            "targets[{target}].payload.{key}: expected a string, got {other}"
        ))),
    }
}

/// `master=m1,phase!=Running` → filters.
fn parse_tag_filters(text: &str, target: &str) -> Result<Vec<TagFilter>, ApiError> {
    let mut filters = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let filter = if let Some((k, v)) = part.split_once("!=") {
            TagFilter::NotEqual(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = part.split_once('=') {
            TagFilter::Equal(k.trim().to_owned(), v.trim().to_owned())
        } else {
            return Err(ApiError::bad(format!(
                "targets[{target}].payload.tags: `{part}` is not KEY=VALUE or KEY!=VALUE"
            )));
        };
        filters.push(filter);
    }
    Ok(filters)
}

/// An ad hoc filter applies to a series' tags.
enum AdHoc {
    Tag(TagFilter),
    Regex {
        key: String,
        regex: regex::Regex,
        matches: bool,
    },
}

impl AdHoc {
    fn matches(&self, tags: &Tags) -> bool {
        match self {
            AdHoc::Tag(f) => f.matches(tags),
            AdHoc::Regex {
                key,
                regex,
                matches,
            } => regex.is_match(tags.get(key).map_or("", String::as_str)) == *matches,
        }
    }
}

fn parse_ad_hoc(filters: &[AdHocFilter]) -> Result<Vec<AdHoc>, ApiError> {
    let mut out = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let (Some(key), Some(value)) = (f.key.clone(), f.value.clone()) else {
            // Grafana sends complete filters; an incomplete one filters nothing.
            continue;
        };
        let operator = f.operator.as_deref().unwrap_or("=");
        out.push(match operator {
            "=" => AdHoc::Tag(TagFilter::Equal(key, value)),
            "!=" => AdHoc::Tag(TagFilter::NotEqual(key, value)),
            "=~" | "!~" => {
                let regex = regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    ApiError::bad(format!("filters[{i}].value: not a regular expression: {e}"))
                })?;
                AdHoc::Regex {
                    key,
                    regex,
                    matches: operator == "=~",
                }
            }
            other => {
                return Err(ApiError::bad(format!(
                    "filters[{i}].operator: `{other}` is not supported; use =, !=, =~ or !~"
                )));
            }
        });
    }
    Ok(out)
}

fn series_name(metric: &str, tags: &Tags) -> String {
    if tags.is_empty() {
        return metric.to_owned();
    }
    let inner: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{metric}{{{}}}", inner.join(","))
}

async fn query(State(store): Store, body: Bytes) -> ApiResult {
    let request: QueryRequest = parse(&body, false)?;
    let (from_ms, to_ms) = range_ms(request.range.as_ref())?;
    let ad_hoc = parse_ad_hoc(request.filters.as_deref().unwrap_or_default())?;
    let step_ms = match (request.interval_ms, request.max_data_points) {
        (Some(ms), _) if ms.is_finite() && ms >= 1.0 => Some(ms as i64),
        (_, Some(n)) if n.is_finite() && n >= 1.0 => Some(((to_ms - from_ms) / n as i64).max(1)),
        _ => None,
    }
    .or_else(|| {
        let span = to_ms.saturating_sub(from_ms);
        (span / DEFAULT_MAX_POINTS > 1000).then_some(span / DEFAULT_MAX_POINTS)
    });
    let mut answers = Vec::new();
    for (i, target) in request.targets.unwrap_or_default().iter().enumerate() {
        if target.hide == Some(true) {
            continue;
        }
        let index = i.to_string();
        if target.target == ANNOTATIONS_TARGET {
            answers.push(Answer::Table(
                annotations_table(&*store, from_ms, to_ms).await?,
            ));
            continue;
        }
        let payload = target.payload.as_ref();
        let filters = match payload_str(payload, "tags", &index)? {
            Some(text) => parse_tag_filters(text, &index)?,
            None => Vec::new(),
        };
        let aggregation = match payload_str(payload, "aggregate", &index)? {
            None => Aggregation::Avg,
            Some(a) => Aggregation::parse(a).ok_or_else(|| {
                ApiError::bad(format!(
                    "targets[{index}].payload.aggregate: `{a}` is not one of {}",
                    AGGREGATES.join(", ")
                ))
            })?,
        };
        let table = match payload_str(payload, "format", &index)? {
            None | Some("time_series") => false,
            Some("table") => true,
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "targets[{index}].payload.format: `{other}` is not one of {}",
                    FORMATS.join(", ")
                )));
            }
        };
        if from_ms > to_ms {
            continue;
        }
        let series = store
            .query(&SeriesQuery {
                metric: target.target.clone(),
                from_ms,
                to_ms,
                filters,
                step_ms,
                aggregation,
            })
            .await?;
        let series: Vec<_> = series
            .into_iter()
            .filter(|s| ad_hoc.iter().all(|f| f.matches(&s.tags)))
            .collect();
        if table {
            let keys: Vec<String> = series
                .iter()
                .flat_map(|s| s.tags.keys().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut columns = vec![json!({ "text": "Time", "type": "time" })];
            columns.extend(keys.iter().map(|k| json!({ "text": k, "type": "string" })));
            columns.push(json!({ "text": "Value", "type": "number" }));
            let mut rows = Vec::new();
            for s in &series {
                for (t, v) in &s.points {
                    let mut row = vec![json!(t)];
                    row.extend(keys.iter().map(|k| json!(s.tags.get(k))));
                    row.push(json!(v));
                    rows.push(Value::Array(row));
                }
            }
            answers.push(Answer::Table(
                json!({ "type": "table", "columns": columns, "rows": rows }),
            ));
        } else {
            for s in series {
                answers.push(Answer::Series(TimeSeries {
                    target: series_name(&s.metric, &s.tags),
                    datapoints: s.points.iter().map(|&(t, v)| (v, t)).collect(),
                }));
            }
        }
    }
    Ok(axum::Json(answers).into_response())
}

/// One element of a `/query` answer.
#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    /// `{target, datapoints: [[value, ms], ...]}`, serialized straight from
    /// the points (the bulk of a dashboard's bytes).
    Series(TimeSeries),
    /// A table, as built.
    Table(Value),
}

#[derive(Serialize)]
struct TimeSeries {
    target: String,
    datapoints: Vec<(f64, i64)>,
}

/// Annotations as the table Grafana reads (`time`, `title`, `text`, `tags`).
async fn annotations_table(
    store: &dyn MetricsStore,
    from_ms: i64,
    to_ms: i64,
) -> Result<Value, ApiError> {
    let notes = if from_ms <= to_ms {
        store.annotations(from_ms, to_ms, MAX_ANNOTATIONS).await?
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = notes
        .into_iter()
        .map(|a| json!([a.time_ms, a.title, a.text, a.tags.join(",")]))
        .collect();
    Ok(json!({
        "type": "table",
        "columns": [
            { "text": "time", "type": "time" },
            { "text": "title", "type": "string" },
            { "text": "text", "type": "string" },
            { "text": "tags", "type": "string" },
        ],
        "rows": rows,
    }))
}

#[derive(Deserialize)]
struct VariableRequest {
    #[serde(default, deserialize_with = "present")]
    payload: Option<VariablePayload>,
    #[serde(default, deserialize_with = "present")]
    range: Option<Range>,
}

#[derive(Deserialize)]
struct VariablePayload {
    target: String,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)]
    variables: Option<serde_json::Map<String, Value>>,
}

/// `metrics` lists metric names; `tag_keys` the tag keys; any other target is
/// a tag key whose values are listed (`master`, `phase`).
async fn variable(State(store): Store, body: Bytes) -> ApiResult {
    let request: VariableRequest = parse(&body, false)?;
    // The range does not narrow the listings, but a malformed one is refused.
    range_ms(request.range.as_ref())?;
    let target = request.payload.as_ref().map_or("", |p| p.target.trim());
    let values = match target {
        "" => Vec::new(),
        "metrics" => store.metric_names().await?,
        "tag_keys" => store.tag_keys().await?,
        key => store.tag_values(key).await?,
    };
    ok(Value::Array(
        values
            .into_iter()
            .map(|v| json!({ "__text": v, "__value": v }))
            .collect(),
    ))
}

#[derive(Deserialize)]
struct TagKeysRequest {}

async fn tag_keys(State(store): Store, body: Bytes) -> ApiResult {
    let _: TagKeysRequest = parse(&body, true)?;
    let keys = store.tag_keys().await?;
    ok(Value::Array(
        keys.into_iter()
            .map(|k| json!({ "type": "string", "text": k }))
            .collect(),
    ))
}

#[derive(Deserialize)]
struct TagValuesRequest {
    key: String,
}

async fn tag_values(State(store): Store, body: Bytes) -> ApiResult {
    let request: TagValuesRequest = parse(&body, false)?;
    let values = store.tag_values(&request.key).await?;
    let mut seen = BTreeMap::new();
    for v in values {
        seen.insert(v.clone(), json!({ "text": v }));
    }
    ok(Value::Array(seen.into_values().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_body_is_no_body() {
        assert!(parse::<MetricsRequest>(&Bytes::new(), true).is_ok());
        assert!(parse::<MetricsRequest>(&Bytes::from_static(b"{}"), true).is_ok());
        // Whitespace alone is not JSON (schemathesis found it accepted).
        let e = parse::<MetricsRequest>(&Bytes::from_static(b" "), true)
            .err()
            .map(|e| (e.status, e.message))
            .unwrap_or_default();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert!(e.1.contains("not valid JSON"), "{}", e.1);
    }

    fn refusal<T: DeserializeOwned>(body: Value) -> String {
        match parse::<T>(&Bytes::from(body.to_string()), false) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                e.message
            }
        }
    }

    #[test]
    fn structs_must_be_objects_not_arrays_of_their_fields() {
        let e = refusal::<VariableRequest>(json!({"range": {"raw": []}}));
        assert!(e.starts_with("range.raw: ") && e.contains("object"), "{e}");
        let e = refusal::<VariableRequest>(json!({"range": ["2026-01-01T00:00:00Z"]}));
        assert!(e.starts_with("range: "), "{e}");
        let e = refusal::<VariableRequest>(json!({"payload": ["metrics"]}));
        assert!(e.starts_with("payload: "), "{e}");
        let e = refusal::<QueryRequest>(json!({"targets": [["cpu"]]}));
        assert!(e.starts_with("targets[0]: "), "{e}");
        let e = refusal::<QueryRequest>(json!({"filters": [["k", "=", "v"]]}));
        assert!(e.starts_with("filters[0]: "), "{e}");
        let e = refusal::<QueryRequest>(json!({"rangeRaw": null}));
        assert!(e.starts_with("rangeRaw: "), "{e}");
    }

    #[test]
    fn errors_inside_an_object_keep_their_path() {
        let e = refusal::<QueryRequest>(json!({"range": {"raw": {"from": 5}}}));
        assert!(e.starts_with("range.raw.from: "), "{e}");
        let e = refusal::<QueryRequest>(json!({"targets": [{"target": "a"}, {"target": 1}]}));
        assert!(e.starts_with("targets[1].target: "), "{e}");
        let ok: VariableRequest = parse(
            &Bytes::from(
                r#"{"payload": {"target": "metrics"}, "range": {"raw": {"from": "now-1h"}}}"#,
            ),
            false,
        )
        .expect("a well-formed request");
        assert_eq!(ok.payload.map(|p| p.target).as_deref(), Some("metrics"));
    }
}
