//! (owned by the checker/report work; filled in next.)
