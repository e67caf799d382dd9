//! Attacks on the trust boundaries, on the real API server: an installation
//! creator trying to read Secrets outside the shared-secrets namespace or to
//! run an image its profile does not allow; bad input refused by the API
//! server's CEL rules; hostile traffic (half-sent requests, idle and
//! dribbling clients, a 2,000-request burst) against both adapters' HTTP
//! servers. Prints its figures.

mod support;

/// Prints a figure of this suite, and appends it to `EPHEMERA_FIGURES`
/// (which `make test` shows at the end).
fn figure(line: String) {
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

use std::time::{Duration, Instant};

use ephemera::{
    adapters::{chat, github},
    api::{InstallationProfile, TestInstallation},
};
use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Secret},
    events::v1::Event,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    TEST_RUN_LABEL, client, controller_with, install_crds, server::RunningServer, unique_name,
    wait_for,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const TIMEOUT: Duration = Duration::from_secs(90);

async fn create_namespace_with_secret(client: &Client, ns: &str, secret: &str, value: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(ns).await.unwrap().is_none() {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap(),
            )
            .await
            .unwrap();
    }
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": secret },
                "stringData": { "value": value, "url": "postgres://u:p@db/app" }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

async fn create_profile(client: &Client, spec: Value) -> String {
    let name = unique_name("secprof");
    let mut full = json!({
        "image": "registry.example/app", "defaultVersion": "1.0.0",
        "database": { "engine": "none" }, "filestore": { "type": "none" }
    });
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    let profile: InstallationProfile = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1", "kind": "InstallationProfile",
        "metadata": { "name": name }, "spec": full
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    name
}

fn env_from(ns: &str, secret: &str) -> Value {
    json!({ "env": [{ "name": "STOLEN", "valueFrom": { "secretKeyRef":
        { "namespace": ns, "name": secret, "key": "value" } } }] })
}

async fn create_installation(client: &Client, run: &str, profile: &str, spec: Value) -> String {
    let name = unique_name("sec");
    let mut full = json!({ "profile": profile, "ttl": "1h" });
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    let ti: TestInstallation = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1", "kind": "TestInstallation",
        "metadata": { "name": name, "labels": { TEST_RUN_LABEL: run } },
        "spec": full
    }))
    .unwrap();
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap_or_else(|err| panic!("creating {name}: {err}"));
    name
}

/// Waits for the Stalled condition of `name` and returns (reason, message).
async fn stalled(client: &Client, name: &str) -> (String, String) {
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for(&format!("{name} Stalled"), TIMEOUT, || async {
        let ti = api.get(name).await.map_err(|e| e.to_string())?;
        match ti.condition("Stalled") {
            Some(c) if c.status == "True" => Ok((c.reason.clone(), c.message.clone())),
            _ => Err(format!("{:?}", ti.status)),
        }
    })
    .await
}

