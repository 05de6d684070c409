//! `idle` mode: open N connections with at most [`IN_FLIGHT`] handshakes at a time, prove
//! each one with a single echo, report, then hold them all without traffic. The holder
//! is killed by the bench once it has read the proxy's memory, or leaves after `max`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::conn::{Target, Ws, payload, round_trip};

const IN_FLIGHT: usize = 100;
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How many distinct error messages the ready file keeps.
const KEEP_ERRORS: usize = 3;

pub async fn run(url: &str, n: usize, ready: &Path, max: Duration) -> Result<(), String> {
    let target = Target::parse(url).await?;
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (target, gate) = (target.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            timeout(OPEN_TIMEOUT, open_one(&target))
                .await
                .unwrap_or_else(|_| Err("open timed out".into()))
        });
    }
    let mut held: Vec<Ws> = Vec::with_capacity(n);
    let (mut failed, mut errors) = (0usize, Vec::<String>::new());
    while let Some(done) = tasks.join_next().await {
        match done.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(ws) => held.push(ws),
            Err(e) => {
                failed += 1;
                if errors.len() < KEEP_ERRORS && !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
    }
    let report = json!({ "opened": held.len(), "failed": failed, "errors": errors });
    tokio::fs::write(ready, format!("{report}\n"))
        .await
        .map_err(|e| format!("{}: {e}", ready.display()))?;
    tokio::time::sleep(max).await;
    drop(held);
    Ok(())
}

async fn open_one(target: &Target) -> Result<Ws, String> {
    let mut ws = target.connect().await?;
    round_trip(&mut ws, &payload()).await?;
    Ok(ws)
}
