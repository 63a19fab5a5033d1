//! (owned by the lab/runner work; filled in next.)
