//! pgha-proxy (to be written).
