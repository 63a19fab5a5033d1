//! pgha-dcs (to be written).
