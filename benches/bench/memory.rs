//! The controller's memory through a run, sampled every second: resident
//! memory from /proc, and from its /metrics the heap jemalloc reports (live
//! allocations, and what the allocator holds). The peak of each, by phase,
//! shows when the memory is taken and whether it is live data or the
//! allocator's.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;

/// Peaks in MiB over one phase of the run.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Peaks {
    pub rss_mib: f64,
    pub heap_allocated_mib: f64,
    pub heap_resident_mib: f64,
}

impl Peaks {
    fn raise(&mut self, sample: Peaks) {
        self.rss_mib = self.rss_mib.max(sample.rss_mib);
        self.heap_allocated_mib = self.heap_allocated_mib.max(sample.heap_allocated_mib);
        self.heap_resident_mib = self.heap_resident_mib.max(sample.heap_resident_mib);
    }
}

#[derive(Default)]
struct State {
    phase: &'static str,
    peaks: BTreeMap<&'static str, Peaks>,
}

/// Samples until dropped.
pub struct MemoryWatch {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl MemoryWatch {
    pub fn start(pid: u32, metrics_port: u16, phase: &'static str) -> Self {
        let state = Arc::new(Mutex::new(State {
            phase,
            ..Default::default()
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let sample = Peaks {
                    rss_mib: rss_mib(pid),
                    ..heap_mib(metrics_port).await.unwrap_or_default()
                };
                {
                    let mut state = shared.lock().unwrap();
                    let phase = state.phase;
                    state.peaks.entry(phase).or_default().raise(sample);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Self { state, task }
    }

    /// Samples from now on count towards `phase`.
    pub fn phase(&self, phase: &'static str) {
        self.state.lock().unwrap().phase = phase;
    }

    /// The peaks so far, by phase.
    pub fn peaks(&self) -> BTreeMap<String, Peaks> {
        self.state
            .lock()
            .unwrap()
            .peaks
            .iter()
            .map(|(phase, peaks)| (phase.to_string(), *peaks))
            .collect()
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}

/// A memory field (`VmRSS`, `VmHWM`) of /proc/<pid>/status, in MiB; 0 when
/// the process is gone.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

async fn heap_mib(port: u16) -> Option<Peaks> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|bytes| bytes / (1024.0 * 1024.0))
    };
    Some(Peaks {
        rss_mib: 0.0,
        heap_allocated_mib: value("ephemera_controller_heap_allocated_bytes")?,
        heap_resident_mib: value("ephemera_controller_heap_resident_bytes")?,
    })
}
