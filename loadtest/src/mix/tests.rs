use super::*;
use std::collections::HashMap;

const MEMBERS: u64 = 20_000;
const LEN: usize = 20_000;

fn opts(api_key: Option<&str>) -> MixOptions {
    MixOptions {
        members: MEMBERS,
        seed: 7,
        api_key: api_key.map(str::to_string),
        invalid_or_unknown: 0.10,
    }
}

/// One request taken apart; panics when it is not a well-formed HTTP/1.1 request.
struct Parsed {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse(request: &[u8]) -> Parsed {
    let text = std::str::from_utf8(request).expect("UTF-8 request");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a head ending in CRLF CRLF");
    let mut lines = head.split("\r\n");
    let start: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert_eq!(start.len(), 3, "request line {start:?}");
    assert_eq!(start[2], "HTTP/1.1");
    assert!(start[1].starts_with('/'));
    assert!(
        start[1].bytes().all(|b| b.is_ascii_graphic()),
        "{}",
        start[1]
    );
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("header {l:?}"));
            assert!(!k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
            (k.to_string(), v.to_string())
        })
        .collect();
    let parsed = Parsed {
        method: start[0].to_string(),
        path: start[1].to_string(),
        headers,
        body: body.to_string(),
    };
    assert_eq!(parsed.header("host"), Some("eligd"));
    match parsed.header("content-length") {
        Some(n) => assert_eq!(n.parse::<usize>().unwrap(), body.len(), "{text}"),
        None => assert!(body.is_empty(), "a body without Content-Length: {text}"),
    }
    parsed
}

/// `application/x-www-form-urlencoded` decoding (enough for the mix's forms).
fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            let mut bytes = Vec::new();
            let mut it = v.bytes();
            while let Some(b) = it.next() {
                match b {
                    b'+' => bytes.push(b' '),
                    b'%' => {
                        let hex = [it.next().unwrap(), it.next().unwrap()];
                        let hex = std::str::from_utf8(&hex).unwrap();
                        bytes.push(u8::from_str_radix(hex, 16).unwrap());
                    }
                    _ => bytes.push(b),
                }
            }
            (k.to_string(), String::from_utf8(bytes).unwrap())
        })
        .collect()
}

/// The quoted strings after `"key": ` or in the array after it.
fn json_strings_after<'a>(body: &'a str, key: &str) -> Vec<&'a str> {
    let start = body.find(&format!("\"{key}\": ")).expect(key) + key.len() + 4;
    let rest = &body[start..];
    let end = if rest.starts_with('[') {
        rest.find(']').unwrap()
    } else {
        rest[1..].find('"').unwrap() + 2
    };
    rest[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
}

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Route {
    Single,
    Booklet,
    Batch,
    Ussd,
    Fhir,
}

fn route(p: &Parsed) -> Route {
    match (p.method.as_str(), p.path.as_str()) {
        ("GET", path) if path.starts_with("/v1/members/") => Route::Single,
        ("GET", path) if path.starts_with("/v1/booklets/") => Route::Booklet,
        ("POST", "/v1/eligibility/batch") => Route::Batch,
        ("POST", "/ussd") => Route::Ussd,
        ("POST", "/fhir/r4/CoverageEligibilityRequest/$submit") => Route::Fhir,
        other => panic!("unexpected request {other:?}"),
    }
}

/// The path segment after `prefix`, before `/eligibility`.
fn segment<'a>(path: &'a str, prefix: &str) -> &'a str {
    let rest = path.strip_prefix(prefix).unwrap();
    let (seg, tail) = rest.split_once('/').unwrap();
    assert!(
        tail == "eligibility" || tail.starts_with("eligibility?service="),
        "{path}"
    );
    seg
}

struct Population {
    ids: HashSet<String>,
    booklets: HashSet<String>,
}

fn population() -> Population {
    let members: Vec<_> = Generator::new(MEMBERS, 7, Day::today()).collect();
    Population {
        ids: members.iter().map(|m| m.national_id.to_string()).collect(),
        booklets: members
            .iter()
            .filter_map(|m| m.booklet_no.as_ref().map(ToString::to_string))
            .collect(),
    }
}

#[derive(Default, Debug)]
struct Kinds {
    member: usize,
    unknown: usize,
    invalid: usize,
}

impl Kinds {
    fn count(&mut self, id: &str, population: &Population) {
        assert_eq!(id.len(), 10, "{id}");
        if population.ids.contains(id) {
            self.member += 1;
        } else if NationalId::parse(id).is_ok() {
            self.unknown += 1;
        } else {
            self.invalid += 1;
        }
    }

    fn total(&self) -> usize {
        self.member + self.unknown + self.invalid
    }
}

