//! Errors echo nothing (issue 22, item 7), against the real binary with keys, the public
//! page and the demo population: every error path of every route (bad ID, date, service,
//! `_format`, Accept, Content-Type, method, route, key, channel, rate, body size, JSON, form)
//! is asked with a national ID that is not the one asked about in every header added and
//! every query parameter (and, where a body can be wrong, in the body), and no answer may
//! hold it: not as sent, not without its leading zero, not in Persian or Arabic-Indic digits.
//! A failure lists every route and case that gave it away.

use std::io::{Read, Write};
use std::time::Duration;

use eligd::national_id::NationalId;

use crate::access::{add_key, bearer};
use crate::support::{arabic_indic, persian};
use crate::support::{serve, Served};

/// Who is asked about, when a request names anyone.
const SUBJECT: &str = "0012345679";

/// The ID that must never come back: valid, with a leading zero, not [`SUBJECT`].
fn planted() -> String {
    let id = NationalId::from_prefix(87_654_321).unwrap().to_string();
    assert!(id.starts_with('0') && id != SUBJECT);
    id
}

/// The forms of `id` that count as giving it away.
fn forms(id: &str) -> Vec<String> {
    vec![
        id.to_string(),
        id.trim_start_matches('0').to_string(),
        persian(id),
        arabic_indic(id),
    ]
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Keys for every channel, and one that runs out at once.
struct Keys {
    http: String,
    fhir: String,
    ussd: String,
    sms: String,
    slow: String,
}

/// One request of the sweep.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    authorization: Option<String>,
    accept: String,
    content_type: Option<String>,
    body: Vec<u8>,
    /// A Content-Length above the limit, with no body sent.
    oversize: bool,
    /// Statuses that show the refusal meant happened (empty: any).
    statuses: &'static [u16],
    /// Sent again (up to 20 times) until this status comes: a rate limit.
    until: Option<u16>,
}