#[tokio::test]
async fn installations_cannot_reach_foreign_secrets_or_unlisted_images() {
    let client = client().await;
    install_crds(&client).await;
    let release = unique_name("release");
    let shared = unique_name("shared");
    // A controller that believes it runs in `release`, configured as badly as
    // the old chart did (its own namespace and kube-system allowed): the
    // refusal must not depend on the configuration being right.
    let (release_for_config, shared_for_config) = (release.clone(), shared.clone());
    let run = controller_with(move |config| {
        config.own_namespace = Some(release_for_config.clone());
        config.allowed_secret_namespaces =
            vec![shared_for_config, release_for_config, "kube-system".into()];
    });
    let token = format!("xoxb-exfil-{}", unique_name("t"));
    let shared_value = format!("shared-{}", unique_name("v"));
    create_namespace_with_secret(&client, &release, "ephemera-chat-tokens", &token).await;
    create_namespace_with_secret(&client, &shared, "db", &shared_value).await;
    let kube_system_secret = unique_name("planted");
    create_namespace_with_secret(&client, "kube-system", &kube_system_secret, &token).await;

    let profile = create_profile(
        &client,
        json!({
            "sharedSecrets": [format!("{shared}/db"), format!("{release}/ephemera-chat-tokens")],
            "allowedImages": ["registry.example/**"]
        }),
    )
    .await;
    let other = create_installation(&client, run, &profile, json!({})).await;
    let attempts: Vec<(&str, Value, &str)> = vec![
        (
            "env from the release namespace (adapter tokens)",
            env_from(&release, "ephemera-chat-tokens"),
            "SecretNamespaceNotAllowed",
        ),
        (
            "env from kube-system",
            env_from("kube-system", &kube_system_secret),
            "SecretNamespaceNotAllowed",
        ),
        (
            "env from default",
            env_from("default", "anything"),
            "SecretNamespaceNotAllowed",
        ),
        (
            "env from another installation's namespace",
            env_from(&format!("ti-{other}"), "credentials"),
            "SecretNamespaceNotAllowed",
        ),
        (
            "external database secret in the release namespace",
            json!({ "database": { "engine": "external", "secretRef":
                { "namespace": release, "name": "ephemera-chat-tokens" } } }),
            "SecretNamespaceNotAllowed",
        ),
        (
            "shared secret the profile does not list",
            env_from(&shared, "not-listed"),
            "SecretNotAllowedByProfile",
        ),
    ];
    let mut refused = 0;
    let mut names = vec![other.clone()];
    for (what, spec, want) in &attempts {
        let name = create_installation(&client, run, &profile, spec.clone()).await;
        let (reason, message) = stalled(&client, &name).await;
        assert_eq!(&reason, want, "{what}: {message}");
        println!("  refused: {what}: {message}");
        refused += 1;
        names.push(name);
    }
    let image = create_installation(
        &client,
        run,
        &profile,
        json!({ "image": "docker.io/library/alpine" }),
    )
    .await;
    let (reason, message) = stalled(&client, &image).await;
    assert_eq!(reason, "ImageNotAllowed", "{message}");
    assert!(message.contains("registry.example/**"), "{message}");
    names.push(image);

    // The one legitimate reference works.
    let allowed = create_installation(&client, run, &profile, env_from(&shared, "db")).await;
    names.push(allowed.clone());
    wait_for(&format!("{allowed} past planning"), TIMEOUT, || async {
        let ti = Api::<TestInstallation>::all(client.clone())
            .get(&allowed)
            .await
            .map_err(|e| e.to_string())?;
        match ti.condition("Stalled") {
            Some(c) if c.status == "True" => panic!("the allowed reference stalled: {}", c.message),
            _ if ti
                .status
                .as_ref()
                .and_then(|s| s.namespace.as_ref())
                .is_some() =>
            {
                Ok(())
            }
            _ => Err(format!("{:?}", ti.status)),
        }
    })
    .await;

    // No copy of the token anywhere: installation namespaces' Secrets,
    // statuses, Events.
    let mut scanned = 0;
    for name in &names {
        let ns = format!("ti-{name}");
        if let Ok(list) = Api::<Secret>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
        {
            for secret in list.items {
                let text = serde_json::to_string(&secret.data).unwrap();
                let decoded: String = secret
                    .data
                    .unwrap_or_default()
                    .values()
                    .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                    .collect();
                assert!(
                    !decoded.contains(&token) && !text.contains(&token),
                    "token copied into {ns}"
                );
                scanned += 1;
            }
        }
        let ti = Api::<TestInstallation>::all(client.clone())
            .get(name)
            .await
            .unwrap();
        let status = serde_json::to_string(&ti.status).unwrap();
        assert!(
            !status.contains(&token) && !status.contains(&shared_value),
            "status of {name}"
        );
        scanned += 1;
    }
    for event in Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let text = serde_json::to_string(&event).unwrap();
        assert!(
            !text.contains(&token) && !text.contains(&shared_value),
            "event {text}"
        );
        scanned += 1;
    }
    figure(format!(
        "FIGURES exfiltration: {refused} attempts refused, 1 unlisted image refused, {scanned} objects scanned, 0 leaks"
    ));

    support::delete_installations_and_wait(&client, &[format!("{TEST_RUN_LABEL}={run}")], TIMEOUT)
        .await;
    for ns in [&release, &shared] {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }
    let _ = Api::<Secret>::namespaced(client.clone(), "kube-system")
        .delete(&kube_system_secret, &DeleteParams::default())
        .await;
    let _ = Api::<InstallationProfile>::all(client)
        .delete(&profile, &DeleteParams::default())
        .await;
}

