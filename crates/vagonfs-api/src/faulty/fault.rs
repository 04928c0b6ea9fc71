//! What can be injected and how it is aimed: [`Fault`] kinds and their errors, when they strike
//! ([`FaultTiming`]), the [`Call`] a predicate sees, server [`Variant`]s, and the wrapper's
//! settings and counters.
//!
//! Subtle cases: a fault's error has the shape the HTTP client would give (a status with its
//! code, a timeout, a reset), so the core's handling is tested as in production; a fault
//! `After` the call lets the storage act first, the case that tests idempotency.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use tokio::sync::Semaphore;

use crate::api::{ApiError, ApiMethod, Space};

/// The error a fault produces.
#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP 503.
    Unavailable,
    /// HTTP 429, optionally with `Retry-After` seconds.
    Throttled { retry_after: Option<u64> },
    /// No answer in time.
    Timeout,
    /// Connection reset.
    Transport,
    /// A presigned link refused (expired).
    LinkRefused,
    /// HTTP 404.
    NotFound,
    /// HTTP 507.
    NoSpace,
    /// HTTP 409 (the name is taken).
    Conflict,
    /// Any error, as given.
    Error(ApiError),
}

impl Fault {
    pub(super) fn to_error(&self, method: ApiMethod) -> ApiError {
        let endpoint = format!("{} (injected)", method.name());
        let status = |status: u16, message: &str, retry_after| ApiError::Status {
            endpoint: endpoint.clone(),
            status,
            client_code: Some(i64::from(status)),
            message: message.to_string(),
            retry_after,
        };
        match self {
            Fault::Unavailable => status(503, "injected: service unavailable", None),
            Fault::Throttled { retry_after } => {
                status(429, "injected: too many requests", *retry_after)
            }
            Fault::NotFound => status(404, "injected: not found", None),
            Fault::NoSpace => status(507, "injected: storage full", None),
            Fault::Conflict => status(409, "injected: name already exists", None),
            Fault::Timeout => ApiError::Timeout { endpoint, secs: 0 },
            Fault::Transport => ApiError::Transport {
                endpoint,
                detail: "injected: connection reset".into(),
            },
            Fault::LinkRefused => ApiError::LinkRefused { status: 403 },
            Fault::Error(e) => e.clone(),
        }
    }
}

/// Whether the wrapped call runs before the injected error is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTiming {
    /// The error replaces the call: the storage never sees it.
    Before,
    /// The call runs and takes effect; its answer is lost and the error returned instead.
    After,
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub(super) probability: f64,
    pub(super) fault: Fault,
    pub(super) timing: FaultTiming,
}

#[derive(Debug, Clone)]
pub(super) struct Scheduled {
    /// Calls let through before the first fault.
    pub(super) skip: u32,
    pub(super) remaining: u32,
    pub(super) fault: Fault,
    pub(super) timing: FaultTiming,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MethodCounters {
    /// Calls made to the wrapper.
    pub calls: u64,
    /// Of which answered with an injected fault.
    pub injected: u64,
}

/// What a call is aimed at, for holds and predicate rules.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: ApiMethod,
    /// A listing's parent (0 for a root), or the file id of complete, delete, file_link.
    pub target: Option<u64>,
    /// The presigned URL of a part PUT or a download GET.
    pub url: Option<&'a str>,
    pub space: Option<Space>,
}

impl<'a> Call<'a> {
    pub(super) fn new(method: ApiMethod) -> Self {
        Call {
            method,
            target: None,
            url: None,
            space: None,
        }
    }
    pub(super) fn target(mut self, id: u64) -> Self {
        self.target = Some(id);
        self
    }
    pub(super) fn url(mut self, url: &'a str) -> Self {
        self.url = Some(url);
        self
    }
    pub(super) fn space(mut self, space: Space) -> Self {
        self.space = Some(space);
        self
    }
}

/// A predicate over calls.
pub type CallFilter = Arc<dyn Fn(&Call<'_>) -> bool + Send + Sync>;

/// A server that answers otherwise than the emulator, within what the client must tolerate or
/// detect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// A create of an empty file answers no part URL; its complete takes no part.
    NoPartUrlForEmptyFile,
    /// A file create answers one part URL more than the size needs.
    ExtraPartUrl,
    /// A listing's `next_page` points back at the page just served.
    ListingRepeatsPage,
    /// A listing's `next_page` moves on forever, every page holding page 1's entries.
    ListingRepeatsFirstPage,
    /// Each page lists its entries in the reverse of the emulator's order.
    ListingReversed,
}

pub(super) struct Hold {
    pub(super) target: Option<u64>,
    pub(super) gate: Arc<Semaphore>,
}

pub(super) struct State {
    pub(super) rng: StdRng,
    pub(super) filtered: HashMap<ApiMethod, (CallFilter, Fault)>,
    pub(super) holds: HashMap<ApiMethod, Hold>,
    pub(super) variants: HashSet<Variant>,
    /// Part URLs held back from an empty file's create, by file id (for its complete).
    pub(super) dropped_urls: HashMap<u64, Vec<String>>,
    pub(super) all_methods: Option<Rule>,
    pub(super) per_method: HashMap<ApiMethod, Rule>,
    /// Per method, in the order they strike.
    pub(super) scheduled: HashMap<ApiMethod, VecDeque<Scheduled>>,
    pub(super) latency_all: Duration,
    pub(super) latency: HashMap<ApiMethod, Duration>,
    pub(super) cut_streams_after: Option<u64>,
    pub(super) counters: HashMap<ApiMethod, MethodCounters>,
}
