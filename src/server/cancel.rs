//! CancelRequests: shardgate hands each client its own BackendKeyData and forwards a cancel to
//! whichever backends are running that client's query at the moment (each shard's, for a
//! statement on several) — or drops it when none is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use subtle::ConstantTimeEq;

use crate::protocol::backend::BackendKeyData;
use crate::session::CancelSlot;

#[derive(Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, (i32, CancelSlot)>>,
    next_pid: AtomicI32,
}

/// Removes the client's key when its connection ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pid: i32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (i32, CancelSlot)>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh key for a client: a unique "pid" and a random secret.
    pub fn register(self: &Arc<Self>, slot: CancelSlot) -> (BackendKeyData, Registration) {
        let pid = self
            .next_pid
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            & i32::MAX;
        let secret: i32 = rand::random();
        self.lock().insert(pid, (secret, slot));
        (
            BackendKeyData { pid, secret },
            Registration {
                registry: self.clone(),
                pid,
            },
        )
    }

    /// Forwards a cancel if the key is right and the client has a query running somewhere.
    pub async fn cancel(&self, key: BackendKeyData) {
        let targets = {
            let slots = self.lock();
            let Some((secret, slot)) = slots.get(&key.pid) else {
                return;
            };
            if !bool::from(secret.to_be_bytes().ct_eq(&key.secret.to_be_bytes())) {
                tracing::warn!(pid = key.pid, "cancel request with a wrong secret ignored");
                return;
            }
            let targets = slot.lock().clone();
            targets
        };
        if targets.is_empty() {
            tracing::debug!(pid = key.pid, "cancel request for an idle client ignored");
        }
        for result in join_all(targets.into_iter().map(|t| t.send())).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot forward a cancel request to the backend");
            }
        }
    }
}
