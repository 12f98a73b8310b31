//! Mask functions applied to result values.
