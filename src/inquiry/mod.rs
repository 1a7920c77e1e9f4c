//! The inquiry pipeline: every inquiry on every channel (a JSON lookup by national ID or by
//! booklet, each item of a batch, FHIR, USSD, SMS) goes through here, in this order:
//!
//! 1. **charge and authenticate** ([`admit`]), before any other work: a request with a valid
//!    key costs one from the key's bucket; one without (the public page, or a missing,
//!    unknown or revoked key) costs one from its client address's allowance (and the public
//!    page's ceiling for all addresses). Then the key must be one for this channel. Every
//!    refusal costs the refused: a wrong method, a malformed body or a 401 has paid first;
//! 2. **rate limit** the rest: a batch of N pays N − 1 more once parsed
//!    ([`Session::charge`]); USSD and SMS take one from the phone number's allowance;
//! 3. **parse** what the channel decoded ([`Query`]);
//! 4. **look up** the person (by national ID or booklet) in one consistent view of the index;
//! 5. **evaluate** the rules of `eligibility.rs`;
//! 6. give the answer a **tracking code**;
//! 7. **audit** it (no record, no answer: 503 `audit_unavailable` when the record cannot be
//!    kept);
//! 8. **count** it (`eligd_inquiries_total`, `eligd_client_inquiries_total`);
//!
//! and the channel then renders the result ([`Decided`] or [`Refused`]) in its own form,
//! deciding nothing. An inquiry that reached the index (an answer, `member_not_found`,
//! `booklet_not_found`) has an audit line of its own, under its subject, and its answer
//! waits until that line is written (`audit::completion`). A refusal before the index is
//! counted in the audit log's aggregated refusal lines (who, channel, route, outcome, per
//! second), without a subject. The statuses live in one table ([`errors`]).

pub mod errors;
mod evaluate;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use errors::{ApiError, Limited, CODES};
pub use evaluate::{by_national_id, evaluate_found, Evaluated};

use crate::app::AppState;
use crate::audit::refusals::{Refusal, Who};
use crate::audit::AuditRecord;
use crate::auth::{Key, KeyChannel};
use crate::dates::Day;
use crate::index::IndexView;
use crate::limits::{Allowance, CallerKey, CallerLimits, Taken};
use crate::member::{Booklet, Service};
use crate::national_id::NationalId;
use crate::tracking::TrackingCode;

/// The channels, as keys name them and metrics label them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// The JSON API (`channels/json.rs`); its label and key channel are `http`, the name
    /// clients, keys files and the audit log know it by.
    Json,
    Fhir,
    Ussd,
    Sms,
    /// The page for people (`POST /v1/public/credit`): no key, limited per client address.
    Web,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            other => other.key_channel().as_str(),
        }
    }

    /// The key channel a key needs for this channel (the web channel takes no key; it is
    /// never asked).
    pub fn key_channel(self) -> KeyChannel {
        match self {
            Channel::Json | Channel::Web => KeyChannel::Http,
            Channel::Fhir => KeyChannel::Fhir,
            Channel::Ussd => KeyChannel::Ussd,
            Channel::Sms => KeyChannel::Sms,
        }
    }

    /// The HTTP status a refusal is answered with on this channel: the error table's. The
    /// text channels answer their gateway 200 with a message for the person (a gateway shows
    /// an HTTP error as a cryptic failure), except when the request is not one a gateway of
    /// ours would send: no valid key for this channel, or the wrong method.
    pub fn http_status(self, error: &ApiError) -> u16 {
        match (self, error) {
            (
                Channel::Ussd | Channel::Sms,
                ApiError::Unauthorized(_)
                | ApiError::Forbidden { .. }
                | ApiError::MethodNotAllowed { .. },
            ) => error.status(),
            (Channel::Ussd | Channel::Sms, _) => 200,
            _ => error.status(),
        }
    }
}

/// Who is asking: the key's client, when keys are configured.
fn client_of(key: Option<&Arc<Key>>) -> Option<&'static str> {
    key.map(|k| k.client)
}

