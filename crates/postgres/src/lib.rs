//! pgha-postgres (to be written).