/// The API server's own refusal of `object` (dry run), or `None` if accepted.
async fn refusal<K>(api: &Api<K>, object: Value) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    match api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &object,
        )
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some(s.message),
        Err(err) => panic!("{err}"),
    }
}

#[tokio::test]
async fn bad_input_is_refused_by_the_api_server_with_the_rule_broken() {
    let client = client().await;
    install_crds(&client).await;
    let installations: Api<TestInstallation> = Api::all(client.clone());
    let profiles: Api<InstallationProfile> = Api::all(client.clone());
    let ti = |env: Value| {
        json!({ "apiVersion": "ephemera.dev/v1alpha1", "kind": "TestInstallation",
            "metadata": { "name": "bad-input" }, "spec": { "env": env } })
    };
    let secret_values = [
        format!("ghp_{}", "a1B2".repeat(9)),
        format!("github_pat_{}", "x".repeat(30)),
        "xoxb-1234567890-abcdefghij".to_string(),
        "AKIAABCDEFGHIJKLMNOP".to_string(),
        "-----BEGIN RSA PRIVATE KEY-----".to_string(),
        format!("glpat-{}", "z".repeat(20)),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig".to_string(),
    ];
    let mut refused = 0;
    for value in &secret_values {
        let message = refusal(
            &installations,
            ti(json!([{ "name": "DB_PASS_HINT_NOT", "value": value }])),
        )
        .await
        .unwrap_or_else(|| panic!("a secret-looking value was accepted: {value}"));
        assert!(message.contains("looks like a secret"), "{message}");
        refused += 1;
    }
    for benign in ["https://example.com", "debug", "ghp", "a.b.c", "AKIA-short"] {
        assert_eq!(
            refusal(
                &installations,
                ti(json!([{ "name": "SETTING", "value": benign }]))
            )
            .await,
            None,
            "a benign value was refused: {benign}"
        );
    }
    let profile = |spec: Value| {
        let mut full = json!({ "image": "registry.example/app", "defaultVersion": "1" });
        full.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        json!({ "apiVersion": "ephemera.dev/v1alpha1", "kind": "InstallationProfile",
            "metadata": { "name": "bad-input" }, "spec": full })
    };
    for (spec, rule) in [
        (json!({ "allowedImages": ["UPPER/case"] }), "allowedImages"),
        (
            json!({ "allowedImages": ["ghcr.io/app:tag"] }),
            "allowedImages",
        ),
        (json!({ "sharedSecrets": ["no-slash"] }), "sharedSecrets"),
        (json!({ "sharedSecrets": ["a/b/c"] }), "sharedSecrets"),
    ] {
        let message = refusal(&profiles, profile(spec.clone()))
            .await
            .unwrap_or_else(|| panic!("accepted: {spec}"));
        assert!(message.contains(rule), "{message}");
        refused += 1;
    }
    assert_eq!(
        refusal(
            &profiles,
            profile(json!({ "allowedImages": ["ghcr.io/acme/*", "**"],
            "sharedSecrets": ["ephemera-shared-secrets/db"] }))
        )
        .await,
        None
    );
    figure(format!(
        "FIGURES bad input: {refused} malformed objects refused by the API server"
    ));
}