/// A request refused before (or instead of) a decision, already audited and counted.
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub tracking: TrackingCode,
    /// The key's bucket after this request, for the `RateLimit` headers.
    pub allowance: Option<Allowance>,
}

/// What a person is looked up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Member(NationalId),
    Booklet(Booklet),
}

/// An inquiry as a channel decoded it, each part parsed or refused on its own (the first
/// refusal, in this order, is the answer).
pub struct Query {
    pub target: Result<Target, ApiError>,
    pub as_of: Result<Day, ApiError>,
    /// The services asked about (none, one, or several for FHIR). The first one not covered
    /// decides `service_not_covered`.
    pub services: Result<Vec<Service>, ApiError>,
}

impl Query {
    /// A query by national ID, as typed (any digit script, the card's dashes, spaces and
    /// invisible marks, 8–9 digits).
    pub fn national_id(raw: &str, as_of: Day) -> Query {
        Query {
            target: parse_national_id(raw),
            as_of: Ok(as_of),
            services: Ok(Vec::new()),
        }
    }

    /// A query refused while decoding (the channel's own structure errors); the target's
    /// refusal is the answer, so the other parts are never read.
    pub fn refused(error: ApiError) -> Query {
        Query {
            target: Err(error),
            as_of: Ok(Day(0)),
            services: Ok(Vec::new()),
        }
    }

    /// A target with the `date` and `service` options (absent `date`: `today()`, read only
    /// then).
    pub fn with_options(
        target: Result<Target, ApiError>,
        date: Option<&str>,
        service: Option<&str>,
        today: impl FnOnce() -> Day,
    ) -> Query {
        Query {
            target,
            as_of: parse_date(date, today),
            services: parse_services(service),
        }
    }
}

/// The as-of date of an inquiry: `YYYY-MM-DD`, or `today()` when absent (the clock is read
/// only then).
pub fn parse_date(date: Option<&str>, today: impl FnOnce() -> Day) -> Result<Day, ApiError> {
    match date {
        Some(d) => Day::parse_iso(d).map_err(|_| ApiError::InvalidDate),
        None => Ok(today()),
    }
}

/// The service asked about, if any.
pub fn parse_services(service: Option<&str>) -> Result<Vec<Service>, ApiError> {
    match service {
        Some(s) => Service::parse(s)
            .map(|s| vec![s])
            .ok_or_else(|| ApiError::InvalidService(s.chars().take(40).collect())),
        None => Ok(Vec::new()),
    }
}

pub fn parse_national_id(raw: &str) -> Result<Target, ApiError> {
    NationalId::parse_typed(raw)
        .map(Target::Member)
        .map_err(ApiError::InvalidNationalId)
}

pub fn parse_booklet(raw: &str) -> Result<Target, ApiError> {
    Booklet::parse(raw.trim())
        .map(Target::Booklet)
        .ok_or_else(|| ApiError::InvalidRequest("a booklet number is 1 to 18 digits".into()))
}

/// A decision: the member, the rules' verdict, and what was asked.
pub struct Answer<'v> {
    pub evaluated: Evaluated<'v>,
    pub as_of: Day,
    pub services: Vec<Service>,
    /// The index's freshness watermark when the request was admitted (Unix ms).
    pub data_as_of_ms: u64,
}

/// The result of one inquiry, already audited and counted.
pub struct Decided<'v> {
    pub tracking: TrackingCode,
    pub result: Result<Answer<'v>, ApiError>,
}

impl Decided<'_> {
    /// The outcome it is counted under: the decision's status, or the refusal's code.
    pub fn outcome(&self) -> &'static str {
        match &self.result {
            Ok(answer) => answer.evaluated.decision.outcome.as_str(),
            Err(e) => e.code(),
        }
    }
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("channel", &self.channel)
            .field("route", &self.route)
            .field("client", &self.key.as_ref().map(|k| k.client))
            .finish()
    }
}

