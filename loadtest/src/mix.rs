//! A realistic request mix for eligd: what clinics, pharmacies, hospitals and people on phones
//! send, as complete HTTP/1.1 requests for [`crate::open_loop::run`] (which cycles through the
//! list in order at a fixed rate over keep-alive connections).
//!
//! By request count, shuffled deterministically:
//!
//! | share | requests |
//! |---|---|
//! | 55 % | `GET /v1/members/{id}/eligibility` (a third with `?service=`) |
//! | 10 % | `GET /v1/booklets/{booklet_no}/eligibility` (a barcode scanner) |
//! | 5 % | `POST /v1/eligibility/batch` of 10 IDs |
//! | 15 % | `POST /ussd`: the steps of whole USSD sessions |
//! | 15 % | `POST /fhir/r4/CoverageEligibilityRequest/$submit` |
//!
//! **Members.** IDs and booklets come from `eligd::demo::Generator` with the server's member
//! count and seed, so they are real members of the server's synthetic population (`eligd
//! serve` with no snapshot: `--demo-members`, default 1,000,000, and `--demo-seed`, default
//! 1). A share [`MixOptions::invalid_or_unknown`] of inquiries (each single lookup, each entry
//! of a batch, each USSD lookup, each FHIR request) names nobody: half an invalid national ID
//! (a member's ID with a wrong check digit: 400, or an error entry in a batch), half a valid
//! ID nobody holds (IDs of a population with another seed, checked against the whole server
//! population: 404, an error entry in a batch, a FHIR answer with outcome `error`, a USSD
//! "not found" screen). Booklet numbers carry no check digit, so for booklets the whole share
//! is numbers nobody holds (404).
//!
//! **USSD.** The gateway POSTs a form (`sessionId`, `serviceCode`, `phoneNumber`, `text`) for
//! every screen, and `text` holds everything typed so far joined by `*` (src/channels/ussd.rs):
//! the server keeps no session state, so each step can be sent on its own, on any connection.
//! A session is still kept together in the list: one `sessionId` and one phone number for all
//! its steps, which appear in order, each about 1 to 60 requests after the previous (a person's
//! screens are seconds apart, interleaved with everyone else's traffic; kept close so that any
//! stretch of the list, such as the start a short run sends, holds whole sessions and not
//! mostly first screens). Sessions are
//! - 80 % the whole menu: `""` (menu) → `"1"` or `"2"` (the prompt in Persian or English,
//!   4 in 5 Persian) → `"1*<id>"` (the answer);
//! - 12 % direct dial (`*1420*4*<id>#`): one step, `text` = `"<id>"`;
//! - 8 % abandoned after the menu or the prompt (no inquiry).
//!
//! Every session has its own phone number: lookups are limited per phone
//! (`--phone-requests-per-minute`, default 10 with a burst of 10), so a phone's one lookup
//! comes round once per cycle of the list, [`MIX_LEN`] requests: at most 10 a minute up to
//! `MIX_LEN / 6` = 33,000 requests/s. Over that, some USSD lookups get the polite "try again in
//! a minute" screen, still HTTP 200.
//!
//! **Keys.** With [`MixOptions::api_key`], every request carries `Authorization: Bearer <key>`:
//! with `--api-keys` every inquiry route needs a key whose channel allows it, the USSD
//! gateway's included (`http` for /v1, `fhir`, `ussd`; a key of channel `any` serves the whole
//! mix). Every request costs one token of the key's bucket, every USSD step included, and a
//! batch costs 10: the mix of N requests/s costs about 1.45 N tokens/s.
//!
//! **Statuses.** Every answer is 200, 400 (invalid IDs on the single and FHIR routes) or 404
//! (unknown IDs and booklets on the single and booklet routes): [`expected_status`].

use std::collections::HashSet;

use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::national_id::NationalId;

use crate::Xorshift;

