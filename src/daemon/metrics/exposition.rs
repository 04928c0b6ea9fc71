//! The `/metrics` page: [`Metrics`] in the OpenMetrics text format, written by the
//! `prometheus-client` crate (escaping, number formats, `_total`/`_bucket` suffixes, `# EOF`).
//!
//! Our lock-free counters stay the one source of every figure (`vagonfs status` reads them
//! too); a [`Collector`] reads them at scrape time and hands the values to the crate's encoder.
//!
//! Subtle cases owned here:
//! - sample names and labels are a published interface (dashboards): counters are declared
//!   without `_total`, which the encoder appends, so the samples read `vagonfs_api_requests_total`
//!   exactly as before the switch to the crate; the test below pins every name;
//! - histogram buckets are handed over non-cumulative (the encoder sums them) from one
//!   snapshot, and `_count` is the sum of that same snapshot, so a scrape racing an update never
//!   shows a `+Inf` bucket different from `_count`;
//! - error and retry series appear only once non-zero (16 kinds × 13 endpoints of zeros would
//!   drown the page); requests, bytes and latency appear for every endpoint from the start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{
    CacheKind, ERROR_KINDS, Endpoint, FuseOp, LATENCY_BUCKETS_MICROS, Metrics, kind_label,
};

/// The content type of [`Metrics::render_prometheus`]'s page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const MICROS_PER_SECOND: f64 = 1_000_000.0;

type Labels<'a> = Vec<(&'static str, &'a str)>;

impl Metrics {
    /// The OpenMetrics text exposition of every metric (after a [`Metrics::refresh`]).
    pub fn render_prometheus(self: &Arc<Self>) -> String {
        self.refresh();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(Arc::clone(self))));
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(%err, "could not render the metrics page");
        }
        out
    }
}

/// Reads [`Metrics`] at scrape time.
#[derive(Debug)]
struct Exposition(Arc<Metrics>);

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &*self.0;
        let version = env!("CARGO_PKG_VERSION");
        gauge(
            &mut enc,
            "vagonfs_build_info",
            "Version of the running vagonfs.",
            [(vec![("version", version)], 1)],
        )?;

        counter(
            &mut enc,
            "vagonfs_api_requests",
            "Vagon Files API calls, by endpoint.",
            Endpoint::ALL.map(|e| (vec![("endpoint", e.name())], m.requests(e))),
        )?;
        let by_kind = |read: &dyn Fn(Endpoint, usize) -> u64| {
            let mut series = Vec::new();
            for e in Endpoint::ALL {
                for (slot, kind) in ERROR_KINDS.iter().enumerate() {
                    let n = read(e, slot);
                    if n > 0 {
                        series.push((vec![("endpoint", e.name()), ("kind", kind_label(*kind))], n));
                    }
                }
            }
            series
        };
        let errors = by_kind(&|e, slot| m.errors(e, ERROR_KINDS[slot]));
        counter(
            &mut enc,
            "vagonfs_api_errors",
            "Failed Vagon Files API calls, by endpoint and error kind.",
            errors,
        )?;
        let retries = by_kind(&|e, slot| load(&m.endpoints[e.index()].retries[slot]));
        counter(
            &mut enc,
            "vagonfs_api_retries",
            "Retried Vagon Files API attempts, by endpoint and the error that caused the retry.",
            retries,
        )?;

        {
            let mut family = enc.encode_descriptor(
                "vagonfs_api_request_duration_seconds",
                "Latency of Vagon Files API calls, retries included.",
                None,
                MetricType::Histogram,
            )?;
            for e in Endpoint::ALL {
                let snap = m.latency(e);
                let buckets: Vec<(f64, u64)> = snap
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| {
                        let le = LATENCY_BUCKETS_MICROS
                            .get(i)
                            .map_or(f64::MAX, |&b| b as f64 / MICROS_PER_SECOND);
                        (le, n)
                    })
                    .collect();
                let labels: Labels = vec![("endpoint", e.name())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        snap.sum_micros as f64 / MICROS_PER_SECOND,
                        snap.count,
                        &buckets,
                        None,
                    )?;
            }
        }

        counter(
            &mut enc,
            "vagonfs_api_sent_bytes",
            "Payload bytes sent to the storage (upload part bodies).",
            Endpoint::ALL.map(|e| (vec![("endpoint", e.name())], m.bytes_up(e))),
        )?;
        counter(
            &mut enc,
            "vagonfs_api_received_bytes",
            "Payload bytes received from the storage (download bodies).",
            Endpoint::ALL.map(|e| (vec![("endpoint", e.name())], m.bytes_down(e))),
        )?;

        let per_cache = |counts: &[AtomicU64]| {
            CacheKind::ALL.map(|c| (vec![("cache", c.as_str())], load(&counts[c as usize])))
        };
        counter(
            &mut enc,
            "vagonfs_cache_hits",
            "Cache hits, by cache.",
            per_cache(&m.cache_hits),
        )?;
        counter(
            &mut enc,
            "vagonfs_cache_misses",
            "Cache misses, by cache.",
            per_cache(&m.cache_misses),
        )?;

        let queue = m.upload_queue();
        gauge(
            &mut enc,
            "vagonfs_upload_queued_files",
            "Files waiting for their upload.",
            [(vec![], queue.queued)],
        )?;
        gauge(
            &mut enc,
            "vagonfs_upload_in_flight_files",
            "Files being uploaded now.",
            [(vec![], queue.in_flight)],
        )?;
        gauge(
            &mut enc,
            "vagonfs_upload_pending_bytes",
            "Bytes written locally and not yet stored remotely.",
            [(vec![], queue.pending_bytes)],
        )?;
        counter(
            &mut enc,
            "vagonfs_uploads_completed",
            "File uploads completed.",
            [(vec![], load(&m.uploads_completed))],
        )?;
        counter(
            &mut enc,
            "vagonfs_uploads_failed",
            "File uploads given up.",
            [(vec![], load(&m.uploads_failed))],
        )?;

        counter(
            &mut enc,
            "vagonfs_fuse_ops",
            "FUSE requests served, by operation.",
            FuseOp::ALL
                .iter()
                .map(|&op| (vec![("op", op.as_str())], m.fuse_ops(op))),
        )?;
        let fuse_errors: Vec<_> = FuseOp::ALL
            .iter()
            .map(|&op| (vec![("op", op.as_str())], load(&m.fuse_errors[op.index()])))
            .filter(|(_, n)| *n > 0)
            .collect();
        counter(
            &mut enc,
            "vagonfs_fuse_op_errors",
            "FUSE requests answered with an error, by operation.",
            fuse_errors,
        )?;
        Ok(())
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One counter family (`name` without `_total`: the encoder appends it to every sample).
fn counter<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> Result<(), std::fmt::Error> {
    family(enc, name, help, MetricType::Counter, series, |m, v| {
        m.encode_counter::<NoLabelSet, _, u64>(&v, None)
    })
}