/// An admitted request: its key (when keys are configured) and one view of the index that
/// every lookup of the request uses.
pub struct Session<'s> {
    state: &'s AppState,
    channel: Channel,
    route: &'static str,
    started: Instant,
    /// The wall clock when the request was admitted (key expiry, the audit record's time).
    arrived: SystemTime,
    key: Option<Arc<Key>>,
    allowance: Option<Allowance>,
    /// The client address as limited and audited (IPv6 by its prefix), when known.
    address: Option<std::net::IpAddr>,
    index: Option<IndexView>,
    /// Read before the view is taken, so the view reflects at least what it promises.
    data_as_of_ms: u64,
}

/// Where, when and from whom a request arrived.
#[derive(Clone, Copy, Debug)]
pub struct Arrival<'a> {
    pub channel: Channel,
    pub route: &'static str,
    pub authorization: Option<&'a [u8]>,
    pub started: Instant,
    /// The connection's peer, and the request's headers (`X-Forwarded-For` from a trusted
    /// proxy names the client).
    pub peer: Option<std::net::IpAddr>,
    pub headers: Option<&'a hyper::HeaderMap>,
}

impl<'a> Arrival<'a> {
    /// A request without a key, arriving now (tools and tests).
    pub fn anonymous(channel: Channel, route: &'static str) -> Arrival<'static> {
        Arrival {
            channel,
            route,
            authorization: None,
            started: Instant::now(),
            peer: None,
            headers: None,
        }
    }
}

/// The IPv6 prefix whose addresses share the public page's site allowance
/// (`AppState::site_limits`).
pub const SITE_PREFIX: u8 = 48;

/// Step 1: charges the request (the key's bucket, or the client address's allowance),
/// authenticates the `Authorization` header (when `--api-keys` is configured) and checks the
/// key may use the channel, before any other work. Refusals are counted here.
pub fn admit<'s>(state: &'s AppState, arrival: Arrival<'_>) -> Result<Session<'s>, Refused> {
    let Arrival {
        channel,
        route,
        authorization,
        started,
        peer,
        headers,
    } = arrival;
    let address = peer.map(|peer| match headers {
        Some(headers) => state.addresses.key(peer, headers),
        None => crate::client_address::limit_key(peer, state.addresses.ipv6_prefix),
    });
    let mut session = Session {
        state,
        channel,
        route,
        started,
        arrived: SystemTime::now(),
        key: None,
        allowance: None,
        address,
        index: None,
        data_as_of_ms: 0,
    };
    let address_key = CallerKey::from_ip(address.unwrap_or(std::net::Ipv6Addr::UNSPECIFIED.into()));
    if channel == Channel::Web {
        // The public page takes no key: its address pays, then the ceiling for everyone
        // (an address already out of allowance does not use up the ceiling).
        let limited =
            |retry_after_secs| ApiError::RateLimited(Limited::Address { retry_after_secs });
        state
            .address_limits
            .take_key(address_key)
            .map_err(|secs| session.refuse(limited(secs)))?;
        // An IPv6 client's /48 (a site's or a home's whole allocation) pays too, so one
        // allocation's many /64s cannot take the ceiling from everyone.
        if let Some(std::net::IpAddr::V6(v6)) = address {
            let site = crate::client_address::limit_key(v6.into(), SITE_PREFIX);
            state
                .site_limits
                .take_key(CallerKey::from_ip(site))
                .map_err(|secs| session.refuse(limited(secs)))?;
        }
        if let Some(ceiling) = &state.public_ceiling {
            if ceiling.check().is_err() {
                return Err(session.refuse(ApiError::RateLimited(Limited::Busy)));
            }
        }
    } else if let Some(store) = state.keys() {
        match store
            .keys()
            .authenticate(authorization, unix_ms(session.arrived))
        {
            Ok(key) => {
                let key_channel = key.channel;
                session.key = Some(key);
                session.charge(1)?;
                if !key_channel.allows(channel.key_channel()) {
                    return Err(session.refuse(ApiError::Forbidden {
                        key_channel: key_channel.as_str(),
                    }));
                }
            }
            Err(why) => {
                // No valid key: the address pays for the refusal.
                let error = match state.unauthenticated_limits.take_key(address_key) {
                    Ok(()) => ApiError::Unauthorized(why),
                    Err(retry_after_secs) => {
                        ApiError::RateLimited(Limited::Address { retry_after_secs })
                    }
                };
                return Err(session.refuse(error));
            }
        }
    }
    if let Some(index) = state.index_for_request().as_ref() {
        session.data_as_of_ms = index.data_as_of_ms();
        session.index = Some(index.view());
    }
    Ok(session)
}

/// A session for tests of a channel's rendering: no key, no audit, admitted.
#[cfg(test)]
pub(crate) fn test_session<'s>(
    state: &'s AppState,
    channel: Channel,
    route: &'static str,
) -> Session<'s> {
    begin(state, Arrival::anonymous(channel, route))
        .unwrap_or_else(|r| panic!("refused: {:?}", r.error))
}

