//! Property test of the per-run lock protocol on the real SQLite store: events arrive at
//! random moments and their orchestrator invocations interleave step by step in random
//! order; no event may go unprocessed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use sluice_contract::dispatch::DispatchPayload;
use sluice_contract::{ExecutionTarget, RunId};
use sluice_engine::local::{DirStore, FileKeyStore, SecretsFile, SqliteStore};
use sluice_engine::orchestrator::lock::{self, LockAttempt, Release};
use sluice_engine::ports::DispatchError;
use sluice_engine::{
    Clock, Dispatcher, Engine, EngineConfig, Ports, SystemClock, WatchdogInput, WatchdogStarter,
};

#[derive(Debug)]
struct Unused;

#[async_trait]
impl Dispatcher for Unused {
    async fn start(
        &self,
        _: ExecutionTarget,
        _: Duration,
        _: &DispatchPayload,
    ) -> Result<(), DispatchError> {
        unreachable!("the lock test dispatches nothing")
    }
}

#[async_trait]
impl WatchdogStarter for Unused {
    async fn start(&self, _: &WatchdogInput) -> Result<(), DispatchError> {
        unreachable!("the lock test watches nothing")
    }
}

fn engine(dir: &std::path::Path) -> Engine {
    let ports = Ports {
        internal: Arc::new(DirStore::open(&dir.join("i"), "i").unwrap()),
        done: Arc::new(DirStore::open(&dir.join("d"), "d").unwrap()),
        orders: Arc::new(
            SqliteStore::open(
                &dir.join("db"),
                Duration::from_secs(60),
                Duration::from_secs(60),
            )
            .unwrap(),
        ),
        dispatcher: Arc::new(Unused),
        watchdog: Arc::new(Unused),
        keys: Arc::new(FileKeyStore::open(&dir.join("k")).unwrap()),
        secrets: Arc::new(SecretsFile::none()),
        archives: None,
        vcs: None,
        clock: Arc::new(SystemClock),
    };
    Engine::new(ports, EngineConfig::default())
}

/// Where one orchestrator invocation is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Acquire,
    /// A looping step renews its lease and takes the count the renewal answers as seen.
    Renew,
    Read,
    Release,
    Exited,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Invariants: at most one invocation holds the lock at a time, and when every
    /// invocation has exited, the last read of the run saw every event that arrived (no lost
    /// wake-up), whatever the interleaving — a looping holder releasing against the count
    /// its renewal answered, as the orchestrator does.
    #[test]
    fn no_event_is_lost_whatever_the_interleaving(schedule in proptest::collection::vec(0usize..100, 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let engine = engine(dir.path());
            let run = RunId::generate();
            let mut arrived = 0usize;
            let mut seen = 0usize;
            let mut invocations: Vec<(String, Step, u64)> = Vec::new();
            let mut choices = schedule.into_iter();
            loop {
                let live: Vec<usize> = (0..invocations.len()).filter(|&i| invocations[i].1 != Step::Exited).collect();
                let choice = choices.next();
                // Either an event arrives (a new invocation), or a live invocation takes a step.
                let index = match choice {
                    Some(c) if c % 4 == 0 || live.is_empty() => {
                        arrived += 1;
                        invocations.push((format!("owner-{arrived}"), Step::Acquire, 0));
                        continue;
                    }
                    Some(c) => live[c % live.len()],
                    None if live.is_empty() => break,
                    None => live[0],
                };
                let (owner, step, marks) = invocations[index].clone();
                let (next, marks) = match step {
                    Step::Acquire => match lock::acquire(&engine, &run, &owner).await.unwrap() {
                        LockAttempt::Acquired { marks, .. } => (Step::Read, marks),
                        LockAttempt::Deferred => (Step::Exited, marks),
                        LockAttempt::Completed => unreachable!("never completed here"),
                    },
                    Step::Renew => {
                        let lease_until = SystemClock.now_ms() + 60_000;
                        let now = engine.ports.orders.renew_lock(&run, &owner, lease_until).await.unwrap();
                        (Step::Read, marks.max(now))
                    }
                    Step::Read => {
                        seen = arrived;
                        (Step::Release, marks)
                    }
                    Step::Release => match lock::release(&engine, &run, &owner, marks).await.unwrap() {
                        Release::Released => (Step::Exited, marks),
                        Release::Dirty { marks } => (Step::Renew, marks),
                        Release::Lost => panic!("{owner} lost a lock it held"),
                    },
                    Step::Exited => unreachable!(),
                };
                invocations[index].1 = next;
                invocations[index].2 = marks;
                let holders = invocations.iter().filter(|(_, s, _)| matches!(s, Step::Renew | Step::Read | Step::Release)).count();
                prop_assert!(holders <= 1, "{holders} invocations hold the lock");
            }
            prop_assert_eq!(seen, arrived, "an event arrived after the last read and nobody read again");
            Ok(())
        })?;
    }
}