/// One gauge family.
fn gauge<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> Result<(), std::fmt::Error> {
    family(enc, name, help, MetricType::Gauge, series, |m, v| {
        m.encode_gauge(&v)
    })
}

fn family<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels<'a>, u64)>,
    write: impl Fn(&mut MetricEncoder, u64) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        if labels.is_empty() {
            write(&mut family, value)?;
        } else {
            write(&mut family.encode_family(&labels)?, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::time::Duration;

    use super::*;
    use crate::api::ApiErrorKind;
    use crate::daemon::metrics::UploadQueueStats;

    /// A parsed sample line.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn valid_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn valid_label_name(name: &str) -> bool {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// A strict parser of one sample line: `name{k="v",...} value`.
    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut s = after;
            loop {
                if let Some(r) = s.strip_prefix('}') {
                    s = r;
                    break;
                }
                let eq = s.find('=').ok_or("label without =")?;
                let key = &s[..eq];
                if !valid_label_name(key) {
                    return Err(format!("bad label name {key:?}"));
                }
                s = s[eq + 1..]
                    .strip_prefix('"')
                    .ok_or("label value not quoted")?;
                let mut value = String::new();
                let mut chars = s.char_indices();
                let close = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            other => return Err(format!("bad escape {other:?}")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated label value".into()),
                    }
                };
                labels.push((key.to_string(), value));
                s = &s[close + 1..];
                if let Some(r) = s.strip_prefix(',') {
                    s = r;
                }
            }
            rest = s;
        }
        let value_text = rest.strip_prefix(' ').ok_or("no space before value")?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse::<f64>()
                .map_err(|e| format!("bad value {v:?}: {e}"))?,
        };
        Ok(Sample {
            name: name.to_string(),
            labels,
            value,
        })
    }

    /// Parses a whole exposition: every sample valid, every family typed before its samples,
    /// HELP/TYPE at most once per family.
    /// A strict reader of an OpenMetrics text page: every sample belongs to a family declared
    /// by `# TYPE` (counters as `<family>_total`, histograms as `_bucket`/`_sum`/`_count`), and
    /// the page ends with `# EOF`.
    fn parse_exposition(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helps: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        let mut ended = false;
        for line in text.lines() {
            assert!(!ended, "line after # EOF: {line}");
            if line == "# EOF" {
                ended = true;
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                assert!(valid_metric_name(&name), "HELP of bad name: {line}");
                assert!(helps.insert(name), "second HELP: {line}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap_or_default().to_string();
                let kind = parts.next().unwrap_or_default().to_string();
                assert!(
                    [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "unknown",
                        "info"
                    ]
                    .contains(&&*kind),
                    "bad TYPE: {line}"
                );
                assert!(parts.next().is_none(), "junk after TYPE: {line}");
                assert!(types.insert(name, kind).is_none(), "second TYPE: {line}");
            } else {
                assert!(
                    !line.is_empty() && !line.starts_with('#'),
                    "stray line {line:?}"
                );
                let s = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let family = [
                    ("_bucket", "histogram"),
                    ("_sum", "histogram"),
                    ("_count", "histogram"),
                    ("_total", "counter"),
                ]
                .iter()
                .find_map(|(suffix, kind)| {
                    let base = s.name.strip_suffix(suffix)?;
                    (types.get(base).map(String::as_str) == Some(*kind)).then(|| base.to_string())
                })
                .unwrap_or_else(|| s.name.clone());
                let kind = types
                    .get(&family)
                    .unwrap_or_else(|| panic!("no TYPE before {line}"));
                if kind == "counter" {
                    assert!(s.name.ends_with("_total"), "counter without _total: {line}");
                }
                samples.push(s);
            }
        }
        assert!(ended, "no # EOF at the end");
        (types, samples)
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| {
            s.name == name
                && labels.len() == s.labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
        })
    }

    #[test]
    fn prometheus_exposition_parses_and_has_the_counts() {
        let m = Arc::new(Metrics::new());
        m.record_request(Endpoint::ListFiles, Duration::from_micros(800), None);
        m.record_request(Endpoint::ListFiles, Duration::from_millis(30), None);
        m.record_request(
            Endpoint::ListFiles,
            Duration::from_secs(120),
            Some(ApiErrorKind::Timeout),
        );
        m.record_request(Endpoint::UploadPart, Duration::from_millis(3), None);
        m.add_bytes_up(Endpoint::UploadPart, 4096);
        m.add_bytes_down(Endpoint::GetRange, 77);
        m.on_retry(Endpoint::UploadPart, ApiErrorKind::Unavailable);
        m.cache_hit(CacheKind::Block);
        m.cache_hit(CacheKind::Block);
        m.cache_miss(CacheKind::Dir);
        m.set_upload_queue(UploadQueueStats {
            queued: 3,
            in_flight: 2,
            pending_bytes: 999,
        });
        m.upload_finished(true);
        m.fuse_op(FuseOp::Read);
        m.fuse_op(FuseOp::Read);
        m.fuse_error(FuseOp::Read);

        let text = m.render_prometheus();
        let (types, samples) = parse_exposition(&text);
        assert_eq!(types["vagonfs_api_request_duration_seconds"], "histogram");
        assert_eq!(types["vagonfs_api_requests"], "counter");
        assert_eq!(types["vagonfs_upload_queued_files"], "gauge");

        let v = |name: &str, labels: &[(&str, &str)]| {
            find(&samples, name, labels)
                .unwrap_or_else(|| panic!("{name} {labels:?}"))
                .value
        };
        assert_eq!(
            v("vagonfs_api_requests_total", &[("endpoint", "list_files")]),
            3.0
        );
        assert_eq!(
            v("vagonfs_api_requests_total", &[("endpoint", "delete")]),
            0.0
        );
        assert_eq!(
            v(
                "vagonfs_api_errors_total",
                &[("endpoint", "list_files"), ("kind", "timeout")]
            ),
            1.0
        );
        assert!(
            find(
                &samples,
                "vagonfs_api_errors_total",
                &[("endpoint", "delete"), ("kind", "timeout")]
            )
            .is_none()
        );
        assert_eq!(
            v(
                "vagonfs_api_retries_total",
                &[("endpoint", "upload_part"), ("kind", "unavailable")]
            ),
            1.0
        );
        let bucket = "vagonfs_api_request_duration_seconds_bucket";
        assert_eq!(
            v(bucket, &[("endpoint", "list_files"), ("le", "0.001")]),
            1.0
        );
        assert_eq!(
            v(bucket, &[("endpoint", "list_files"), ("le", "0.025")]),
            1.0
        );
        assert_eq!(
            v(bucket, &[("endpoint", "list_files"), ("le", "0.05")]),
            2.0
        );
        assert_eq!(
            v(bucket, &[("endpoint", "list_files"), ("le", "60.0")]),
            2.0
        );
        assert_eq!(
            v(bucket, &[("endpoint", "list_files"), ("le", "+Inf")]),
            3.0
        );
        let count = "vagonfs_api_request_duration_seconds_count";
        assert_eq!(v(count, &[("endpoint", "list_files")]), 3.0);
        let sum = v(
            "vagonfs_api_request_duration_seconds_sum",
            &[("endpoint", "list_files")],
        );
        assert!((sum - 120.0308).abs() < 1e-9, "{sum}");
        assert_eq!(
            v(
                "vagonfs_api_sent_bytes_total",
                &[("endpoint", "upload_part")]
            ),
            4096.0
        );
        assert_eq!(
            v(
                "vagonfs_api_received_bytes_total",
                &[("endpoint", "get_range")]
            ),
            77.0
        );
        assert_eq!(v("vagonfs_cache_hits_total", &[("cache", "block")]), 2.0);
        assert_eq!(v("vagonfs_cache_misses_total", &[("cache", "dir")]), 1.0);
        assert_eq!(v("vagonfs_upload_queued_files", &[]), 3.0);
        assert_eq!(v("vagonfs_upload_in_flight_files", &[]), 2.0);
        assert_eq!(v("vagonfs_upload_pending_bytes", &[]), 999.0);
        assert_eq!(v("vagonfs_uploads_completed_total", &[]), 1.0);
        assert_eq!(v("vagonfs_fuse_ops_total", &[("op", "read")]), 2.0);
        assert_eq!(v("vagonfs_fuse_op_errors_total", &[("op", "read")]), 1.0);

        // Buckets are cumulative and end at _count, for every endpoint.
        for e in Endpoint::ALL {
            let mut last = 0.0;
            for s in samples.iter().filter(|s| {
                s.name == bucket
                    && s.labels
                        .iter()
                        .any(|(k, v)| k == "endpoint" && v == e.name())
            }) {
                assert!(s.value >= last, "{e:?} buckets not cumulative");
                last = s.value;
            }
            assert_eq!(last, v(count, &[("endpoint", e.name())]));
        }
    }

    #[test]
    fn exposition_parser_rejects_bad_lines() {
        // The checker itself must be able to fail.
        assert!(parse_sample("1bad 3").is_err());
        assert!(parse_sample("ok{a=b} 3").is_err());
        assert!(parse_sample("ok{a=\"b} 3").is_err());
        assert!(parse_sample("ok{a=\"b\"} x").is_err());
        assert!(parse_sample("ok{a=\"b\\q\"} 1").is_err());
        assert!(parse_sample("ok{a=\"b\\\"c\"} 1").is_ok());
        let untyped = std::panic::catch_unwind(|| parse_exposition("vagonfs_x_total 1\n# EOF\n"));
        assert!(untyped.is_err());
        let unended = std::panic::catch_unwind(|| {
            parse_exposition("# TYPE vagonfs_x counter\nvagonfs_x_total 1\n")
        });
        assert!(unended.is_err());
        let ok = parse_exposition("# TYPE vagonfs_x counter\nvagonfs_x_total 1\n# EOF\n");
        assert_eq!(ok.1.len(), 1);
        assert!(untyped.is_err());
    }

    #[test]
    fn sample_names_are_the_published_ones() {
        // Dashboards select on these: the switch to prometheus-client must not rename any.
        let m = Arc::new(Metrics::new());
        m.record_request(
            Endpoint::ListFiles,
            Duration::from_millis(1),
            Some(ApiErrorKind::Timeout),
        );
        m.on_retry(Endpoint::ListFiles, ApiErrorKind::Timeout);
        m.fuse_error(FuseOp::Read);
        let (_, samples) = parse_exposition(&m.render_prometheus());
        let names: HashSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        let published = [
            "vagonfs_build_info",
            "vagonfs_api_requests_total",
            "vagonfs_api_errors_total",
            "vagonfs_api_retries_total",
            "vagonfs_api_request_duration_seconds_bucket",
            "vagonfs_api_request_duration_seconds_sum",
            "vagonfs_api_request_duration_seconds_count",
            "vagonfs_api_sent_bytes_total",
            "vagonfs_api_received_bytes_total",
            "vagonfs_cache_hits_total",
            "vagonfs_cache_misses_total",
            "vagonfs_upload_queued_files",
            "vagonfs_upload_in_flight_files",
            "vagonfs_upload_pending_bytes",
            "vagonfs_uploads_completed_total",
            "vagonfs_uploads_failed_total",
            "vagonfs_fuse_ops_total",
            "vagonfs_fuse_op_errors_total",
        ];
        let expected: HashSet<&str> = published.into_iter().collect();
        assert_eq!(names, expected);
        let build = samples
            .iter()
            .find(|s| s.name == "vagonfs_build_info")
            .unwrap();
        assert_eq!(
            build.labels,
            vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]
        );
    }
}
