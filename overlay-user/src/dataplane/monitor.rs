//! The monitor's fan-out: a dataplane produces [`MonitorEvent`]s into one
//! broadcast channel; each client [`Monitor::subscribe`]s. The dataplane
//! emits a kind of event only while someone subscribes to it (through its
//! [`MonitorSwitch`]), so nobody watching costs nothing.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::model::observe::{MonitorEvent, MonitorFilter};

/// Events buffered per subscriber before a slow one loses the oldest.
pub const CHANNEL_EVENTS: usize = 16 * 1024;

/// How a dataplane switches its event sources and reports what they lost.
/// Errors are the dataplane's, as text (this module sits below the
/// dataplane's error type, which names it).
pub trait MonitorSwitch: Send + Sync {
    /// Emit drops and/or sampled trace events (one in `sample_every`); both
    /// false: emit nothing.
    fn set(&self, drops: bool, trace: bool, sample_every: u32) -> Result<(), String>;
    /// Events the dataplane did not emit since it started: (over the rate
    /// limit, ring buffer full), summed over CPUs.
    fn loss(&self) -> Result<(u64, u64), String>;
}

#[derive(Default)]
struct Subscribers {
    drops: usize,
    trace: usize,
    /// The sampling of the latest trace subscriber.
    sample_every: u32,
}

struct Inner {
    tx: broadcast::Sender<MonitorEvent>,
    switch: Box<dyn MonitorSwitch>,
    subs: Mutex<Subscribers>,
}

/// The event stream of a dataplane. Cloning it clones the handle.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl Monitor {
    /// A monitor whose events are switched by `switch`.
    pub fn new(switch: Box<dyn MonitorSwitch>) -> Monitor {
        let (tx, _) = broadcast::channel(CHANNEL_EVENTS);
        Monitor {
            inner: Arc::new(Inner {
                tx,
                switch,
                subs: Mutex::new(Subscribers::default()),
            }),
        }
    }

    /// Where the dataplane sends its events.
    pub fn sender(&self) -> broadcast::Sender<MonitorEvent> {
        self.inner.tx.clone()
    }

    /// Whether anyone listens (the producer skips decoding otherwise).
    pub fn watched(&self) -> bool {
        self.inner.tx.receiver_count() > 0
    }

    /// Receive the events `filter` asks for (by kind; the rest of the filter
    /// is the subscriber's to apply) until the subscription is dropped.
    pub fn subscribe(
        &self,
        filter: &MonitorFilter,
        sample_every: u32,
    ) -> Result<Subscription, String> {
        let events = self.inner.tx.subscribe();
        let mut subs = self.inner.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.drops += usize::from(filter.drops);
        subs.trace += usize::from(filter.trace);
        if filter.trace {
            subs.sample_every = sample_every;
        }
        let sub = Subscription {
            events,
            monitor: self.clone(),
            drops: filter.drops,
            trace: filter.trace,
        };
        self.inner
            .switch
            .set(subs.drops > 0, subs.trace > 0, subs.sample_every)?;
        Ok(sub)
    }

    /// Events the dataplane did not emit since it started: (rate limit, ring full).
    pub fn loss(&self) -> Result<(u64, u64), String> {
        self.inner.switch.loss()
    }
}

/// One client's events; switches the dataplane's events off when the last
/// subscriber of a kind goes.
pub struct Subscription {
    /// The events of every subscriber's kinds.
    pub events: broadcast::Receiver<MonitorEvent>,
    monitor: Monitor,
    drops: bool,
    trace: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let inner = &self.monitor.inner;
        let mut subs = inner.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.drops -= usize::from(self.drops);
        subs.trace -= usize::from(self.trace);
        if let Err(e) = inner
            .switch
            .set(subs.drops > 0, subs.trace > 0, subs.sample_every)
        {
            log::warn!("monitor: switching events off: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Arc<Mutex<Vec<(bool, bool, u32)>>>);

    impl MonitorSwitch for Recorder {
        fn set(&self, drops: bool, trace: bool, every: u32) -> Result<(), String> {
            self.0.lock().unwrap().push((drops, trace, every));
            Ok(())
        }
        fn loss(&self) -> Result<(u64, u64), String> {
            Ok((0, 0))
        }
    }

    #[test]
    fn events_are_on_exactly_while_subscribed() {
        let rec = Recorder::default();
        let log = rec.0.clone();
        let m = Monitor::new(Box::new(rec));
        let drops = MonitorFilter {
            drops: true,
            ..Default::default()
        };
        let trace = MonitorFilter {
            trace: true,
            ..Default::default()
        };
        let a = m.subscribe(&drops, 1).unwrap();
        let b = m.subscribe(&trace, 10).unwrap();
        assert!(m.watched());
        drop(a);
        drop(b);
        assert!(!m.watched());
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                (true, false, 0),
                (true, true, 10),
                (false, true, 10),
                (false, false, 10)
            ]
        );
    }
}