/// One request on its own connection; the whole answer (head and body) as text.
fn send(addr: &str, case: &Case, id: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let length = if case.oversize {
        1_000_000
    } else {
        case.body.len()
    };
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {length}\r\n",
        case.method, case.path
    );
    let mut headers = vec![
        ("accept", case.accept.clone()),
        ("user-agent", format!("clinic-app/2.1 (patient {id})")),
        ("x-forwarded-for", format!("203.0.113.9, {id}")),
        ("forwarded", format!("for=\"{id}\"")),
        (
            "referer",
            format!("https://his.example/patients/{id}?nid={id}"),
        ),
        ("cookie", format!("nid={id}; last={id}")),
        ("x-national-id", id.to_string()),
        ("x-anything", format!("patient={id}")),
    ];
    if let Some(c) = &case.content_type {
        headers.push(("content-type", c.clone()));
    }
    if let Some(a) = &case.authorization {
        headers.push(("authorization", a.clone()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // The server may answer (and close) before reading a body it refuses.
    let _ = s.write_all(head.as_bytes());
    if !case.oversize {
        let _ = s.write_all(&case.body);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Every case, for `id` planted in headers, query and bodies.
fn cases(keys: &Keys, id: &str) -> Vec<Case> {
    let fa = percent(&persian(id));
    // Query parameters each route ignores, so that they ride along on every case.
    let q_json = format!("_format={id}&foo={id}&nid={fa}");
    let q_fhir = format!("service={id}&date={id}&foo={id}&nid={fa}");
    let q_all = format!("service={id}&date={id}&_format={id}&foo={id}&nid={fa}");
    let bearer_of = |k: &str| Some(bearer(k));
    let bad_key = Some(format!("Bearer eligd_{id}_{id}"));
    let json_ct = Some(format!("application/json; nid={id}"));
    let fhir_ct = Some(format!("application/fhir+json; charset=utf-8; nid={id}"));
    let form_ct = Some(format!("application/x-www-form-urlencoded; nid={id}"));
    let json_accept = format!("application/fhir+json; nid={id}, */*; q=0.1");
    let xml_accept = format!("application/fhir+xml; nid={id}");
    let base = |name, method, path: String| Case {
        name,
        method,
        path,
        authorization: None,
        accept: json_accept.clone(),
        content_type: None,
        body: Vec::new(),
        oversize: false,
        statuses: &[],
        until: None,
    };
    let member = format!("/v1/members/{SUBJECT}/eligibility");
    let fhir = "/fhir/r4/CoverageEligibilityRequest";
    let fhir_body = |patient: &str, extra: &str| {
        format!(
            r#"{{"resourceType": "CoverageEligibilityRequest", "status": "active",
                "purpose": ["validation"], "created": "2026-11-22T09:00:00+03:30",
                "insurer": {{"display": "sso"}},
                "patient": {{"identifier": {{"system": "urn:eligd:national-id", "value": {patient}}}}}{extra}}}"#
        )
        .into_bytes()
    };
    let subject_json = format!("\"{SUBJECT}\"");
    let ussd_form =
        format!("sessionId=s1&serviceCode=*1420*4%23&phoneNumber=09120000000&text=1*{SUBJECT}");
    let sms_form = format!("from=09120000000&text={SUBJECT}");
    let mut all = Vec::new();
    let mut add = |mut c: Case, auth: Option<String>, statuses: &'static [u16]| {
        c.authorization = auth;
        c.statuses = statuses;
        all.push(c);
    };

    // The JSON API.
    let h = || bearer_of(&keys.http);
    add(
        base(
            "bad national ID",
            "GET",
            format!("/v1/members/12/eligibility?{q_json}"),
        ),
        h(),
        &[400],
    );
    add(
        base("bad date", "GET", format!("{member}?date={id}&{q_json}")),
        h(),
        &[400],
    );
    add(
        base(
            "bad service",
            "GET",
            format!("{member}?service={id}&{q_json}"),
        ),
        h(),
        &[400],
    );
    add(
        base("no key", "GET", format!("{member}?{q_json}")),
        None,
        &[401],
    );
    add(
        base("bad key", "GET", format!("{member}?{q_json}")),
        bad_key.clone(),
        &[401],
    );
    add(
        base(
            "key of another channel",
            "GET",
            format!("{member}?{q_json}"),
        ),
        bearer_of(&keys.fhir),
        &[403],
    );
    add(
        base("wrong method", "DELETE", format!("{member}?{q_json}")),
        h(),
        &[405],
    );
    add(
        base(
            "answered (not an error)",
            "GET",
            format!("{member}?{q_json}"),
        ),
        h(),
        &[200, 404],
    );
    let mut c = base("rate limited", "GET", format!("{member}?{q_json}"));
    c.until = Some(429);
    add(c, bearer_of(&keys.slow), &[]);
    add(
        base(
            "bad booklet number",
            "GET",
            format!("/v1/booklets/abc/eligibility?{q_json}"),
        ),
        h(),
        &[400],
    );
    add(
        base(
            "booklet, bad service",
            "GET",
            format!("/v1/booklets/000777/eligibility?service={id}&{q_json}"),
        ),
        h(),
        &[400],
    );
    let batch = format!("/v1/eligibility/batch?{q_all}");
    for (name, body) in [
        ("batch, malformed JSON", "{\"national_ids\": [".to_string()),
        (
            "batch, IDs not an array",
            format!("{{\"national_ids\": \"{id}\"}}"),
        ),
        (
            "batch, an ID as a number",
            format!("{{\"national_ids\": [{}]}}", id.trim_start_matches('0')),
        ),
        (
            "batch, unknown field",
            format!("{{\"national_ids\": [], \"{id}\": 1}}"),
        ),
        (
            "batch, bad date",
            format!("{{\"national_ids\": [\"{SUBJECT}\"], \"date\": \"{id}\"}}"),
        ),
        (
            "batch, bad service",
            format!("{{\"national_ids\": [\"{SUBJECT}\"], \"service\": \"{id}\"}}"),
        ),
    ] {
        let mut c = base(name, "POST", batch.clone());
        c.content_type = json_ct.clone();
        c.body = body.into_bytes();
        add(c, h(), &[400]);
    }
    let mut c = base("batch, too large", "POST", batch.clone());
    c.oversize = true;
    add(c, h(), &[413]);
    add(
        base("batch, wrong method", "GET", batch.clone()),
        h(),
        &[405],
    );
    add(base("batch, no key", "POST", batch.clone()), None, &[401]);

    // FHIR.
    let f = || bearer_of(&keys.fhir);
    let fhir_post = |name, path: String, body: Vec<u8>| {
        let mut c = base(name, "POST", path);
        c.content_type = fhir_ct.clone();
        c.body = body;
        c
    };
    let mut c = base(
        "metadata, XML accepted only",
        "GET",
        format!("/fhir/r4/metadata?{q_fhir}"),
    );
    c.accept = xml_accept.clone();
    add(c, None, &[406]);
    add(
        base(
            "metadata, bad _format",
            "GET",
            format!("/fhir/r4/metadata?_format={id}&{q_fhir}"),
        ),
        None,
        &[406],
    );
    add(
        base(
            "metadata, wrong method",
            "POST",
            format!("/fhir/r4/metadata?{q_fhir}"),
        ),
        None,
        &[405],
    );
    let good = fhir_body(&subject_json, "");
    let mut c = fhir_post(
        "XML accepted only",
        format!("{fhir}?{q_fhir}"),
        good.clone(),
    );
    c.accept = xml_accept.clone();
    add(c, f(), &[406]);
    add(
        fhir_post(
            "$submit, bad _format",
            format!("{fhir}/$submit?_format={id}&{q_fhir}"),
            good.clone(),
        ),
        f(),
        &[406],
    );
    let mut c = fhir_post("XML sent", format!("{fhir}?{q_fhir}"), good.clone());
    c.content_type = Some(format!("application/fhir+xml; nid={id}"));
    add(c, f(), &[415]);
    let mut c = fhir_post("bad charset", format!("{fhir}?{q_fhir}"), good.clone());
    c.content_type = Some(format!("application/fhir+json; charset={id}"));
    add(c, f(), &[415]);
    let mut c = fhir_post("bad fhirVersion", format!("{fhir}?{q_fhir}"), good.clone());
    c.content_type = Some(format!("application/fhir+json; fhirVersion={id}"));
    add(c, f(), &[415]);
    for (name, body) in [
        ("malformed JSON", b"{\"resourceType\": ".to_vec()),
        ("ID as a number", fhir_body(id.trim_start_matches('0'), "")),
        ("bad national ID", fhir_body("\"12\"", "")),
        ("bad servicedDate", fhir_body(&subject_json, &format!(", \"servicedDate\": \"{id}\""))),
        ("unknown service", fhir_body(&subject_json, &format!(
            ", \"item\": [{{\"category\": {{\"coding\": [{{\"system\": \"urn:eligd:service\", \"code\": \"{id}\"}}]}}}}]"
        ))),
        ("another resource", format!("{{\"resourceType\": \"Patient\", \"id\": \"{id}\"}}").into_bytes()),
    ] {
        add(fhir_post(name, format!("{fhir}?{q_fhir}"), body), f(), &[400]);
    }
    let mut c = fhir_post("too large", format!("{fhir}?{q_fhir}"), Vec::new());
    c.oversize = true;
    add(c, f(), &[413]);
    add(
        base("wrong method", "GET", format!("{fhir}?{q_fhir}")),
        f(),
        &[405],
    );
    add(
        fhir_post("no key", format!("{fhir}?{q_fhir}"), good.clone()),
        None,
        &[401],
    );
    add(
        fhir_post("bad key", format!("{fhir}?{q_fhir}"), good.clone()),
        bad_key.clone(),
        &[401],
    );
    add(
        fhir_post(
            "key of another channel",
            format!("{fhir}?{q_fhir}"),
            good.clone(),
        ),
        h(),
        &[403],
    );
    add(
        base(
            "unknown FHIR route",
            "GET",
            format!("/fhir/r4/Patient/{id}?{q_fhir}"),
        ),
        f(),
        &[404],
    );
    let mut c = fhir_post("rate limited", format!("{fhir}?{q_fhir}"), good.clone());
    c.until = Some(429);
    add(c, bearer_of(&keys.slow), &[]);

    // USSD and SMS: gateways get 200 for everything but a missing or wrong key.
    for (route, key, form) in [
        ("/ussd", &keys.ussd, &ussd_form),
        ("/sms", &keys.sms, &sms_form),
    ] {
        let path = format!("{route}?{q_all}");
        let post = |name, body: &str| {
            let mut c = base(name, "POST", path.clone());
            c.content_type = form_ct.clone();
            c.body = body.as_bytes().to_vec();
            c
        };
        add(
            post("answered (not an error)", form),
            bearer_of(key),
            &[200],
        );
        add(
            post("malformed form", "%zz&&text=%FF&text=1"),
            bearer_of(key),
            &[200],
        );
        add(post("empty form", ""), bearer_of(key), &[200]);
        add(post("no key", form), None, &[401]);
        add(post("bad key", form), bad_key.clone(), &[401]);
        add(post("key of another channel", form), h(), &[403]);
        add(
            base("wrong method", "GET", path.clone()),
            bearer_of(key),
            &[200, 405],
        );
        let mut c = post("too large", "");
        c.oversize = true;
        add(c, bearer_of(key), &[200, 413]);
    }

    // The public endpoint (no key; its own per-address limit, so 429 may come early).
    let public = format!("/v1/public/credit?{q_all}");
    for (name, body) in [
        ("public, malformed JSON", "{".to_string()),
        (
            "public, ID as a number",
            format!("{{\"national_id\": {}}}", id.trim_start_matches('0')),
        ),
        ("public, unknown field", format!("{{\"{id}\": \"x\"}}")),
        (
            "public, bad national ID",
            "{\"national_id\": \"12\"}".to_string(),
        ),
        (
            "public, both fields",
            format!("{{\"national_id\": \"{SUBJECT}\", \"booklet_no\": \"1\"}}"),
        ),
    ] {
        let mut c = base(name, "POST", public.clone());
        c.content_type = json_ct.clone();
        c.body = body.into_bytes();
        add(c, None, &[400, 429]);
    }
    add(
        base("public, wrong method", "GET", public.clone()),
        None,
        &[405, 429],
    );
    let mut c = base("public, too large", "POST", public.clone());
    c.oversize = true;
    add(c, None, &[413, 429]);
    let mut c = base("public, rate limited", "POST", public.clone());
    c.content_type = json_ct.clone();
    c.body = format!("{{\"national_id\": \"{SUBJECT}\"}}").into_bytes();
    c.until = Some(429);
    add(c, None, &[]);

    // Routes that are not inquiries.
    for path in [
        "/nope",
        "/v1/members",
        "/v1/members/x/eligibility/more",
        "/fhir",
    ] {
        add(
            base("unknown route", "GET", format!("{path}?{q_all}")),
            h(),
            &[404],
        );
    }
    for path in ["/healthz", "/readyz", "/metrics", "/status", "/"] {
        add(
            base("wrong method", "POST", format!("{path}?{q_all}")),
            h(),
            &[405],
        );
    }
    all
}

#[test]
fn no_error_quotes_a_header_or_a_query_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let keys = Keys {
        http: add_key(&file, "clinic-1", "http", 1000, &[]),
        fhir: add_key(&file, "hospital-1", "fhir", 1000, &[]),
        ussd: add_key(&file, "gateway-ussd", "ussd", 1000, &[]),
        sms: add_key(&file, "gateway-sms", "sms", 1000, &[]),
        slow: add_key(&file, "slow-1", "any", 1, &["--burst", "1"]),
    };
    let served: Served = serve(&[
        "--demo-members",
        "1000",
        "--api-keys",
        file.to_str().unwrap(),
    ]);
    let id = planted();
    let forms = forms(&id);
    let mut leaks = Vec::new();
    let mut wrong = Vec::new();
    for case in cases(&keys, &id) {
        let mut tries = 0;
        let (status, answer) = loop {
            tries += 1;
            let (status, answer) = send(&served.addr, &case, &id);
            if let Some(found) = forms.iter().find(|f| answer.contains(f.as_str())) {
                leaks.push(format!(
                    "{} {} ({}): {status} holds {found}:\n{answer}",
                    case.method, case.path, case.name
                ));
            }
            match case.until {
                Some(wanted) if status != wanted && tries < 20 => continue,
                _ => break (status, answer),
            }
        };
        let expected: Vec<u16> = case
            .until
            .into_iter()
            .chain(case.statuses.iter().copied())
            .collect();
        if !expected.is_empty() && !expected.contains(&status) {
            wrong.push(format!(
                "{} {} ({}): {status}, expected one of {expected:?}:\n{answer}",
                case.method, case.path, case.name
            ));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} answers gave the planted ID away:\n\n{}",
        leaks.len(),
        leaks.join("\n\n")
    );
    assert!(
        wrong.is_empty(),
        "the refusal meant did not happen:\n\n{}",
        wrong.join("\n\n")
    );
}
