//! The figures of one benchmark run, as JSON and as a markdown table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::apiserver::Requests;

#[derive(Serialize)]
pub struct Figures {
    pub installations: usize,
    pub concurrency: usize,
    pub build: String,
    pub machine: Machine,
    /// ephemera's time to all Ready ÷ the direct floor's; the median over
    /// the rounds.
    pub ratio: f64,
    /// Both times of every round.
    pub rounds: Vec<Round>,
    pub ephemera: Run,
    pub direct: Run,
}

/// One round: the time to all Ready both ways, in the order measured.
#[derive(Serialize)]
pub struct Round {
    pub ephemera_all_ready_s: f64,
    pub direct_all_ready_s: f64,
    pub direct_first: bool,
    pub ratio: f64,
}

impl Round {
    pub fn new(ephemera: &Run, direct: &Run, direct_first: bool) -> Self {
        Self {
            ephemera_all_ready_s: ephemera.all_ready_s,
            direct_all_ready_s: direct.all_ready_s,
            direct_first,
            ratio: ephemera.all_ready_s / direct.all_ready_s,
        }
    }
}

/// The median of the rounds' ratios (the mean of the middle two for an
/// even count).
pub fn median_ratio(rounds: &[Round]) -> f64 {
    let mut ratios: Vec<f64> = rounds.iter().map(|r| r.ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    if ratios.len().is_multiple_of(2) {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    } else {
        ratios[mid]
    }
}

#[derive(Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    /// `/proc/loadavg`'s 1-minute load when the run started and when it
    /// ended: other work on the machine shares the cores.
    pub load_average: [f64; 2],
}

/// The 1-minute load average now.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

impl Machine {
    /// This machine; `load_at_start` is `load_average()` when the run
    /// started.
    pub fn this(load_at_start: f64) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            memory_gib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0),
            load_average: [load_at_start, load_average()],
        }
    }
}

#[derive(Serialize, Default)]
pub struct Run {
    /// Seconds from the first create (or apply) until every installation
    /// is Ready.
    pub all_ready_s: f64,
    /// Per installation, seconds from the start until it was Ready.
    pub p50_s: f64,
    pub p95_s: f64,
    pub p99_s: f64,
    /// API requests served until all were Ready (all clients, the
    /// cluster's own components included; watches left out), per
    /// installation, by verb.
    pub requests_per_installation: BTreeMap<String, f64>,
    pub requests_per_installation_total: f64,
    pub not_found_gets_per_installation: f64,
    /// The same requests, "VERB resource code" → count per installation:
    /// which resource the reads and writes went to.
    pub requests_per_installation_detail: BTreeMap<String, f64>,
    pub delete_all_s: f64,
    /// Only for ephemera.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerFigures>,
}

