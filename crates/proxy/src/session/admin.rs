//! The admin console: a client that logs in to the database named by
//! `admin_database` (default `pgha`) as one of `admin_users` talks to the
//! proxy itself, as PgBouncer users expect of its `pgbouncer` database:
//! `SHOW POOLS`, `SHOW SERVERS`, `SHOW CLIENTS`, `SHOW HELP`, `PAUSE [db]`, `RESUME [db]`.
//! Simple queries only; answers are text rows.
//!
//! Hazard: the login was authenticated like any other (the role's verifier
//! in the cluster); being in `admin_users` is checked before anything is
//! answered, and nothing here reaches a backend.

use super::{startup::Started, ClientIo, SessionError};
use crate::codec::{BackendMessage, ErrorInfo, FrontendMessage};
use crate::shared::Shared;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// Whether a login to `database` is for the admin console.
pub fn is_admin_login(shared: &Shared, started: &Started) -> bool {
    let db = started
        .params
        .iter()
        .find(|(k, _)| k == "database")
        .map_or(started.user.as_str(), |(_, v)| v.as_str());
    db == shared.settings.admin_database
}

/// Serves an admin console client until it leaves.
pub(super) async fn serve(
    mut io: ClientIo,
    shared: Arc<Shared>,
    started: Started,
) -> Result<(), SessionError> {
    if !shared.settings.admin_users.contains(&started.user) {
        io.queue_error(&ErrorInfo::fatal(
            "28000",
            format!(
                "role \"{}\" may not use the admin console (database \"{}\"): it is not in \
                 the proxy's admin_users",
                started.user, shared.settings.admin_database
            ),
        ));
        let _ = io.flush().await;
        return Ok(());
    }
    io.queue(&BackendMessage::Authentication(
        crate::codec::backend::Authentication::Ok,
    ));
    for (name, value) in [
        ("server_version", "15.0 (pgha admin console)"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        io.queue(&BackendMessage::ParameterStatus {
            name: Bytes::from(name),
            value: Bytes::from(value),
        });
    }
    io.queue(&BackendMessage::BackendKeyData { pid: 0, key: 0 });
    io.queue(&BackendMessage::ReadyForQuery { status: b'I' });
    io.flush().await?;
    let max = shared.limits.max_client_message;
    loop {
        let msg = match io.read_with(|buf| FrontendMessage::decode(buf, max)).await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(super::startup::StartEnd::Quiet) => return Ok(()),
            Err(super::startup::StartEnd::Fatal(e)) => {
                io.queue_error(&e);
                let _ = io.flush().await;
                return Ok(());
            }
        };
        match msg {
            FrontendMessage::Query { sql } => {
                let text = String::from_utf8_lossy(&sql).into_owned();
                answer(&mut io, &shared, &text).await;
                io.queue(&BackendMessage::ReadyForQuery { status: b'I' });
            }
            FrontendMessage::Terminate => return Ok(()),
            FrontendMessage::Sync => io.queue(&BackendMessage::ReadyForQuery { status: b'I' }),
            FrontendMessage::Flush => {}
            _ => io.queue_error(&ErrorInfo::error(
                "0A000",
                "the admin console takes simple queries only (psql, or the simple query protocol)",
            )),
        }
        io.flush().await?;
    }
}

/// Runs one admin command (several, separated by `;`).
async fn answer(io: &mut ClientIo, shared: &Shared, text: &str) {
    let commands: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if commands.is_empty() {
        io.queue(&BackendMessage::Other {
            tag: b'I',
            body: Bytes::new(),
        });
        return;
    }
    for command in commands {
        let words: Vec<String> = command
            .split_whitespace()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["show", "pools"] => show_pools(io, shared),
            ["show", "servers"] => show_servers(io, shared),
            ["show", "clients"] => show_clients(io, shared),
            ["show", "help"] => show_help(io),
            ["pause"] | ["pause", _] | ["resume"] | ["resume", _] => {
                let db = command.split_whitespace().nth(1).map(unquote);
                if words[0] == "pause" {
                    match shared
                        .pools
                        .pause(db.as_deref(), shared.settings.pause_timeout)
                        .await
                    {
                        Ok(()) => complete(io, "PAUSE"),
                        Err(e) => {
                            io.queue_error(&ErrorInfo::error("57014", e));
                            return;
                        }
                    }
                } else {
                    shared.pools.resume(db.as_deref());
                    complete(io, "RESUME");
                }
            }
            _ => {
                io.queue_error(&ErrorInfo::error(
                    "42601",
                    format!("unknown admin command {command:?}; SHOW HELP lists the commands"),
                ));
                return;
            }
        }
    }
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').trim_matches('\'').to_string()
}