fn share(n: usize, of: usize) -> f64 {
    n as f64 / of as f64
}

#[test]
fn every_request_is_well_formed_and_the_routes_have_their_shares() {
    let mix = realistic_of_len(&opts(None), LEN);
    assert_eq!(mix.len(), LEN);
    let mut counts: HashMap<Route, usize> = HashMap::new();
    for request in &mix {
        let p = parse(request);
        assert_eq!(p.header("authorization"), None);
        let r = route(&p);
        *counts.entry(r).or_default() += 1;
        match r {
            Route::Single | Route::Booklet => assert_eq!(p.method, "GET"),
            Route::Batch => {
                assert_eq!(p.header("content-type"), Some("application/json"));
                assert_eq!(
                    json_strings_after(&p.body, "national_ids").len(),
                    BATCH_SIZE
                );
            }
            Route::Fhir => {
                assert_eq!(p.header("content-type"), Some("application/fhir+json"));
                assert!(p
                    .body
                    .starts_with("{\"resourceType\": \"CoverageEligibilityRequest\""));
            }
            Route::Ussd => assert_eq!(
                p.header("content-type"),
                Some("application/x-www-form-urlencoded")
            ),
        }
    }
    for (r, expected) in [
        (Route::Single, 0.55),
        (Route::Booklet, 0.10),
        (Route::Batch, 0.05),
        (Route::Ussd, 0.15),
        (Route::Fhir, 0.15),
    ] {
        let got = share(counts[&r], LEN);
        assert!((got - expected).abs() < 0.005, "{r:?}: {got}");
    }
}

#[test]
fn a_tenth_of_inquiries_name_nobody_and_the_rest_real_members() {
    let population = population();
    let mix = realistic_of_len(&opts(None), LEN);
    let (mut singles, mut batch, mut fhir, mut ussd) = Default::default();
    let (mut booklet_hits, mut booklet_misses) = (0, 0);
    for request in &mix {
        let p = parse(request);
        match route(&p) {
            Route::Single => {
                Kinds::count(&mut singles, segment(&p.path, "/v1/members/"), &population)
            }
            Route::Booklet => {
                let b = segment(&p.path, "/v1/booklets/");
                assert!(b.len() == 12 && b.starts_with("93"), "{b}");
                if population.booklets.contains(b) {
                    booklet_hits += 1;
                } else {
                    booklet_misses += 1;
                }
            }
            Route::Batch => {
                for id in json_strings_after(&p.body, "national_ids") {
                    Kinds::count(&mut batch, id, &population);
                }
            }
            Route::Fhir => {
                let id = json_strings_after(&p.body, "value")[0];
                Kinds::count(&mut fhir, id, &population);
            }
            Route::Ussd => {
                let f = form(&p.body);
                if let Some(id) = ussd_lookup(&f["text"]) {
                    Kinds::count(&mut ussd, id, &population);
                }
            }
        }
    }
    let all = Kinds {
        member: singles.member + batch.member + fhir.member + ussd.member,
        unknown: singles.unknown + batch.unknown + fhir.unknown + ussd.unknown,
        invalid: singles.invalid + batch.invalid + fhir.invalid + ussd.invalid,
    };
    for (name, k) in [
        ("singles", &singles),
        ("batch", &batch),
        ("fhir", &fhir),
        ("all", &all),
    ] {
        let (unknown, invalid) = (share(k.unknown, k.total()), share(k.invalid, k.total()));
        assert!((unknown - 0.05).abs() < 0.01, "{name}: {k:?}");
        assert!((invalid - 0.05).abs() < 0.01, "{name}: {k:?}");
    }
    // Fewer USSD lookups (about 2,400): a wider margin.
    let nobody = share(ussd.unknown + ussd.invalid, ussd.total());
    assert!((nobody - 0.10).abs() < 0.025, "ussd: {ussd:?}");
    assert!(ussd.unknown > 0 && ussd.invalid > 0, "ussd: {ussd:?}");
    let misses = share(booklet_misses, booklet_hits + booklet_misses);
    assert!(
        (misses - 0.10).abs() < 0.02,
        "booklets: {booklet_misses} misses"
    );
}

/// The ID a USSD step looks up: after the language choice (`1*<id>`), or a direct-dial ID
/// alone (two digits or more); `None` for the menu and the prompt.
fn ussd_lookup(text: &str) -> Option<&str> {
    match text.split_once('*') {
        Some((_, id)) => Some(id),
        None => (text.len() >= 2).then_some(text),
    }
}