#[derive(Serialize)]
pub struct ControllerFigures {
    pub passes_per_installation_to_ready: f64,
    /// Of those, the passes that sent children to the API server (the rest
    /// looked, and recorded the status when it changed).
    pub applying_passes_per_installation_to_ready: f64,
    /// Status refreshes (what the workloads show, recorded without a pass)
    /// per installation until all were Ready.
    pub refreshes_per_installation_to_ready: f64,
    /// Mean time of a pass until all were Ready.
    pub mean_pass_s: f64,
    /// Mean time an applying pass waited for the watches to bring its own
    /// writes into the stores (part of `mean_pass_s`).
    pub mean_store_wait_s: f64,
    pub peak_rss_mib: f64,
    /// Peaks of resident memory and of jemalloc's heap (live and held),
    /// sampled every second, by phase of the run (creating until all were
    /// Ready, idle, deleting).
    pub memory_by_phase: BTreeMap<String, super::memory::Peaks>,
    pub cpu_seconds: f64,
    /// Over the idle window after all were Ready: write requests and all
    /// requests other than the cluster's own housekeeping (pods, nodes,
    /// leases), and the controller's reconcile passes.
    pub idle_writes: f64,
    pub idle_requests: f64,
    pub idle_reconciles: f64,
    pub idle_refreshes: f64,
    /// The idle requests, "VERB resource code" → count.
    pub idle_requests_detail: BTreeMap<String, f64>,
    /// Events written in the idle window, "reporting component: reason" →
    /// count: who wrote the idle writes.
    pub idle_events_by_reporter: BTreeMap<String, f64>,
    pub delete_passes_per_installation: f64,
    /// Observations in the controller's time-to-ready histogram: one per
    /// installation.
    pub time_to_ready_observations: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Run {
    pub fn new(mut ready: Vec<f64>, all_ready_s: f64, requests: &Requests, n: usize) -> Self {
        ready.sort_by(f64::total_cmp);
        let n = n as f64;
        Self {
            all_ready_s,
            p50_s: percentile(&ready, 50.0),
            p95_s: percentile(&ready, 95.0),
            p99_s: percentile(&ready, 99.0),
            requests_per_installation: requests
                .by_verb()
                .into_iter()
                .map(|(verb, count)| (verb, count / n))
                .collect(),
            requests_per_installation_total: requests.total() / n,
            not_found_gets_per_installation: requests.not_found_gets() / n,
            requests_per_installation_detail: requests
                .detailed()
                .into_iter()
                .map(|(what, count)| (what, count / n))
                .collect(),
            ..Default::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn with_controller(
        mut self,
        passes_per_installation_to_ready: f64,
        peak_rss_mib: f64,
        cpu_seconds: f64,
        idle_writes: f64,
        idle_reconciles: f64,
        idle: &Requests,
        delete_passes_per_installation: f64,
        time_to_ready_observations: f64,
    ) -> Self {
        self.controller = Some(ControllerFigures {
            passes_per_installation_to_ready,
            applying_passes_per_installation_to_ready: 0.0,
            refreshes_per_installation_to_ready: 0.0,
            mean_pass_s: 0.0,
            mean_store_wait_s: 0.0,
            peak_rss_mib,
            memory_by_phase: BTreeMap::new(),
            cpu_seconds,
            idle_writes,
            idle_requests: idle.total(),
            idle_reconciles,
            idle_refreshes: 0.0,
            idle_requests_detail: idle.detailed(),
            idle_events_by_reporter: BTreeMap::new(),
            delete_passes_per_installation,
            time_to_ready_observations,
        });
        self
    }

    pub fn with_idle_events(mut self, by_reporter: BTreeMap<String, f64>) -> Self {
        if let Some(controller) = &mut self.controller {
            controller.idle_events_by_reporter = by_reporter;
        }
        self
    }

    pub fn with_memory(mut self, by_phase: BTreeMap<String, super::memory::Peaks>) -> Self {
        if let Some(controller) = &mut self.controller {
            controller.memory_by_phase = by_phase;
        }
        self
    }

    pub fn with_applying_passes(mut self, per_installation: f64) -> Self {
        if let Some(controller) = &mut self.controller {
            controller.applying_passes_per_installation_to_ready = per_installation;
        }
        self
    }

    /// Status refreshes per installation to Ready, and in the idle window.
    pub fn with_refreshes(mut self, per_installation_to_ready: f64, idle: f64) -> Self {
        if let Some(controller) = &mut self.controller {
            controller.refreshes_per_installation_to_ready = per_installation_to_ready;
            controller.idle_refreshes = idle;
        }
        self
    }

    pub fn with_pass_seconds(mut self, mean_pass_s: f64, mean_store_wait_s: f64) -> Self {
        if let Some(controller) = &mut self.controller {
            controller.mean_pass_s = mean_pass_s;
            controller.mean_store_wait_s = mean_store_wait_s;
        }
        self
    }

    pub fn with_delete(mut self, seconds: f64) -> Self {
        self.delete_all_s = seconds;
        self
    }
}

fn verbs(run: &Run) -> String {
    run.requests_per_installation
        .iter()
        .map(|(verb, n)| format!("{verb} {n:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Figures {
    pub fn markdown(&self) -> String {
        let e = &self.ephemera;
        let d = &self.direct;
        let c = e
            .controller
            .as_ref()
            .expect("the ephemera run has controller figures");
        let m = &self.machine;
        let mut out = format!(
            "{} installations, concurrency {}, {} build; {} CPUs ({}), {} GiB; load average {:.1} at the start, {:.1} at the end\n\n",
            self.installations,
            self.concurrency,
            self.build,
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.load_average[0],
            m.load_average[1]
        );
        out.push_str("| figure | ephemera | direct |\n|---|---|---|\n");
        let mut row = |name: &str, a: String, b: String| {
            out.push_str(&format!("| {name} | {a} | {b} |\n"));
        };
        if self.rounds.len() > 1 {
            let each: Vec<String> = self
                .rounds
                .iter()
                .map(|r| {
                    format!(
                        "{:.1} / {:.1} s = {:.2}{}",
                        r.ephemera_all_ready_s,
                        r.direct_all_ready_s,
                        r.ratio,
                        if r.direct_first {
                            " (direct first)"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            row(
                "all Ready by round, ephemera / direct",
                format!("{}; median ratio {:.2}", each.join("; "), self.ratio),
                String::from("–"),
            );
            row(
                "all Ready (first round; the figures below are of it too)",
                format!("{:.1} s", e.all_ready_s),
                format!("{:.1} s", d.all_ready_s),
            );
        } else {
            row(
                "all Ready",
                format!("{:.1} s (ratio {:.2})", e.all_ready_s, self.ratio),
                format!("{:.1} s", d.all_ready_s),
            );
        }
        row(
            "per installation p50 / p95 / p99",
            format!("{:.1} / {:.1} / {:.1} s", e.p50_s, e.p95_s, e.p99_s),
            format!("{:.1} / {:.1} / {:.1} s", d.p50_s, d.p95_s, d.p99_s),
        );
        row(
            "API requests per installation (all clients)",
            format!("{:.1}: {}", e.requests_per_installation_total, verbs(e)),
            format!("{:.1}: {}", d.requests_per_installation_total, verbs(d)),
        );
        row(
            "GETs answered 404 per installation",
            format!("{:.1}", e.not_found_gets_per_installation),
            format!("{:.1}", d.not_found_gets_per_installation),
        );
        row(
            "reconcile passes per installation to Ready",
            format!(
                "{:.2} ({:.2} applied children, the rest recorded the status)",
                c.passes_per_installation_to_ready, c.applying_passes_per_installation_to_ready
            ),
            "–".into(),
        );
        row(
            "status refreshes per installation to Ready (what the workloads show, recorded without a pass)",
            format!("{:.2}", c.refreshes_per_installation_to_ready),
            "–".into(),
        );
        row(
            "mean pass / of it, an applying pass waiting for its writes to reach the stores",
            format!(
                "{:.0} ms / {:.0} ms",
                c.mean_pass_s * 1000.0,
                c.mean_store_wait_s * 1000.0
            ),
            "–".into(),
        );
        row(
            "time-to-ready histogram observations",
            format!("{:.0}", c.time_to_ready_observations),
            "–".into(),
        );
        row(
            "controller peak RSS / CPU time",
            format!("{:.0} MiB / {:.1} s", c.peak_rss_mib, c.cpu_seconds),
            "–".into(),
        );
        row(
            "controller memory peaks by phase: RSS / live heap / heap held by the allocator",
            ["creating", "idle", "deleting"]
                .iter()
                .filter_map(|phase| {
                    let p = c.memory_by_phase.get(*phase)?;
                    Some(format!(
                        "{phase} {:.0} / {:.0} / {:.0} MiB",
                        p.rss_mib, p.heap_allocated_mib, p.heap_resident_mib
                    ))
                })
                .collect::<Vec<_>>()
                .join("; "),
            "–".into(),
        );
        row(
            "idle after Ready: writes / requests / reconciles / status refreshes",
            format!(
                "{:.0} / {:.0} / {:.0} / {:.0}",
                c.idle_writes, c.idle_requests, c.idle_reconciles, c.idle_refreshes
            ),
            "–".into(),
        );
        row(
            "idle Events by who wrote them",
            if c.idle_events_by_reporter.is_empty() {
                "none".into()
            } else {
                c.idle_events_by_reporter
                    .iter()
                    .map(|(who, n)| format!("{who} {n:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            "–".into(),
        );
        row(
            "delete all (namespaces gone)",
            format!(
                "{:.1} s, {:.1} passes per installation",
                e.delete_all_s, c.delete_passes_per_installation
            ),
            format!("{:.1} s", d.delete_all_s),
        );
        out
    }
}
