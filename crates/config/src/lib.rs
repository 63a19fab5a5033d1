//! pgha-config (to be written).
