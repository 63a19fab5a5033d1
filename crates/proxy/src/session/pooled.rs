//! Transaction mode (`pool_mode = "transaction"`): giving backends back to
//! their pools between transactions, lifting pins, and what a leaving
//! client's backends become.
//!
//! Hazard: a backend goes back only when nothing of this client is on it:
//! no unit in flight or open, no byte unread or unsent, no transaction
//! open on it, and no session state the proxy cannot replay elsewhere (a
//! pin). Everything else the next client needs (settings, prepared
//! statements) is replayed by `replay` from what the backend carries.

use super::state::{Backend, Role};
use super::Session;

impl Session {
    /// Whether statements are classified: on the `primary` listener of a
    /// session-mode client they all go to the one backend it keeps, so
    /// nothing needs to follow it; everywhere else the session state must.
    pub(super) fn analyses(&self) -> bool {
        self.kind != crate::shared::ListenerKind::Primary || self.pooled
    }

    /// Called once per loop turn in transaction mode.
    pub(super) fn release_idle_backends(&mut self) {
        for role in [Role::Primary, Role::Standby] {
            if !self.at_rest(role) {
                continue;
            }
            if role == Role::Primary && self.state.pinned.is_some() {
                self.check_pin();
                continue;
            }
            if let Some(b) = self.take_backend(role) {
                give_back(b);
            }
        }
    }

    /// The backend for `role` exists, is pooled, and nothing of the session
    /// is on it but (maybe) a pin.
    fn at_rest(&self, role: Role) -> bool {
        let Some(b) = &self.backends[role as usize] else {
            return false;
        };
        let holds_tx =
            self.tx_status != b'I' && self.deferred_begin.is_none() && self.active == Some(role);
        b.slot.is_some()
            && !b.busy()
            && self.open != Some(role)
            && !holds_tx
            && b.conn.wbuf.is_empty()
            && b.conn.rbuf.is_empty()
    }

    /// A pinned session whose transaction ended on the primary: ask the
    /// backend whether the state behind the pin is still there (once per
    /// transaction; the answer arrives as an injected unit's success).
    fn check_pin(&mut self) {
        if !self.pin_check_due || self.state.pinned_for_good.is_some() {
            return;
        }
        self.pin_check_due = false;
        if self.backends[Role::Standby as usize]
            .as_ref()
            .is_some_and(Backend::busy)
        {
            return;
        }
        let mut frame = bytes::BytesMut::new();
        crate::codec::FrontendMessage::Query {
            sql: bytes::Bytes::from_static(crate::pool::PIN_CHECK_SQL),
        }
        .encode(&mut frame);
        self.inject(Role::Primary, &frame.freeze());
        if let Some(u) = self.backends[Role::Primary as usize]
            .as_mut()
            .and_then(|b| b.units.back_mut())
        {
            u.quiet = true;
            u.pin_check = true;
        }
        self.active = Some(Role::Primary);
    }

    /// Removes the backend for `role` from the session (and from its
    /// cancel targets), keeping the connection open.
    pub(super) fn take_backend(&mut self, role: Role) -> Option<Backend> {
        let b = self.backends[role as usize].take()?;
        let mut c = self.cancel.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|(n, pid, _)| !(n == &b.conn.node && *pid == b.conn.pid));
        drop(c);
        if self.active == Some(role) {
            self.active = None;
        }
        Some(b)
    }

    /// The client is gone: its pooled backends go back, clean ones as they
    /// are, the others after a ROLLBACK and DISCARD ALL; a backend with
    /// work in flight is closed.
    pub(super) fn return_backends_at_exit(&mut self) {
        for role in [Role::Primary, Role::Standby] {
            let clean =
                self.at_rest(role) && (role == Role::Standby || self.state.pinned.is_none());
            let quiet = self.backends[role as usize]
                .as_ref()
                .is_some_and(|b| !b.busy() && self.open != Some(role) && b.conn.wbuf.is_empty());
            let Some(mut b) = self.take_backend(role) else {
                continue;
            };
            if clean {
                give_back(b);
            } else if let (true, Some(slot)) = (quiet, b.slot.take()) {
                if tokio::runtime::Handle::try_current().is_ok() {
                    self.shared.pools.reset_and_return(
                        b.conn,
                        slot,
                        self.shared.settings.connect_timeout,
                    );
                }
            }
        }
    }
}

/// Puts a pooled backend back into its pool.
fn give_back(mut b: Backend) {
    if let Some(slot) = b.slot.take() {
        let pool = slot.pool().clone();
        pool.put(b.conn, b.prepared, b.settings, slot);
    }
}
