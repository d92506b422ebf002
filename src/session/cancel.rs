//! Where a CancelRequest of this client goes (`server::cancel` reads it): the server processes
//! running its statement — one, or one per shard of a statement on several — or none.

use parking_lot::Mutex;
use std::sync::Arc;

use crate::net::ClientStream;

use super::Session;
use crate::backend::CancelTarget;

/// Where a session publishes the backends running its query, for CancelRequests.
pub type CancelSlot = Arc<Mutex<Vec<CancelTarget>>>;

impl<S: ClientStream> Session<S> {
    pub(super) fn publish_cancel(&self, target: Option<CancelTarget>) {
        self.publish_cancels(target);
    }

    pub(super) fn publish_cancels(&self, targets: impl IntoIterator<Item = CancelTarget>) {
        let mut slot = self.info.cancel.lock();
        slot.clear();
        slot.extend(targets);
    }
}