fn show_pools(io: &mut ClientIo, shared: &Shared) {
    let cols = [
        "node",
        "database",
        "user",
        "pool_mode",
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_total",
        "pool_size",
        "paused",
        "waits_total",
        "wait_us_total",
        "timeouts_total",
    ];
    let rows: Vec<Vec<String>> = shared
        .pools
        .stats()
        .into_iter()
        .map(|p| {
            let active = p.open - p.idle;
            vec![
                p.node,
                p.database,
                p.user,
                "transaction".into(),
                active.to_string(),
                p.waiting.to_string(),
                active.to_string(),
                p.idle.to_string(),
                p.open.to_string(),
                p.size.to_string(),
                p.paused.to_string(),
                p.waits_total.to_string(),
                p.wait_micros_total.to_string(),
                p.timeouts_total.to_string(),
            ]
        })
        .collect();
    table(io, &cols, &rows, "SHOW");
}

fn show_servers(io: &mut ClientIo, shared: &Shared) {
    let cols = ["node", "database", "user", "state", "pid"];
    let rows: Vec<Vec<String>> = shared
        .pools
        .servers()
        .into_iter()
        .map(|s| {
            vec![
                s.node,
                s.database,
                s.user,
                if s.active { "active" } else { "idle" }.into(),
                s.pid.to_string(),
            ]
        })
        .collect();
    table(io, &cols, &rows, "SHOW");
}

/// PgBouncer's columns where they map (`type`, `user`, `database`,
/// `state`, `addr`, `port`, `connect_time`, `application_name`), then the
/// listener, the pool mode and the PIDs of the backends serving the client.
fn show_clients(io: &mut ClientIo, shared: &Shared) {
    let cols = [
        "type",
        "user",
        "database",
        "state",
        "addr",
        "port",
        "connect_time",
        "application_name",
        "listener",
        "pool_mode",
        "server_pids",
    ];
    let rows: Vec<Vec<String>> = shared
        .registry
        .rows()
        .into_iter()
        .map(|c| {
            let pids: Vec<String> = c.server_pids.iter().map(i32::to_string).collect();
            vec![
                "C".into(),
                c.user,
                c.database,
                c.state.into(),
                c.addr.ip().to_string(),
                c.addr.port().to_string(),
                humantime_serde::re::humantime::format_rfc3339_seconds(c.connected_at).to_string(),
                c.application_name,
                c.listener.into(),
                if c.pooled { "transaction" } else { "session" }.into(),
                pids.join(" "),
            ]
        })
        .collect();
    table(io, &cols, &rows, "SHOW");
}

fn show_help(io: &mut ClientIo) {
    let rows = [
        "SHOW POOLS     transaction-mode pools: clients and backends per node, database, user",
        "SHOW SERVERS   every pooled backend: node, database, user, state, pid",
        "SHOW CLIENTS   every client: user, database, state, address, listener, pool mode, backend pids",
        "PAUSE [db]     new transactions of transaction-mode clients wait; returns once no backend is in use",
        "RESUME [db]    end a PAUSE",
    ]
    .iter()
    .map(|r| vec![r.to_string()])
    .collect::<Vec<_>>();
    table(io, &["command"], &rows, "SHOW");
}

/// RowDescription (all text), the rows, CommandComplete.
fn table(io: &mut ClientIo, cols: &[&str], rows: &[Vec<String>], tag: &str) {
    let mut body = BytesMut::new();
    body.put_i16(cols.len() as i16);
    for c in cols {
        body.put_slice(c.as_bytes());
        body.put_u8(0);
        body.put_i32(0); // table oid
        body.put_i16(0); // column number
        body.put_i32(25); // text
        body.put_i16(-1);
        body.put_i32(-1);
        body.put_i16(0); // text format
    }
    io.queue(&BackendMessage::Other {
        tag: b'T',
        body: body.freeze(),
    });
    for row in rows {
        let mut body = BytesMut::new();
        body.put_i16(row.len() as i16);
        for v in row {
            body.put_i32(v.len() as i32);
            body.put_slice(v.as_bytes());
        }
        io.queue(&BackendMessage::Other {
            tag: b'D',
            body: body.freeze(),
        });
    }
    complete(io, &format!("{tag} {}", rows.len()));
}

fn complete(io: &mut ClientIo, tag: &str) {
    let mut body = BytesMut::from(tag.as_bytes());
    body.put_u8(0);
    io.queue(&BackendMessage::Other {
        tag: b'C',
        body: body.freeze(),
    });
}