// --- hostile traffic against the adapters' HTTP servers ---

fn secret_file(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

async fn start_chat(client: &Client, dir: &std::path::Path) -> RunningServer {
    let bot = secret_file(dir, "bot", "bot-token");
    let command = secret_file(dir, "command", "command-token");
    let signing = secret_file(dir, "signing", "signing-secret");
    let yaml = format!(
        "instance: {}\nmattermost:\n  url: http://127.0.0.1:9\n  botToken: {{file: {bot}}}\n  commandTokens: [{{file: {command}}}]\n\
         slack:\n  apiUrl: http://127.0.0.1:9/api\n  botToken: {{file: {bot}}}\n  signingSecret: {{file: {signing}}}\n",
        unique_name("hostile")
    );
    let config = chat::config::Config::from_yaml(&yaml).expect("chat config");
    let client = client.clone();
    RunningServer::spawn_ready(move |listener, shutdown| {
        chat::serve(client, config, listener, shutdown)
    })
    .await
}

async fn start_github(client: &Client, dir: &std::path::Path) -> RunningServer {
    let secret = secret_file(dir, "webhook", "webhook-secret");
    let token = secret_file(dir, "token", "gh-token");
    let yaml = format!(
        "apiBaseUrl: http://127.0.0.1:9\nbotLogin: bot\nwebhookSecrets: [{{file: {secret}}}]\n\
         auth: {{token: {{file: {token}}}}}\nrepositories: [{{name: acme/x}}]\n"
    );
    let config = github::Config::from_yaml(&yaml).expect("github config");
    let client = client.clone();
    RunningServer::spawn_ready(move |listener, shutdown| {
        github::run(listener, config, client, shutdown)
    })
    .await
}

/// How one slow client ended: its kind (what it sent) and after how long
/// the server closed it, `None` when it was still open at the deadline.
struct SlowClient {
    kind: &'static str,
    closed_after: Option<Duration>,
    connect: Duration,
}

/// Opens `count` connections that each send part of a request (or nothing,
/// or a whole head and a trickle of body) and then stall; reports when the
/// server closed each one, waiting at most `within`.
async fn slow_clients(
    addr: std::net::SocketAddr,
    count: usize,
    within: Duration,
) -> Vec<SlowClient> {
    let mut tasks = Vec::new();
    for i in 0..count {
        tasks.push(tokio::spawn(async move {
            let (kind, partial): (&'static str, &[u8]) = match i % 3 {
                0 => ("half head", b"POST /github/webhook HTTP/1.1\r\nHost: x\r\nContent-Le"),
                1 => ("silent", b""),
                _ => ("dribbled body", b"POST /mattermost/command HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\ntoken="),
            };
            let started = Instant::now();
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                // Refused outright: dropped as well.
                return SlowClient { kind, closed_after: Some(Duration::ZERO), connect: started.elapsed() };
            };
            let connect = started.elapsed();
            let _ = stream.write_all(partial).await;
            let mut buf = [0u8; 1024];
            let closed = async {
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {} // a 408 answer, then the close
                    }
                }
            };
            let closed_after = tokio::time::timeout(within, closed)
                .await
                .ok()
                .map(|()| started.elapsed());
            SlowClient { kind, closed_after, connect }
        }));
    }
    let mut ended = Vec::new();
    for task in tasks {
        ended.push(task.await.unwrap());
    }
    ended
}

/// One line per kind of slow client: how many were closed and how late.
fn slow_client_summary(clients: &[SlowClient]) -> String {
    let mut lines = Vec::new();
    for kind in ["half head", "silent", "dribbled body"] {
        let of_kind: Vec<&SlowClient> = clients.iter().filter(|c| c.kind == kind).collect();
        let closed: Vec<Duration> = of_kind.iter().filter_map(|c| c.closed_after).collect();
        let slowest = closed.iter().max().copied().unwrap_or_default();
        let slowest_connect = of_kind.iter().map(|c| c.connect).max().unwrap_or_default();
        lines.push(format!(
            "{kind}: {}/{} closed, the last after {:.1}s (slowest connect {:.1}s)",
            closed.len(),
            of_kind.len(),
            slowest.as_secs_f64(),
            slowest_connect.as_secs_f64()
        ));
    }
    lines.join("; ")
}

