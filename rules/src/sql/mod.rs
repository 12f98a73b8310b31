//! SQL analysis: fingerprints, statement kinds, tables, columns and output lineage.
