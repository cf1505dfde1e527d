//! The current list of backends, shared by the proxy, the health checker and the admin API.
//!
//! Requests vastly outnumber changes, so readers take a cheap snapshot (an `Arc` of the list)
//! and never hold a lock while proxying; the admin API replaces the whole list on each change.
//! A request that already holds a removed backend finishes on it normally.

use std::sync::{Arc, RwLock};

use crate::backend::{Backend, BackendAddress};
use crate::metrics::Metrics;

pub type Snapshot = Arc<[Arc<Backend>]>;

pub struct BackendSet {
    list: RwLock<Snapshot>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("backend {0} already exists")]
    Exists(String),
    #[error("no backend {0}")]
    NotFound(String),
}

impl BackendSet {
    pub fn new(metrics: Arc<Metrics>) -> BackendSet {
        BackendSet {
            list: RwLock::new(Arc::from(Vec::new())),
            metrics,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Arc::clone(&self.list.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn find(&self, id: &str) -> Option<Arc<Backend>> {
        self.snapshot().iter().find(|b| b.id() == id).cloned()
    }

    /// Adds a backend (up, not draining) and returns it so its health checks can start.
    pub fn add(&self, address: BackendAddress) -> Result<Arc<Backend>, ChangeError> {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        if list.iter().any(|b| b.address() == &address) {
            return Err(ChangeError::Exists(address.to_string()));
        }
        let backend = Arc::new(Backend::new(address, &self.metrics));
        let mut next: Vec<_> = list.iter().cloned().collect();
        next.push(Arc::clone(&backend));
        *list = Arc::from(next);
        Ok(backend)
    }

    /// Removes a backend: no new requests; in-flight ones finish; its health checks stop.
    pub fn remove(&self, id: &str) -> Result<Arc<Backend>, ChangeError> {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let removed = list
            .iter()
            .find(|b| b.id() == id)
            .cloned()
            .ok_or_else(|| ChangeError::NotFound(id.to_string()))?;
        let next: Vec<_> = list.iter().filter(|b| b.id() != id).cloned().collect();
        *list = Arc::from(next);
        self.metrics.forget_backend(id);
        Ok(removed)
    }
}