/// Sends `count` unauthenticated requests, `parallel` at a time; returns
/// (answered, of which refused as unauthenticated or busy).
async fn burst(
    addr: std::net::SocketAddr,
    path: &str,
    count: usize,
    parallel: usize,
) -> (usize, usize) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let results: Vec<Option<u16>> = futures::stream::iter(0..count)
        .map(|i| {
            let http = http.clone();
            let url = format!("http://{addr}{path}");
            async move {
                http.post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-github-event", "ping")
                    .header("x-hub-signature-256", "sha256=00")
                    .body(format!("token=wrong-{i}&command=/testenv&text=list"))
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16())
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let answered = results.iter().filter(|r| r.is_some()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Some(401 | 403 | 429 | 503)))
        .count();
    (answered, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adapters_drop_slow_clients_and_answer_bursts() {
    let client = client().await;
    install_crds(&client).await;
    let dir = std::env::temp_dir().join(unique_name("hostile"));
    std::fs::create_dir_all(dir.join("chat")).unwrap();
    std::fs::create_dir_all(dir.join("github")).unwrap();
    let chat = start_chat(&client, &dir.join("chat")).await;
    let gh = start_github(&client, &dir.join("github")).await;

    let limits = ephemera::http_server::Limits::default();
    // Past the connection cap on purpose; every slow client must be let go:
    // those past the cap at once, the others after the header read timeout
    // (half heads, silent ones) or the request timeout (dribbled bodies).
    // The window is two request timeouts and a margin for a loaded machine.
    let slow = limits.max_connections + 88;
    let within = limits.request_timeout * 2 + Duration::from_secs(15);
    let started = Instant::now();
    let (chat_clients, gh_clients) = tokio::join!(
        slow_clients(chat.addr, slow, within),
        slow_clients(gh.addr, slow, within)
    );
    let dropped =
        |clients: &[SlowClient]| clients.iter().filter(|c| c.closed_after.is_some()).count();
    let (chat_dropped, gh_dropped) = (dropped(&chat_clients), dropped(&gh_clients));
    figure(format!(
        "FIGURES slow clients: chat {chat_dropped}/{slow} dropped, github {gh_dropped}/{slow} dropped ({:.0}s)",
        started.elapsed().as_secs_f64()
    ));
    println!("  chat: {}", slow_client_summary(&chat_clients));
    println!("  github: {}", slow_client_summary(&gh_clients));
    // Without read timeouts none would be let go; with the usual accept
    // queue of 128, silent clients whose handshake the kernel dropped were
    // never closed (see `http_server::listen`). Every one is the bar.
    for (adapter, dropped, clients) in [
        ("chat", chat_dropped, &chat_clients),
        ("github", gh_dropped, &gh_clients),
    ] {
        assert_eq!(
            dropped,
            slow,
            "the {adapter} adapter let go of only {dropped} of {slow} slow clients within {within:?}: {}",
            slow_client_summary(clients)
        );
    }

    for (name, addr, path) in [
        ("chat", chat.addr, "/mattermost/command"),
        ("github", gh.addr, "/github/webhook"),
    ] {
        let started = Instant::now();
        let (answered, refused) = burst(addr, path, 2000, 200).await;
        figure(format!(
            "FIGURES burst {name}: 2000 unauthenticated requests, {answered} answered, {refused} refused (401/403/429/503), {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        assert_eq!((answered, refused), (2000, 2000), "{name}");
        let health = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert!(
            health.status().is_success(),
            "{name} unhealthy after the burst"
        );
    }
    for running in [chat, gh] {
        running.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