/// Step 1 for a request of cost 1 (every route but the batch, which pays the rest of its
/// size once parsed).
pub fn begin<'s>(state: &'s AppState, arrival: Arrival<'_>) -> Result<Session<'s>, Refused> {
    admit(state, arrival)
}

impl<'s> Session<'s> {
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// Whether an index is loaded (a batch is refused whole while none is).
    pub fn has_index(&self) -> bool {
        self.index.is_some()
    }

    /// The freshness watermark every answer of this request carries (Unix ms; docs/contract.md §4).
    pub fn data_as_of_ms(&self) -> u64 {
        self.data_as_of_ms
    }

    /// The key's bucket after this request (for the `RateLimit` headers).
    pub fn allowance(&self) -> Option<Allowance> {
        self.allowance
    }

    /// The rest of a request of `cost` inquiries (a batch of `cost` IDs), admission having
    /// paid 1. A cost above the key's burst can never pass, and is refused saying so.
    pub fn charge_rest(&mut self, cost: u32) -> Result<(), Refused> {
        if let Some(key) = &self.key {
            let burst = key.bucket.burst();
            if cost > burst {
                let limited = Limited::AboveBurst { cost, burst };
                return Err(self.refuse(ApiError::RateLimited(limited)));
            }
        }
        self.charge(cost.saturating_sub(1))
    }

    /// Takes `cost` inquiries from the key's bucket (admission takes 1; a batch of N takes
    /// N − 1 more once parsed). Nothing without a key.
    pub fn charge(&mut self, cost: u32) -> Result<(), Refused> {
        if cost == 0 {
            return Ok(());
        }
        let Some(key) = &self.key else {
            return Ok(());
        };
        let limited = match key.bucket.take(cost) {
            Taken::Allowed(allowance) => {
                self.allowance = Some(allowance);
                return Ok(());
            }
            Taken::Refused {
                allowance,
                retry_after_secs,
            } => {
                self.allowance = Some(allowance);
                Limited::Key { retry_after_secs }
            }
            Taken::TooLarge { allowance } => {
                self.allowance = Some(allowance);
                Limited::AboveBurst {
                    cost,
                    burst: key.bucket.burst(),
                }
            }
        };
        Err(self.refuse(ApiError::RateLimited(limited)))
    }

    /// Refuses the request before the index (a decoding error of the channel, a wrong
    /// method): counted in the audit log's refusal lines and the metrics.
    pub fn refuse(&self, error: ApiError) -> Refused {
        let tracking = self.state.tracking.next_at(self.arrived);
        let error = self
            .finish(tracking, Err(&error), None)
            .err()
            .unwrap_or(error);
        Refused {
            error,
            tracking,
            allowance: self.allowance,
        }
    }

