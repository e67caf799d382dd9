//! Seeded fuzzing of every parser that reads input from people or the
//! network: the chat command grammar, the chat form and GitHub webhook JSON
//! decoding, durations and the profile template renderer. Inputs are random
//! mutations and splices of valid examples, so they get past the first
//! check. The property is: no panic, and for durations a round trip.
//!
//! `make test` runs `FUZZ_CASES` (default 3,000) per target; longer runs:
//! `FUZZ_CASES=1000000 FUZZ_SEED=7 cargo test --release --test fuzz -- --nocapture`.

use std::{collections::BTreeMap, panic::AssertUnwindSafe};

use ephemera::{
    adapters::{chat, github},
    api::duration::{format_duration, parse_duration},
    controller::build::template,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&str] = &[
    "",
    " ",
    "\t",
    "\n",
    "\0",
    "-",
    "--",
    "=",
    "\"",
    "'",
    "\\",
    "{{",
    "}}",
    "{{ ",
    " }}",
    "{",
    "}",
    "%",
    "%zz",
    "&",
    "+",
    "é",
    "💥",
    "\u{202e}",
    "9999999999999999999999",
    "213503982334601d",
    "18446744073709551615s",
    "0s",
    "1d",
    "25215s",
    "--image",
    "--version",
    "--ttl",
    "--size",
    "create",
    "extend",
    "delete",
    "list",
    "help",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "{{ database.url }}",
    "{{name}}",
    "\"action\":",
    "null",
    "[]",
    "{}",
    "true",
    "-1",
    "1e309",
];

fn mutate(rng: &mut Rng, seeds: &[&str]) -> String {
    let mut text: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
    for _ in 0..=rng.below(6) {
        let at = rng.below(text.len() + 1);
        match rng.below(5) {
            0 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                text.splice(at..at, piece.chars());
            }
            1 if !text.is_empty() => {
                let end = (at + rng.below(8)).min(text.len());
                text.drain(at.min(end)..end);
            }
            2 => {
                let c = char::from_u32(rng.below(0x3000) as u32).unwrap_or('?');
                text.insert(at, c);
            }
            3 => {
                let other: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
                let from = rng.below(other.len() + 1);
                text.splice(at..at, other[from..].iter().copied());
            }
            _ => {
                if at < text.len() {
                    text[at] = INTERESTING[rng.below(INTERESTING.len())]
                        .chars()
                        .next()
                        .unwrap_or('x');
                }
            }
        }
    }
    text.into_iter().collect()
}

/// Runs `target` on `cases` mutated inputs; fails with the input of the
/// first panic.
fn fuzz(name: &str, seeds: &[&str], target: impl Fn(&str)) {
    let cases: u64 = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11);
    let mut rng = Rng(seed ^ name.len() as u64);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut panicked = None;
    for _ in 0..cases {
        let input = mutate(&mut rng, seeds);
        if std::panic::catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            panicked = Some(input);
            break;
        }
    }
    std::panic::set_hook(previous);
    if let Some(input) = panicked {
        panic!("fuzz target {name} panicked on input {input:?} (FUZZ_SEED={seed})");
    }
    let line = format!("FIGURES fuzz {name}: {cases} executions, 0 panics (FUZZ_SEED={seed})");
    println!("{line}");
    if let Some(path) = std::env::var_os("EPHEMERA_FIGURES") {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

#[test]
fn chat_command_grammar() {
    fuzz(
        "chat command",
        &[
            "create demo --version 1.2.3 --ttl 48h --size miniHA",
            "create demo --image ghcr.io/acme/app --test-data",
            "extend demo 2d",
            "extend demo 213503982334601d25215s",
            "delete demo",
            "list",
            "help",
            "hibernate demo",
            "upgrade demo --version 2",
        ],
        |text| {
            let _ = chat::command::parse(text);
            let _ = chat::command::valid_name(text);
        },
    );
}

#[test]
fn chat_form_decoding() {
    fuzz(
        "chat form",
        &[
            "token=t&team_id=T1&team_domain=a&channel_id=C&user_id=U&user_name=bob&command=%2Ftestenv&text=create+demo",
            "command=/testenv&text=list&user_id=U1&response_url=http%3A%2F%2Fx",
        ],
        |text| {
            let _ = serde_urlencoded::from_bytes::<chat::handler::CommandRequest>(text.as_bytes());
        },
    );
}

#[test]
fn github_webhook_decoding() {
    let config = github::Config::from_yaml(
        "apiBaseUrl: http://127.0.0.1:9\nbotLogin: bot\nwebhookSecrets: [{env: FUZZ_UNUSED}]\nauth: {token: {env: FUZZ_UNUSED}}\nrepositories: [{name: acme/x}]\n",
    );
    let Ok(config) = config else {
        // Secrets come from the environment; give them for this test.
        // SAFETY: set before any other thread of this test reads it.
        unsafe { std::env::set_var("FUZZ_UNUSED", "x") };
        return github_webhook_decoding();
    };
    let pr = r#"{"action":"labeled","number":7,"label":{"name":"testenv"},"pull_request":{"number":7,"state":"open","head":{"sha":"0123456789abcdef0123456789abcdef01234567","ref":"f","repo":{"full_name":"acme/x"}},"base":{"ref":"main","repo":{"full_name":"acme/x"}},"labels":[{"name":"testenv"}],"user":{"login":"a"}},"repository":{"full_name":"acme/x"},"sender":{"login":"a"}}"#;
    let comment = r#"{"action":"created","issue":{"number":7,"pull_request":{}},"comment":{"id":1,"body":"/testenv extend 2d","user":{"login":"a"}},"repository":{"full_name":"acme/x"},"sender":{"login":"a"}}"#;
    for event in ["pull_request", "issue_comment", "ping", "push"] {
        fuzz(&format!("github webhook {event}"), &[pr, comment], |text| {
            let _ = github::events::triage(event, text.as_bytes(), &config);
        });
    }
}

#[test]
fn durations_parse_or_refuse_and_round_trip() {
    fuzz(
        "duration",
        &[
            "90m",
            "48h",
            "7d",
            "1d2h3m4s",
            "213503982334601d25215s",
            "0s",
            "999999999999d",
        ],
        |text| {
            if let Ok(duration) = parse_duration(text) {
                let again = parse_duration(&format_duration(duration)).unwrap_or_else(|err| {
                    panic!("{text:?} formats to something unparsable: {err}")
                });
                assert_eq!(again, duration, "{text:?}");
            }
        },
    );
}

#[test]
fn profile_templates_render_or_refuse() {
    let values: BTreeMap<String, String> = [
        ("name", "demo"),
        ("database.url", "postgres://u:p@db/app"),
        ("credentials.adminPassword", "pw"),
        ("url", "https://demo.example"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    fuzz(
        "template",
        &[
            "{{ database.url }}?sslmode=disable",
            "https://{{name}}.example/{{ url }}",
            "plain",
            "{{ credentials.adminPassword }}{{",
            "}}{{ unknown }}",
        ],
        |text| {
            let _ = template::render(text, &values);
        },
    );
}
