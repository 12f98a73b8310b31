//! Property tests: encode random values and requests, frame and decode them back.

use super::request::encode_command;
use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum V {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Arr(Option<Vec<V>>),
    Null,
    Bool(bool),
    Map(Vec<(V, V)>),
    Set(Vec<V>),
    Push(Vec<V>),
    Attr(Vec<(V, V)>, Box<V>),
}

fn line() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _.:]{0,20}"
}

fn arb() -> impl Strategy<Value = V> {
    let leaf = prop_oneof![
        line().prop_map(V::Simple),
        line().prop_map(V::Err),
        any::<i64>().prop_map(V::Int),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)).prop_map(V::Bulk),
        Just(V::Null),
        any::<bool>().prop_map(V::Bool),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::option::of(proptest::collection::vec(inner.clone(), 0..6)).prop_map(V::Arr),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(V::Map),
            proptest::collection::vec(inner.clone(), 0..5).prop_map(V::Set),
            proptest::collection::vec(inner.clone(), 1..5).prop_map(V::Push),
            (proptest::collection::vec((inner.clone(), inner.clone()), 1..3), inner)
                .prop_map(|(a, v)| V::Attr(a, Box::new(v))),
        ]
    })
}

fn to_value(v: &V) -> Value<'_> {
    match v {
        V::Simple(s) => Value::Simple(s.as_bytes()),
        V::Err(s) => Value::Error(s.as_bytes()),
        V::Int(i) => Value::Int(*i),
        V::Bulk(b) => Value::Bulk(b.as_deref()),
        V::Arr(a) => Value::Array(a.as_ref().map(|a| a.iter().map(to_value).collect())),
        V::Null => Value::Null,
        V::Bool(b) => Value::Bool(*b),
        V::Map(p) => Value::Map(p.iter().map(|(k, v)| (to_value(k), to_value(v))).collect()),
        V::Set(a) => Value::Set(a.iter().map(to_value).collect()),
        V::Push(a) => Value::Push(a.iter().map(to_value).collect()),
        V::Attr(p, v) => {
            Value::Attributed(p.iter().map(|(k, v)| (to_value(k), to_value(v))).collect(), Box::new(to_value(v)))
        }
    }
}

proptest! {
    #[test]
    fn reply_round_trip(v in arb(), split in 0usize..400) {
        let val = to_value(&v);
        let mut out = Vec::new();
        val.encode(&mut out);
        prop_assert_eq!(reply_len(&out, &Limits::SERVER), Ok(Some(out.len())));
        let cut = split.min(out.len().saturating_sub(1));
        prop_assert_eq!(reply_len(&out[..cut], &Limits::SERVER), Ok(None));
        let (back, n) = decode(&out, &Limits::SERVER).unwrap().unwrap();
        prop_assert_eq!(n, out.len());
        prop_assert_eq!(back, val);
    }

    #[test]
    fn request_round_trip(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..8)) {
        let mut out = Vec::new();
        encode_command(&mut out, args.iter().map(Vec::as_slice));
        let mut ranges = Vec::new();
        let r = parse_request(&out, &Limits::CLIENT, &mut ranges).unwrap().unwrap();
        prop_assert_eq!(r.len, out.len());
        let back: Vec<Vec<u8>> = ranges.iter().map(|r| out[r.clone()].to_vec()).collect();
        prop_assert_eq!(back, args);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut ranges = Vec::new();
        let _ = parse_request(&data, &Limits::CLIENT, &mut ranges);
        let _ = reply_len(&data, &Limits::SERVER);
        let _ = decode(&data, &Limits::SERVER);
    }
}
