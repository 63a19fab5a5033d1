//! pgha-archive (to be written).
