//! Every ```toml block of docs/policies.md is a complete configuration fragment that parses,
//! validates and compiles into a policy.

use super::Policy;

/// The environment the examples assume (`${DGF_MASK_KEY}`).
fn env(name: &str) -> Option<String> {
    (name == "DGF_MASK_KEY").then(|| "0123456789abcdef0123456789abcdef".to_owned())
}

#[test]
fn every_toml_block_in_policies_md_compiles() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policies.md");
    let doc = std::fs::read_to_string(path).expect("docs/policies.md");
    let blocks: Vec<&str> = doc.split("```toml\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert!(blocks.len() >= 11, "only {} toml blocks in {path}", blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let cfg = match dgf_config::parse_str(block, "policies.md", &env) {
            Ok(c) => c,
            Err(e) => panic!("block {} of docs/policies.md does not validate:\n{e}\n--- block ---\n{block}", i + 1),
        };
        if let Err(e) = Policy::from_config(&cfg) {
            panic!("block {} of docs/policies.md does not compile: {e}\n--- block ---\n{block}", i + 1);
        }
    }
}
