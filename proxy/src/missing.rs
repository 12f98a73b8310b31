//! Names a freshly loaded catalog (Postgres catalog, MySQL view definitions, MongoDB listing)
//! was asked for and did not have: remembered so that they do not make it load again.

use std::collections::HashSet;
use std::sync::Mutex;

/// At most this many names are remembered; beyond, such statements keep reloading.
const MAX: usize = 4096;

/// A bounded set of names found missing since a catalog was loaded.
#[derive(Debug, Default)]
pub struct MissingNames(Mutex<HashSet<String>>);

impl MissingNames {
    /// Whether `name` was found missing (a poisoned lock counts as yes: no reload storm).
    pub fn contains(&self, name: &str) -> bool {
        self.0.lock().map_or(true, |m| m.contains(name))
    }

    /// Remember `name` as missing (ignored once [`MAX`] names are held).
    pub fn note(&self, name: &str) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() < MAX {
                m.insert(name.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_names_up_to_the_bound() {
        let m = MissingNames::default();
        assert!(!m.contains("a"));
        m.note("a");
        assert!(m.contains("a") && !m.contains("b"));
        for i in 0..MAX + 10 {
            m.note(&format!("n{i}"));
        }
        assert!(m.contains("n0") && !m.contains(&format!("n{}", MAX + 5)));
    }
}
