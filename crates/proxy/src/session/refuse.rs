//! Units the proxy refuses itself instead of running them: a statement
//! inside a READ ONLY transaction on a standby that needs the primary
//! (`routing::Route::Refuse`), and every unit of a transaction whose backend
//! was lost (until the client ends it).

use super::Session;
use crate::classify::TxEffect;
use crate::codec::{BackendMessage, ErrorInfo, FrontendMessage};
use crate::routing::Refusal;

impl Session {
    /// A statement inside a READ ONLY transaction that runs on a standby
    /// needs the primary: nothing of it runs; the client gets an error that
    /// names the cause, and the transaction is aborted on the standby too
    /// (an injected failing statement), so that what follows behaves as
    /// after any error in a PostgreSQL transaction.
    pub(super) fn refuse_in_standby_tx(&mut self, tag: u8, refusal: &Refusal) {
        let (code, message) = refusal.error();
        tracing::debug!(client = %self.peer, reason = refusal.reason, "refused a statement in a standby transaction");
        if let Some(role) = self.active {
            self.inject_query(
                role,
                b"DO $pgha$BEGIN RAISE EXCEPTION 'pgha: statement refused in a standby transaction'; END$pgha$",
            );
            if let Some(u) = self.backends[role as usize]
                .as_mut()
                .and_then(|b| b.units.back_mut())
            {
                u.quiet = true;
            }
        }
        self.tx_status = b'E';
        self.io
            .queue(&BackendMessage::ErrorResponse(super::route::error_body(
                &ErrorInfo::error(code, message),
            )));
        match tag {
            b'Q' | b'F' => self
                .io
                .queue(&BackendMessage::ReadyForQuery { status: b'E' }),
            _ => self.discard_until_sync = true,
        }
    }

    /// The backend that held the session's transaction was lost (see
    /// `backend_lost`). As in an aborted transaction in PostgreSQL, every
    /// unit fails until the client ends the transaction: a plain ROLLBACK
    /// ends it and is routed as usual (outside a transaction it only warns);
    /// a COMMIT fails, since nothing committed, and ends it; anything else
    /// fails with 08006. Returns false when the unit is to be routed.
    ///
    /// Hazard: failing only the next unit is not enough. Drivers send
    /// messages whose answers they ignore (tokio-postgres closes a dropped
    /// statement with Close + Sync); if that one took the error, the next
    /// statements and the COMMIT would run outside any transaction on a new
    /// backend, and the COMMIT would acknowledge writes that were lost.
    pub(super) fn refuse_in_lost_tx(&mut self, tag: u8, msg: &FrontendMessage) -> bool {
        let Some(node) = self.tx_lost.clone() else {
            return false;
        };
        match tag {
            // A lone Sync or Flush: nothing to refuse.
            b'S' => {
                self.io.queue(&BackendMessage::ReadyForQuery {
                    status: self.tx_status,
                });
                return true;
            }
            b'H' => return true,
            _ => {}
        }
        let message = match self.tx_effect_of(msg) {
            Some((TxEffect::Rollback, false)) => {
                self.end_lost_tx();
                return false;
            }
            Some((TxEffect::Commit, _)) => {
                self.end_lost_tx();
                format!(
                    "the connection to {node} that held this transaction was lost: \
                     the transaction did not commit"
                )
            }
            _ => format!(
                "the connection to {node} that held this transaction was lost; the transaction \
                 did not commit, and commands are ignored until ROLLBACK"
            ),
        };
        self.io
            .queue(&BackendMessage::ErrorResponse(super::route::error_body(
                &ErrorInfo::error("08006", message),
            )));
        match tag {
            b'Q' | b'F' => self.io.queue(&BackendMessage::ReadyForQuery {
                status: self.tx_status,
            }),
            _ => self.discard_until_sync = true,
        }
        true
    }

    /// The transaction-control effect of the statement `msg` starts (and
    /// whether it chains), for the rare units refused in a lost transaction.
    pub(super) fn tx_effect_of(&self, msg: &FrontendMessage) -> Option<(TxEffect, bool)> {
        let sql = match msg {
            FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } => sql.clone(),
            FrontendMessage::Bind { statement, .. } => {
                self.state.prepared.get(statement)?.sql.clone()
            }
            _ => return None,
        };
        let a = self.shared.classifier.analyze_bytes(&sql);
        Some((a.tx.clone(), a.chain))
    }

    pub(super) fn end_lost_tx(&mut self) {
        self.tx_lost = None;
        self.tx_status = b'I';
        self.state.tx_read_only = false;
        self.state.tx_wrote = false;
        self.state.pending.clear();
    }
}