/// Requests in the list [`realistic`] builds (about 200 bytes each, 40 MB in all).
pub const MIX_LEN: usize = 200_000;
/// Members sampled from the population (evenly through it) to be asked about.
const SAMPLE: usize = 100_000;
/// Candidate unknown IDs and booklet numbers.
const UNKNOWN_POOL: u64 = 20_000;
/// Most other requests between two steps of a USSD session (a few more when steps of several
/// sessions fall due together).
const MAX_STEP_GAP: usize = 60;
/// IDs in a batch request.
pub const BATCH_SIZE: usize = 10;

/// Shares of the mix by request count; the USSD share is the rest.
const SINGLE_SHARE: f64 = 0.55;
const BOOKLET_SHARE: f64 = 0.10;
const BATCH_SHARE: f64 = 0.05;
const FHIR_SHARE: f64 = 0.15;

const SERVICES: [&str; 5] = [
    "pharmacy",
    "outpatient",
    "paraclinic",
    "dental",
    "inpatient",
];

/// What to build the mix for.
#[derive(Clone, Debug)]
pub struct MixOptions {
    /// Members of the server's synthetic population (`--demo-members`).
    pub members: u64,
    /// Seed of the server's population (`--demo-seed`); the mix's own shuffle derives from it.
    pub seed: u64,
    /// Sent as `Authorization: Bearer <key>` on every request when set.
    pub api_key: Option<String>,
    /// Share of inquiries naming nobody (invalid or unknown IDs, unknown booklets), 0 to 1.
    pub invalid_or_unknown: f64,
}

impl Default for MixOptions {
    fn default() -> Self {
        MixOptions {
            members: 1_000_000,
            seed: 1,
            api_key: None,
            invalid_or_unknown: 0.10,
        }
    }
}

/// The statuses the mix expects: 200, 400 (invalid IDs), 404 (unknown IDs and booklets).
pub fn expected_status(status: u16) -> bool {
    matches!(status, 200 | 400 | 404)
}

/// The realistic mix, [`MIX_LEN`] requests (see the module documentation). Generates the
/// whole population once (about a second for a million members in a release build).
pub fn realistic(opts: &MixOptions) -> Vec<Vec<u8>> {
    realistic_of_len(opts, MIX_LEN)
}

/// The realistic mix with `len` requests (give or take none: the USSD share fills the rest).
pub fn realistic_of_len(opts: &MixOptions, len: usize) -> Vec<Vec<u8>> {
    let population = Population::sample(opts.members, opts.seed);
    Builder {
        rng: Xorshift((opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66_D1CE_4E5B) | 1),
        population,
        invalid_or_unknown: opts.invalid_or_unknown.clamp(0.0, 1.0),
        auth: opts
            .api_key
            .as_ref()
            .map(|k| format!("authorization: Bearer {k}\r\n"))
            .unwrap_or_default(),
        phone_base: 0,
    }
    .build(len)
}

/// The members asked about, and numbers nobody holds.
struct Population {
    /// National IDs of members, evenly sampled through the population.
    ids: Vec<NationalId>,
    /// Booklet numbers of the sampled members that hold one.
    booklets: Vec<String>,
    /// Valid IDs no member holds.
    unknown_ids: Vec<NationalId>,
    /// Booklet-shaped numbers (`93` and ten digits) no member holds.
    unknown_booklets: Vec<String>,
}