#[test]
fn ussd_sessions_keep_their_phone_and_steps_in_order() {
    let mix = realistic_of_len(&opts(None), LEN);
    let mut sessions: Vec<(String, Vec<String>)> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut last_step_at: HashMap<String, usize> = HashMap::new();
    for (at, request) in mix.iter().enumerate() {
        let p = parse(request);
        if route(&p) != Route::Ussd {
            continue;
        }
        let f = form(&p.body);
        assert_eq!(f.len(), 4, "{:?}", p.body);
        assert_eq!(f["serviceCode"], "*1420*4#");
        let phone = &f["phoneNumber"];
        assert!(phone.starts_with("+989") && phone.len() == 13, "{phone}");
        let i = *by_id.entry(f["sessionId"].clone()).or_insert_with(|| {
            sessions.push((phone.clone(), Vec::new()));
            sessions.len() - 1
        });
        assert_eq!(&sessions[i].0, phone, "one phone per session");
        if let Some(before) = last_step_at.insert(f["sessionId"].clone(), at) {
            assert!(at - before <= 2 * MAX_STEP_GAP, "steps {before} and {at}");
        }
        sessions[i].1.push(f["text"].clone());
    }
    let phones: HashSet<&String> = sessions.iter().map(|(p, _)| p).collect();
    assert_eq!(phones.len(), sessions.len(), "a phone per session");
    let (mut whole, mut direct, mut abandoned) = (0, 0, 0);
    for (_, texts) in &sessions {
        let t: Vec<&str> = texts.iter().map(String::as_str).collect();
        match t.as_slice() {
            ["", lang, lookup] => {
                assert!(*lang == "1" || *lang == "2", "{t:?}");
                let id = lookup.strip_prefix(&format!("{lang}*")).expect("lang*id");
                assert_eq!(id.len(), 10, "{t:?}");
                whole += 1;
            }
            [id] if id.len() == 10 => direct += 1,
            [""] | ["", "1"] | ["", "2"] => abandoned += 1,
            other => panic!("not a session: {other:?}"),
        }
    }
    let n = sessions.len();
    assert!((share(whole, n) - 0.80).abs() < 0.04, "{whole} of {n}");
    assert!((share(direct, n) - 0.12).abs() < 0.03, "{direct} of {n}");
    assert!(
        (share(abandoned, n) - 0.08).abs() < 0.03,
        "{abandoned} of {n}"
    );
}

#[test]
fn a_key_goes_on_every_request_and_the_mix_is_deterministic() {
    let key = "eligd_abcd1234_SECRETsecretSECRETsecret";
    let mix = realistic_of_len(&opts(Some(key)), 2_000);
    for request in &mix {
        let expected = format!("Bearer {key}");
        assert_eq!(
            parse(request).header("authorization"),
            Some(expected.as_str())
        );
    }
    let again = realistic_of_len(&opts(Some(key)), 2_000);
    assert!(mix == again, "the same options give the same mix");
    let other = realistic_of_len(
        &MixOptions {
            seed: 8,
            ..opts(Some(key))
        },
        2_000,
    );
    assert!(mix != other);
}

#[test]
fn no_invalid_or_unknown_inquiries_when_the_share_is_zero() {
    let population = population();
    let mix = realistic_of_len(
        &MixOptions {
            invalid_or_unknown: 0.0,
            ..opts(None)
        },
        2_000,
    );
    for request in &mix {
        let p = parse(request);
        if route(&p) == Route::Single {
            assert!(population.ids.contains(segment(&p.path, "/v1/members/")));
        }
    }
}

#[test]
fn the_expected_statuses() {
    for s in [200, 400, 404] {
        assert!(expected_status(s));
    }
    for s in [201, 401, 403, 413, 429, 500, 503] {
        assert!(!expected_status(s));
    }
}

#[test]
fn a_short_run_sends_whole_ussd_sessions() {
    // The first 3,000 requests (a few seconds at 700/s): about as many answers as menus.
    let mix = realistic_of_len(&opts(None), LEN);
    let (mut menus, mut prompts, mut lookups) = (0, 0, 0);
    for request in &mix[..3_000] {
        let p = parse(request);
        if route(&p) == Route::Ussd {
            match form(&p.body)["text"].as_str() {
                "" => menus += 1,
                "1" | "2" => prompts += 1,
                _ => lookups += 1,
            }
        }
    }
    // Of 100 sessions: 88 menus, 84 prompts, 92 lookups.
    let all = f64::from(menus + prompts + lookups);
    for (name, n, expected) in [
        ("menus", menus, 88.0 / 264.0),
        ("prompts", prompts, 84.0 / 264.0),
        ("lookups", lookups, 92.0 / 264.0),
    ] {
        assert!(
            (f64::from(n) / all - expected).abs() < 0.06,
            "{name}: {menus} menus, {prompts} prompts, {lookups} lookups"
        );
    }
}
