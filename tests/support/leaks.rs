//! The secrets scan: every generated credential of an installation, read
//! from its Secrets, looked for in text an adapter or the controller
//! produced (logs, Events, statuses, posts, comments, deployment statuses).

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{Api, Client, api::ListParams};

/// Every generated secret value of the installation whose namespace is
/// `namespace`: the `credentials` Secret's passwords and the generated
/// database and file store keys. Usernames are not secret and left out.
pub async fn generated_values(client: &Client, namespace: &str) -> Vec<String> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|err| panic!("listing the Secrets of {namespace}: {err}"));
    let mut values = Vec::new();
    for secret in secrets.items {
        let name = secret.metadata.name.clone().unwrap_or_default();
        if name != "credentials" && name != "ephemera-generated" {
            continue;
        }
        for (key, value) in secret.data.unwrap_or_default() {
            let lower = key.to_lowercase();
            let value = String::from_utf8_lossy(&value.0).into_owned();
            // Short values could match by chance; generated ones are long.
            let secret =
                lower.contains("password") || lower.contains("key") || lower.contains("secret");
            if secret && value.len() >= 8 {
                values.push(value);
            }
        }
    }
    values.sort();
    values.dedup();
    assert!(
        values.len() >= 2,
        "no generated credentials found in {namespace}"
    );
    values
}

/// Every Event in the cluster (both APIs' view is the same store), as
/// JSON text.
pub async fn events_text(client: &Client) -> String {
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("listing Events");
    serde_json::to_string(&events.items).expect("Events serialize")
}

/// `(where, value)` of every secret value found in one of `texts`
/// (`(where, text)`).
pub fn leaks<'a>(values: &[String], texts: &'a [(String, String)]) -> Vec<(&'a str, String)> {
    let mut found = Vec::new();
    for (place, text) in texts {
        for value in values {
            if text.contains(value.as_str()) {
                // Never print the value itself: only its length.
                found.push((place.as_str(), format!("a {}-byte secret", value.len())));
            }
        }
    }
    found
}

/// Captures every log line of this test binary from the first call on
/// (adapters and controller run in-process), for the scan. Returns the
/// text captured so far on each call.
pub fn captured_logs() -> String {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buffer = LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,hyper_util=info,h2=info,tower=info")
            .with_writer(move || Capture(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    });
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