impl Population {
    /// One pass over the server's population: samples members, and drops candidate unknown
    /// IDs and booklets that a member does hold.
    fn sample(members: u64, seed: u64) -> Population {
        let today = Day::today();
        let candidate_ids: Vec<NationalId> =
            Generator::new(UNKNOWN_POOL, seed.wrapping_add(1_000), today)
                .map(|m| m.national_id)
                .collect();
        // A booklet number is its ordinal's, whatever the seed: draw them at random instead.
        let mut rng = Xorshift((seed ^ 0xB00C_1E7B_00C1_E7B0) | 1);
        let candidate_booklets: Vec<u64> = (0..UNKNOWN_POOL)
            .map(|_| 10_u64.pow(12) + 93 * 10_u64.pow(10) + rng.next_u64() % 10_u64.pow(10))
            .collect();
        let wanted_ids: HashSet<u64> = candidate_ids.iter().map(|id| id.as_u64()).collect();
        let wanted_booklets: HashSet<u64> = candidate_booklets.iter().copied().collect();
        let (mut held_ids, mut held_booklets) = (HashSet::new(), HashSet::new());
        let stride = (members / SAMPLE as u64).max(1);
        let (mut ids, mut booklets) = (Vec::new(), Vec::new());
        for (i, m) in Generator::new(members, seed, today).enumerate() {
            let id = m.national_id.as_u64();
            if wanted_ids.contains(&id) {
                held_ids.insert(id);
            }
            if let Some(b) = &m.booklet_no {
                if wanted_booklets.contains(&b.0) {
                    held_booklets.insert(b.0);
                }
            }
            if (i as u64).is_multiple_of(stride) && ids.len() < SAMPLE {
                ids.push(m.national_id);
                if let Some(b) = &m.booklet_no {
                    booklets.push(b.to_string());
                }
            }
        }
        Population {
            ids,
            booklets,
            unknown_ids: candidate_ids
                .into_iter()
                .filter(|id| !held_ids.contains(&id.as_u64()))
                .collect(),
            unknown_booklets: candidate_booklets
                .into_iter()
                .filter(|b| !held_booklets.contains(b))
                .map(|b| b.to_string()[1..].to_string())
                .collect(),
        }
    }
}

/// The kind of one request before the shuffle; a USSD unit is a whole session.
#[derive(Clone, Copy)]
enum Slot {
    Single,
    Booklet,
    Batch,
    Fhir,
    Ussd(u32),
}

/// One USSD session: its id, phone, and the `text` of each step in order.
struct UssdSession {
    session_id: String,
    phone: String,
    texts: Vec<String>,
}

struct Builder {
    rng: Xorshift,
    population: Population,
    invalid_or_unknown: f64,
    /// The `Authorization` header line, or empty.
    auth: String,
    phone_base: u64,
}

