//! The process's allocator, and what it holds, for `/metrics`.
//!
//! With the `jemalloc` feature (the default) jemalloc is the global
//! allocator: with glibc's allocator about a quarter of the controller's CPU
//! time under load went to malloc and free; jemalloc took 23% less CPU time
//! in all at the same peak memory (mimalloc: 28% less, but 40% more memory).
//! Figures in docs/operations.md.
//!
//! The heap figures tell apart what the process keeps alive (`allocated`)
//! from what the allocator holds of the machine's memory for it
//! (`resident`): the difference is fragmentation and freed pages not yet
//! returned.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::gauge::ConstGauge,
    registry::{Registry, Unit},
};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the
/// environment still overrides them). With the defaults, after a burst of
/// watch events (deleting a thousand installations) jemalloc held a third
/// more memory than was live, in freed pages it returns only over 10 s and
/// spread over 8 arenas (4 per core). Two arenas, and freed pages returned
/// at once (decay 0; a background thread does the purging), keep it close to
/// the live heap: at N=1000 the peak resident memory went 69 -> 64 MiB with
/// no more CPU time than with a decay of one second.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,narenas:2,dirty_decay_ms:0,muzzy_decay_ms:0".as_ptr());

/// A C string jemalloc reads once, at its start.
#[cfg(feature = "jemalloc")]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a string literal, never written.
#[cfg(feature = "jemalloc")]
unsafe impl Sync for MallocConf {}

/// Bytes the allocator reports, at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heap {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes of physical memory the allocator holds (live allocations, its
    /// own metadata, and freed pages it has not yet returned).
    pub resident: u64,
}

/// The allocator's figures now; `None` when it keeps none (a build without
/// jemalloc).
pub fn heap() -> Option<Heap> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are cached until the epoch advances.
        epoch::advance().ok()?;
        Some(Heap {
            allocated: stats::allocated::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
        })
    }
    #[cfg(not(feature = "jemalloc"))]
    None
}

/// Registers `heap_allocated_bytes` and `heap_resident_bytes` under
/// `registry`, read from the allocator at each scrape.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(HeapCollector));
}

#[derive(Debug)]
struct HeapCollector;

impl Collector for HeapCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(heap) = heap() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "heap_allocated",
                "Bytes in live allocations (jemalloc stats.allocated)",
                heap.allocated,
            ),
            (
                "heap_resident",
                "Bytes of memory the allocator holds (jemalloc stats.resident)",
                heap.resident,
            ),
        ] {
            let gauge = ConstGauge::new(value as i64);
            let metric =
                encoder.encode_descriptor(name, help, Some(&Unit::Bytes), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use super::*;

    #[test]
    fn heap_figures_follow_a_live_allocation() {
        const BLOCK: u64 = 64 << 20;
        let block = std::hint::black_box(vec![1u8; BLOCK as usize]);
        let during = heap().expect("jemalloc keeps statistics");
        assert!(during.allocated >= BLOCK, "{during:?}");
        assert!(during.resident >= BLOCK, "{during:?}");
        drop(block);
        let after = heap().unwrap();
        assert!(after.allocated + BLOCK / 2 <= during.allocated, "{after:?}");
    }

    #[test]
    fn jemalloc_runs_with_the_compiled_in_options() {
        use tikv_jemalloc_ctl::opt;
        assert_eq!(opt::narenas::read().unwrap(), 2);
        assert!(opt::background_thread::read().unwrap());
        // SAFETY: `opt.dirty_decay_ms` is an ssize_t.
        let decay = unsafe { tikv_jemalloc_ctl::raw::read::<isize>(b"opt.dirty_decay_ms\0") };
        assert_eq!(decay.unwrap(), 0);
    }

    #[test]
    fn scrape_shows_the_heap_in_bytes() {
        let mut registry = Registry::default();
        register(registry.sub_registry_with_prefix("ephemera_controller"));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let allocated = text
            .lines()
            .find_map(|l| l.strip_prefix("ephemera_controller_heap_allocated_bytes "))
            .expect("the allocated gauge is exposed");
        assert!(allocated.trim().parse::<u64>().unwrap() > 0);
        assert!(text.contains("# UNIT ephemera_controller_heap_resident_bytes bytes"));
    }
}
