//! Harness for dgf's end-to-end tests: free ports, a running dgf, unique databases.