impl Builder {
    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    /// A uniform number in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn member_id(&mut self) -> NationalId {
        let i = self.below(self.population.ids.len());
        self.population.ids[i]
    }

    /// The ID one inquiry names: a member's, or (at the configured share) an invalid one or
    /// one nobody holds.
    fn inquiry_id(&mut self) -> String {
        let roll = self.unit();
        if roll >= self.invalid_or_unknown {
            return self.member_id().to_string();
        }
        if roll < self.invalid_or_unknown / 2.0 && !self.population.unknown_ids.is_empty() {
            let i = self.below(self.population.unknown_ids.len());
            return self.population.unknown_ids[i].to_string();
        }
        // A member's ID with another check digit: exactly one check digit is valid.
        let mut id = self.member_id().to_string().into_bytes();
        let wrong = (id[9] - b'0' + 1 + self.below(9) as u8) % 10;
        id[9] = b'0' + wrong;
        String::from_utf8(id).expect("ASCII digits")
    }

    fn booklet(&mut self) -> String {
        let unknown = self.unit() < self.invalid_or_unknown;
        let unknown = unknown && !self.population.unknown_booklets.is_empty();
        let len = if unknown {
            self.population.unknown_booklets.len()
        } else {
            self.population.booklets.len()
        };
        let i = self.below(len);
        if unknown {
            self.population.unknown_booklets[i].clone()
        } else {
            self.population.booklets[i].clone()
        }
    }

    /// A service to check, for a third of the requests that can name one.
    fn service(&mut self) -> Option<&'static str> {
        if self.below(3) != 0 {
            return None;
        }
        // Mostly pharmacies and outpatient clinics.
        Some(match self.below(10) {
            0..=4 => SERVICES[0],
            5..=7 => SERVICES[1],
            8 => SERVICES[2],
            _ => SERVICES[3 + self.below(2)],
        })
    }

    fn get(&self, path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nhost: eligd\r\n{}\r\n", self.auth).into_bytes()
    }

    fn post(&self, path: &str, content_type: &str, accept: Option<&str>, body: &str) -> Vec<u8> {
        let accept = accept
            .map(|a| format!("accept: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "POST {path} HTTP/1.1\r\nhost: eligd\r\n{}content-type: {content_type}\r\n{accept}content-length: {}\r\n\r\n{body}",
            self.auth,
            body.len()
        )
        .into_bytes()
    }

    fn single(&mut self) -> Vec<u8> {
        let id = self.inquiry_id();
        let query = self
            .service()
            .map(|s| format!("?service={s}"))
            .unwrap_or_default();
        self.get(&format!("/v1/members/{id}/eligibility{query}"))
    }

    fn booklet_request(&mut self) -> Vec<u8> {
        let booklet = self.booklet();
        let query = self
            .service()
            .map(|s| format!("?service={s}"))
            .unwrap_or_default();
        self.get(&format!("/v1/booklets/{booklet}/eligibility{query}"))
    }

    fn batch(&mut self) -> Vec<u8> {
        let ids: Vec<String> = (0..BATCH_SIZE)
            .map(|_| format!("\"{}\"", self.inquiry_id()))
            .collect();
        let service = self
            .service()
            .map(|s| format!(", \"service\": \"{s}\""))
            .unwrap_or_default();
        let body = format!("{{\"national_ids\": [{}]{service}}}", ids.join(", "));
        self.post(
            "/v1/eligibility/batch",
            "application/json",
            None,
            body.as_str(),
        )
    }

    fn fhir(&mut self, n: usize) -> Vec<u8> {
        let id = self.inquiry_id();
        let item = self
            .service()
            .map(|s| {
                format!(
                    ", \"item\": [{{\"category\": {{\"coding\": [{{\"system\": \"urn:eligd:service\", \"code\": \"{s}\"}}]}}}}]"
                )
            })
            .unwrap_or_default();
        let body = format!(
            "{{\"resourceType\": \"CoverageEligibilityRequest\", \"id\": \"req-{n}\", \
             \"status\": \"active\", \"purpose\": [\"validation\"], \
             \"patient\": {{\"identifier\": {{\"system\": \"urn:eligd:national-id\", \"value\": \"{id}\"}}}}, \
             \"created\": \"2026-11-28T10:00:00+03:30\", \"insurer\": {{\"display\": \"sso\"}}{item}}}"
        );
        self.post(
            "/fhir/r4/CoverageEligibilityRequest/$submit",
            "application/fhir+json",
            Some("application/fhir+json"),
            &body,
        )
    }

    /// A session of at most `room` steps (a session cut short is an abandoned one).
    fn ussd_session(&mut self, n: usize, room: usize) -> UssdSession {
        let roll = self.below(100);
        let lang = if self.below(5) == 0 { "2" } else { "1" };
        let mut texts = match roll {
            0..=79 => {
                let id = self.inquiry_id();
                vec![String::new(), lang.to_string(), format!("{lang}*{id}")]
            }
            80..=91 => vec![self.inquiry_id()],
            92..=95 => vec![String::new()],
            _ => vec![String::new(), lang.to_string()],
        };
        if texts.len() > room {
            // Hung up before the answer: the menu, then the prompt.
            texts = [String::new(), lang.to_string()][..room].to_vec();
        }
        // A mobile number of its own per session (+98 9xx xxx xxxx).
        let phone = format!("+989{:09}", (self.phone_base + n as u64) % 1_000_000_000);
        UssdSession {
            session_id: format!("ATUid_{:016x}", self.rng.next_u64()),
            phone,
            texts,
        }
    }

    fn ussd_step(&self, session: &UssdSession, step: usize) -> Vec<u8> {
        let body = [
            ("sessionId", session.session_id.as_str()),
            ("serviceCode", "*1420*4#"),
            ("phoneNumber", session.phone.as_str()),
            ("text", session.texts[step].as_str()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
        self.post("/ussd", "application/x-www-form-urlencoded", None, &body)
    }

    fn build(mut self, len: usize) -> Vec<Vec<u8>> {
        let share = |s: f64| (len as f64 * s).round() as usize;
        let (singles, booklets, batches, fhirs) = (
            share(SINGLE_SHARE),
            share(BOOKLET_SHARE),
            share(BATCH_SHARE),
            share(FHIR_SHARE),
        );
        let ussd_steps = len.saturating_sub(singles + booklets + batches + fhirs);
        self.phone_base = self.rng.next_u64() % 1_000_000_000;
        let mut sessions = Vec::new();
        let mut steps = 0;
        while steps < ussd_steps {
            let s = self.ussd_session(sessions.len(), ussd_steps - steps);
            steps += s.texts.len();
            sessions.push(s);
        }
        // One unit per request, a session's first step standing for the whole session.
        let mut units: Vec<Slot> = Vec::with_capacity(len);
        units.extend(std::iter::repeat_n(Slot::Single, singles));
        units.extend(std::iter::repeat_n(Slot::Booklet, booklets));
        units.extend(std::iter::repeat_n(Slot::Batch, batches));
        units.extend(std::iter::repeat_n(Slot::Fhir, fhirs));
        units.extend((0..sessions.len() as u32).map(Slot::Ussd));
        // Fisher–Yates.
        for i in (1..units.len()).rev() {
            let j = self.below(i + 1);
            units.swap(i, j);
        }
        // A session's later steps follow its first within a few dozen requests, so every
        // stretch of the list (a short run sends only its start) has whole sessions in it.
        let mut out = Vec::with_capacity(len);
        let mut pending: Vec<Pending> = Vec::new();
        let mut fhir_n = 0;
        for unit in units {
            self.emit_due(&mut out, &mut pending, &sessions, false);
            let request = match unit {
                Slot::Single => self.single(),
                Slot::Booklet => self.booklet_request(),
                Slot::Batch => self.batch(),
                Slot::Fhir => {
                    fhir_n += 1;
                    self.fhir(fhir_n)
                }
                Slot::Ussd(s) => {
                    let first = Pending {
                        due: 0,
                        session: s as usize,
                        step: 0,
                    };
                    self.emit_step(&mut out, &mut pending, &sessions, first);
                    continue;
                }
            };
            out.push(request);
        }
        self.emit_due(&mut out, &mut pending, &sessions, true);
        out
    }

    /// Appends the USSD steps due at the current length of `out` (every pending step when
    /// `all`), earliest first.
    fn emit_due(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        pending: &mut Vec<Pending>,
        sessions: &[UssdSession],
        all: bool,
    ) {
        while let Some((i, p)) = pending.iter().enumerate().min_by_key(|(_, p)| p.due) {
            if !all && p.due > out.len() {
                break;
            }
            let p = *p;
            pending.swap_remove(i);
            self.emit_step(out, pending, sessions, p);
        }
    }

    /// Appends one step of a session and schedules its next.
    fn emit_step(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        pending: &mut Vec<Pending>,
        sessions: &[UssdSession],
        p: Pending,
    ) {
        let session = &sessions[p.session];
        out.push(self.ussd_step(session, p.step));
        if p.step + 1 < session.texts.len() {
            pending.push(Pending {
                due: out.len() + 1 + self.below(MAX_STEP_GAP),
                session: p.session,
                step: p.step + 1,
            });
        }
    }
}

/// A USSD step waiting for its place: after `due` requests of the list.
#[derive(Clone, Copy)]
struct Pending {
    due: usize,
    session: usize,
    step: usize,
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests;
