//! pgha-proxy (to be written).

pub mod classify;
