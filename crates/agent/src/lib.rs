//! pgha-agent (to be written).
