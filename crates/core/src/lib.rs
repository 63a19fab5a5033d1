//! The pure high-availability logic of pgha: member, role, LSN and sync-set
//! types, the decision step, and the durability rules.
//!
//! Nothing here does I/O or depends on an async runtime: the agent feeds in an
//! observation and executes the actions that come back, and the simulator does
//! the same with a fake DCS and fake clocks.

pub mod lsn;

pub use lsn::{Lsn, ParseLsnError, Timeline};