    /// Steps 3–8 for a channel without phone numbers: the query as the channel decoded it.
    pub fn decide(&self, query: Query) -> Decided<'_> {
        self.decide_inner(None, query)
    }

    /// Steps 3–8 for USSD and SMS, after taking one from the phone's allowance (`None`: the
    /// gateway sent no number; such requests share one allowance).
    pub fn decide_for_phone(&self, phone: Option<&str>, query: Query) -> Decided<'_> {
        let key = CallerKey::from_phone(phone.unwrap_or(""));
        self.decide_inner(Some((&self.state.phone_limits, key)), query)
    }

    /// The parts of `query` are read in the pipeline's order, after the phone's allowance:
    /// the first refusal is the answer.
    fn decide_inner(&self, limit: Option<(&CallerLimits, CallerKey)>, query: Query) -> Decided<'_> {
        let mut subject = None;
        let result = (|| {
            if let Some((limits, key)) = limit {
                limits.take_key(key).map_err(|retry_after_secs| {
                    ApiError::RateLimited(Limited::Phone { retry_after_secs })
                })?;
            }
            let target = query.target?;
            if let Target::Member(id) = target {
                subject = Some(id);
            }
            let as_of = query.as_of?;
            let services = query.services?;
            let index = self
                .index
                .as_ref()
                .ok_or(ApiError::NotReady("the index is still loading"))?;
            let member = match target {
                Target::Member(id) => index.get(id).ok_or(ApiError::MemberNotFound)?,
                Target::Booklet(b) => index.get_by_booklet(b).ok_or(ApiError::BookletNotFound)?,
            };
            subject = Some(member.view().national_id);
            let covered = member.view().services;
            let asked = services.iter().copied().find(|s| !covered.contains(*s));
            let service = asked.or_else(|| services.first().copied());
            let evaluated = evaluate_found(index, member, as_of, service);
            Ok(Answer {
                evaluated,
                as_of,
                services,
                data_as_of_ms: self.data_as_of_ms,
            })
        })();
        let tracking = self.state.tracking.next_at(self.arrived);
        let recorded = match &result {
            Ok(answer) => self.finish(
                tracking,
                Ok(answer.evaluated.decision.outcome.as_str()),
                subject,
            ),
            Err(e) => self.finish(tracking, Err(e), subject),
        };
        let result: Result<Answer<'_>, ApiError> = match recorded {
            Ok(()) => result,
            Err(unavailable) => Err(unavailable),
        };
        Decided { tracking, result }
    }

    /// Steps 7 and 8: the audit record and the counts. An inquiry that reached the index
    /// has a line of its own; `Err` when the audit log cannot take it: then that refusal,
    /// not the decision, is the answer (and counted). Anything else is a refusal before the
    /// index, counted in the aggregated lines.
    fn finish(
        &self,
        tracking: TrackingCode,
        outcome: Result<&'static str, &ApiError>,
        subject: Option<NationalId>,
    ) -> Result<(), ApiError> {
        let (label, status) = match outcome {
            Ok(label) => (label, 200),
            Err(e) => (e.code(), self.channel.http_status(e)),
        };
        let reached_index = matches!(
            outcome,
            Ok(_) | Err(ApiError::MemberNotFound | ApiError::BookletNotFound)
        );
        let mut counted = label;
        let mut result = Ok(());
        if let Some(audit) = self.state.audit() {
            if reached_index {
                let record = AuditRecord {
                    time: self.arrived,
                    tracking,
                    client: client_of(self.key.as_ref()),
                    channel: self.channel.as_str(),
                    route: self.route,
                    outcome: label,
                    status,
                    latency: self.started.elapsed(),
                    person: subject,
                    address: self.address,
                };
                if audit.record(record).is_err() {
                    counted = ApiError::AuditUnavailable.code();
                    result = Err(ApiError::AuditUnavailable);
                    audit.refused(self.refusal(counted, 503));
                }
            } else {
                audit.refused(self.refusal(label, status));
            }
        }
        self.count(counted);
        result
    }

    /// This request as a refusal line's entry.
    fn refusal(&self, outcome: &'static str, status: u16) -> Refusal {
        let who = match (&self.key, self.address) {
            (Some(key), _) => Who::Client(key.client),
            (None, Some(address)) => Who::Address(address),
            (None, None) => Who::Unknown,
        };
        Refusal {
            who,
            channel: self.channel.as_str(),
            route: self.route,
            outcome,
            status,
        }
    }

    fn count(&self, outcome: &'static str) {
        let metrics = &self.state.metrics;
        metrics.count_inquiry(self.channel.as_str(), outcome);
        match (&self.key, self.state.keys()) {
            (Some(key), _) => key.counters.inc(outcome),
            (None, Some(_)) => metrics.access.unauthenticated.inc(outcome),
            (None, None) => {}
        }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests;
