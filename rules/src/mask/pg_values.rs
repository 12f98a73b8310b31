//! Postgres value codecs used by the mask functions: integers, numeric, floats, uuid and bytea in
//! text and binary wire formats (what keeps a masked value valid for its column type).

use super::{hex, Format, PgType};

pub(super) fn decode_int(value: &[u8], width: usize, format: Format) -> Option<i64> {
    match format {
        Format::Text => std::str::from_utf8(value).ok()?.trim().parse().ok(),
        Format::Binary if value.len() == width => Some(match width {
            2 => i64::from(i16::from_be_bytes([value[0], value[1]])),
            4 => i64::from(i32::from_be_bytes([value[0], value[1], value[2], value[3]])),
            _ => i64::from_be_bytes(<[u8; 8]>::try_from(value).ok()?),
        }),
        Format::Binary => None,
    }
}

/// `n` as an integer of `width` bytes, or `None` when it does not fit.
pub(super) fn encode_int(n: i64, width: usize, format: Format) -> Option<Vec<u8>> {
    let be = match width {
        2 => i16::try_from(n).ok()?.to_be_bytes().to_vec(),
        4 => i32::try_from(n).ok()?.to_be_bytes().to_vec(),
        _ => n.to_be_bytes().to_vec(),
    };
    Some(match format {
        Format::Binary => be,
        Format::Text => n.to_string().into_bytes(),
    })
}

/// A `fixed` text as a float4/float8/numeric/bool value, or `None` when it is not valid.
pub(super) fn encode_fixed_scalar(text: &str, ty: PgType, format: Format) -> Option<Vec<u8>> {
    let t = text.trim();
    match ty {
        PgType::Float4 => {
            let f: f32 = t.parse().ok()?;
            Some(match format {
                Format::Binary => f.to_be_bytes().to_vec(),
                Format::Text => float_text(f64::from(f), f.to_string()).into_bytes(),
            })
        }
        PgType::Float8 => {
            let f: f64 = t.parse().ok()?;
            Some(match format {
                Format::Binary => f.to_be_bytes().to_vec(),
                Format::Text => float_text(f, f.to_string()).into_bytes(),
            })
        }
        PgType::Numeric => {
            let n = parse_numeric(t)?;
            Some(match format {
                Format::Binary => encode_numeric(&n),
                Format::Text => n.text().into_bytes(),
            })
        }
        PgType::Bool => {
            let b = match t.to_ascii_lowercase().as_str() {
                "t" | "true" | "y" | "yes" | "on" | "1" => true,
                "f" | "false" | "n" | "no" | "off" | "0" => false,
                _ => return None,
            };
            Some(match format {
                Format::Binary => vec![u8::from(b)],
                Format::Text => {
                    if b {
                        b"t".to_vec()
                    } else {
                        b"f".to_vec()
                    }
                }
            })
        }
        _ => None,
    }
}

/// Postgres spelling of non-finite floats; Rust's shortest round-trip form otherwise.
pub(super) fn float_text(f: f64, shortest: String) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        shortest
    }
}

/// A decimal literal: sign, integer digits (no leading zeros, at least one), fraction digits.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Numeric {
    NaN,
    Finite { negative: bool, int: String, frac: String },
}

impl Numeric {
    fn text(&self) -> String {
        match self {
            Numeric::NaN => "NaN".into(),
            Numeric::Finite { negative, int, frac } => {
                let zero = int == "0" && frac.bytes().all(|b| b == b'0');
                let sign = if *negative && !zero { "-" } else { "" };
                if frac.is_empty() {
                    format!("{sign}{int}")
                } else {
                    format!("{sign}{int}.{frac}")
                }
            }
        }
    }
}

/// Parses `[+-]digits[.digits]` (or `.digits`, `digits.`) and `NaN`; no exponents.
pub(super) fn parse_numeric(t: &str) -> Option<Numeric> {
    if t.eq_ignore_ascii_case("nan") {
        return Some(Numeric::NaN);
    }
    let (negative, rest) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || int.len() + frac.len() > 1000 {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    Some(Numeric::Finite { negative, int: int.to_owned(), frac: frac.to_owned() })
}

/// Postgres binary numeric: ndigits, weight, sign, dscale (all 16-bit), then base-10000 digits.
pub(super) fn encode_numeric(n: &Numeric) -> Vec<u8> {
    let (negative, int, frac) = match n {
        Numeric::NaN => return [0u16, 0, 0xC000, 0].iter().flat_map(|v| v.to_be_bytes()).collect(),
        Numeric::Finite { negative, int, frac } => (*negative, int.as_str(), frac.as_str()),
    };
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes().chunks(4).map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0'))).collect()
    };
    let int_padded = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    let frac_padded = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
    let int_groups = group(&int_padded);
    let mut weight = int_groups.len() as i16 - 1;
    let mut digits: Vec<i16> = int_groups.into_iter().chain(group(&frac_padded)).collect();
    let leading = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..leading);
    weight -= leading as i16;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let sign: u16 = if negative && !digits.is_empty() { 0x4000 } else { 0 };
    if digits.is_empty() {
        weight = 0;
    }
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(frac.len() as u16).to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

/// 32 hex digits, hyphens allowed between digit pairs (as Postgres accepts), optional braces.
pub(super) fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let s = s.trim();
    let s = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')).unwrap_or(s);
    let hexdigits: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hexdigits.len() != 32 || s.starts_with('-') || s.ends_with('-') || s.contains("--") {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hexdigits.chunks(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

pub(super) fn uuid_text(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Decodes bytea text output: `\x<hex>` (bytea_output = hex) or the escape format.
pub(super) fn decode_bytea_text(v: &[u8]) -> Option<Vec<u8>> {
    if let Some(h) = v.strip_prefix(b"\\x") {
        if h.len() % 2 != 0 {
            return None;
        }
        return h
            .chunks(2)
            .map(|p| Some((char::from(p[0]).to_digit(16)? * 16 + char::from(p[1]).to_digit(16)?) as u8))
            .collect();
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match (v[i], v.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', _) => {
                let oct = v.get(i + 1..i + 4)?;
                if !oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    return None;
                }
                let n = oct.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(n).ok()?);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}
